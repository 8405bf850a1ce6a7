//! The repository: a deduplicating, compressing, encrypting store of snapshots on top
//! of an object store. See `docs/repository-format.md` for the format.
//!
//! | object            | what it holds                                              |
//! |-------------------|------------------------------------------------------------|
//! | `config`          | format marker and repository id (not secret)               |
//! | `keys/<id>`       | the master key wrapped for one password or key file        |
//! | `data/xx/<pack>`  | packs of sealed blobs with a sealed trailer                |
//! | `index/<id>`      | index deltas: which pack holds which blob                  |
//! | `snapshots/<id>`  | snapshot records, written last                             |
//! | `prune/<id>`      | prune marks: packs due for deletion after a grace period  |
//! | `lease/<n>`       | the lease of the running prune, forget or repair-index     |

pub mod blob;
pub mod check;
pub mod chunker;
pub mod config;
pub mod crypto;
mod error;
pub mod forget;
mod id;
pub mod index;
pub mod keys;
pub mod lease;
pub mod marks;
pub mod pack;
pub mod prune;
pub mod saver;
pub mod snapshot;
pub mod stream;
pub mod tree;

use std::sync::Arc;

use bytes::Bytes;

pub use error::{RepoError, Result};

use crate::store::{Created, Store};
use blob::BlobId;
use config::Config;
use crypto::{Keys, MasterKey};
use index::{IndexPack, Locations};
use keys::{KeyRecord, Secret};
use pack::PackId;

pub const KEYS_PREFIX: &str = "keys/";
pub const DATA_PREFIX: &str = "data/";

/// An open repository. Cheap to clone; clones share keys and the store.
#[derive(Clone)]
pub struct Repository {
    store: Store,
    keys: Arc<Keys>,
    /// Kept (zeroised on drop) so that keys can be added without asking again.
    master: Arc<MasterKey>,
    config: Arc<Config>,
    key_id: Arc<String>,
}

/// One key as listed by `ballast key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub current: bool,
    #[serde(flatten)]
    pub record: KeyRecord,
}

impl Repository {
    /// Creates a repository at an empty location, with one key for `secret`.
    pub fn init(store: Store, secret: &Secret, label: &str) -> Result<Repository> {
        Self::init_with(store, secret, label, keys::KdfParams::default())
    }

    fn init_with(
        store: Store,
        secret: &Secret,
        label: &str,
        kdf: keys::KdfParams,
    ) -> Result<Repository> {
        let location = store.location().to_string();
        match store.get(config::KEY) {
            Ok(_) => return Err(RepoError::AlreadyInitialized { location }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if !store.list("")?.is_empty() {
            return Err(RepoError::NotEmpty { location });
        }
        store.verify_consistency()?;
        let master = MasterKey::generate();
        let config = Config::new();
        let record = KeyRecord::wrap_with(&master, secret, label, kdf);
        let key_id = write_key(&store, &record)?;
        // The config goes last: a location with keys but no config is not a repository.
        let json = serde_json::to_vec_pretty(&config).expect("serialising the config");
        if store.put_if_absent(config::KEY, Bytes::from(json))? == Created::AlreadyExisted {
            return Err(RepoError::AlreadyInitialized { location });
        }
        Ok(Repository {
            store,
            keys: Arc::new(master.derive(config.typed_seals())),
            master: Arc::new(master),
            config: Arc::new(config),
            key_id: Arc::new(key_id),
        })
    }

    /// Opens a repository with a password or key file.
    pub fn open(store: Store, secret: &Secret) -> Result<Repository> {
        let location = store.location().to_string();
        let config: Config = match store.get(config::KEY) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::Damaged {
                what: format!("the config of {location}"),
                detail: e.to_string(),
            })?,
            Err(e) if e.is_not_found() => return Err(RepoError::NotARepository { location }),
            Err(e) => return Err(e.into()),
        };
        if config.format != config::FORMAT
            || config.version > config::VERSION
            || config.version < config::OLDEST_VERSION
        {
            return Err(RepoError::Invalid(format!(
                "{location} holds a `{}` repository of version {}; this ballast reads `{}` up to version {}: upgrade ballast",
                config.format,
                config.version,
                config::FORMAT,
                config::VERSION
            )));
        }
        let (records, mut refused) = read_keys(&store)?;
        let mut spent = 0u64;
        for (id, record) in &records {
            if record.kdf.check().is_ok() {
                spent = spent.saturating_add(record.kdf.cost());
            }
            if spent > keys::MAX_OPEN_COST {
                refused.push((
                    format!("{KEYS_PREFIX}{id}"),
                    "not tried: the key records before it used up what one opening may spend on key derivation".into(),
                ));
                continue;
            }
            match record.unwrap_with(secret) {
                Ok(Some(master)) => {
                    for (key, why) in &refused {
                        tracing::warn!("key record {key} was not tried: {why}");
                    }
                    return Ok(Repository {
                        store,
                        keys: Arc::new(master.derive(config.typed_seals())),
                        master: Arc::new(master),
                        config: Arc::new(config),
                        key_id: Arc::new(id.clone()),
                    });
                }
                Ok(None) => {}
                Err(why) => refused.push((format!("{KEYS_PREFIX}{id}"), why)),
            }
        }
        if !refused.is_empty() {
            let list: Vec<String> = refused
                .iter()
                .map(|(k, why)| format!("{k} ({why})"))
                .collect();
            return Err(RepoError::Damaged {
                what: format!("the key records of {location}"),
                detail: format!(
                    "none of the {} usable ones opens with the given secret, and {} could not be tried: {}",
                    records.len() - refused.len().min(records.len()),
                    refused.len(),
                    list.join("; ")
                ),
            });
        }
        let what = match secret {
            Secret::Password(_) => "password",
            Secret::KeyFile(_) => "key file",
        };
        Err(RepoError::WrongSecret {
            location,
            tried: records.len(),
            what,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(self.keys.blob_id(plaintext))
    }

    /// Reads and checks one blob.
    pub fn read_blob(&self, locations: &Locations, id: &BlobId) -> Result<Vec<u8>> {
        let loc = locations.get(id).ok_or_else(|| RepoError::BlobNotIndexed {
            blob: id.to_string(),
        })?;
        let pack = locations.pack(loc.pack);
        let sealed = self.store.get_range(
            &pack::key(&pack),
            loc.offset as u64..loc.offset as u64 + loc.length as u64,
        )?;
        Ok(blob::open(&self.keys, id, &sealed)?)
    }

    /// Lists the packs in `data/` with their sizes.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .list_packs_dated()?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }

    /// Lists the packs in `data/` with their sizes and when they were written.
    pub fn list_packs_dated(&self) -> Result<Vec<(PackId, u64, Option<jiff::Timestamp>)>> {
        Ok(self
            .store
            .list(DATA_PREFIX)?
            .into_iter()
            .filter_map(|o| pack::id_from_key(&o.key).map(|id| (id, o.size, o.modified)))
            .collect())
    }

    /// Reads a pack's trailer with ranged reads (one, or two for a large trailer).
    pub fn read_pack_trailer(&self, id: &PackId, size: u64) -> Result<IndexPack> {
        let key = pack::key(id);
        let damaged = |what: &str| pack::PackError::Damaged {
            pack: id.to_string(),
            what: what.into(),
        };
        if size < pack::FOOTER_LEN as u64 {
            return Err(damaged("it is shorter than a footer (truncated pack?)").into());
        }
        if size > pack::MAX_SIZE {
            return Err(damaged(&format!(
                "it is {size} bytes, more than any pack ballast writes ({} at most)",
                pack::MAX_SIZE
            ))
            .into());
        }
        let tail_len = size.min(64 * 1024);
        let tail = self.store.get_range(&key, size - tail_len..size)?;
        let trailer_len = pack::parse_footer(id, &tail)?;
        let needed = (trailer_len + pack::FOOTER_LEN) as u64;
        if needed > size {
            return Err(damaged("its trailer length exceeds its size (truncated pack?)").into());
        }
        let sealed = if needed <= tail_len {
            tail.slice((tail_len - needed) as usize..tail.len() - pack::FOOTER_LEN)
        } else {
            self.store
                .get_range(&key, size - needed..size - pack::FOOTER_LEN as u64)?
        };
        let blobs = pack::parse_trailer(&self.keys, id, &sealed, size)?;
        Ok(IndexPack {
            id: *id,
            size,
            blobs,
        })
    }

    /// Every readable key record, with its id.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(read_keys(&self.store)?
            .0
            .into_iter()
            .map(|(id, record)| KeyInfo {
                current: id == *self.key_id,
                id,
                record,
            })
            .collect())
    }

    /// Adds a key for another password or key file; returns its id.
    pub fn add_key(&self, secret: &Secret, label: &str) -> Result<String> {
        write_key(&self.store, &KeyRecord::wrap(&self.master, secret, label))
    }

    /// Removes a key. The key in use and the last key cannot be removed.
    pub fn remove_key(&self, id_prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.starts_with(id_prefix))
            .collect();
        let key = match matches.as_slice() {
            [k] => *k,
            [] => {
                return Err(RepoError::Invalid(format!(
                    "no key matches `{id_prefix}`; see `ballast key list`"
                )))
            }
            _ => {
                return Err(RepoError::Invalid(format!(
                    "`{id_prefix}` matches several keys; give more digits"
                )))
            }
        };
        if key.current {
            return Err(RepoError::Invalid(format!(
                "key {} is the one this command opened the repository with; open with another key to remove it (or use `ballast key passwd`)",
                key.id
            )));
        }
        self.store.delete(&format!("{KEYS_PREFIX}{}", key.id))?;
        Ok(key.id.clone())
    }

    /// Replaces the key in use by one for a new secret, without touching data.
    pub fn change_secret(&self, secret: &Secret) -> Result<String> {
        let label = read_keys(&self.store)?
            .0
            .into_iter()
            .find(|(id, _)| *id == *self.key_id)
            .map(|(_, r)| r.label)
            .unwrap_or_default();
        let new_id = self.add_key(secret, &label)?;
        self.store
            .delete(&format!("{KEYS_PREFIX}{}", self.key_id))?;
        Ok(new_id)
    }
}

#[cfg(test)]
impl Repository {
    /// A fresh repository in memory, with a cheap key derivation.
    pub(crate) fn in_memory_for_tests() -> Repository {
        let name = format!("test-{}", hex::encode(crypto::random_bytes::<8>()));
        let location = crate::store::Location::Memory(name);
        let store = Store::connect(&location, &Default::default()).expect("an in-memory store");
        let secret = Secret::Password(zeroize::Zeroizing::new("test".into()));
        Repository::init_with(store, &secret, "test", keys::KdfParams::CHEAP)
            .expect("a new repository")
    }
}

fn write_key(store: &Store, record: &KeyRecord) -> Result<String> {
    let json = serde_json::to_vec_pretty(record).expect("serialising a key record");
    let id = hex::encode(&blake3::hash(&json).as_bytes()[..16]);
    store.put_if_absent(&format!("{KEYS_PREFIX}{id}"), Bytes::from(json))?;
    Ok(id)
}

/// A key record is a few hundred bytes; anything larger is not one.
const MAX_KEY_RECORD: u64 = 64 * 1024;

/// The key records that can be read, and the objects under `keys/` that cannot be
/// (with why): one damaged record must not lock everyone out.
#[allow(clippy::type_complexity)]
fn read_keys(store: &Store) -> Result<(Vec<(String, KeyRecord)>, Vec<(String, String)>)> {
    let objects = store.list(KEYS_PREFIX)?;
    let mut bad = Vec::new();
    let keys: Vec<String> = objects
        .iter()
        .filter(|o| {
            let ok = o.size <= MAX_KEY_RECORD;
            if !ok {
                bad.push((
                    o.key.clone(),
                    format!("{} bytes is too large for a key record", o.size),
                ));
            }
            ok
        })
        .map(|o| o.key.clone())
        .collect();
    let mut out = Vec::new();
    for (key, bytes) in keys.iter().zip(store.get_many(&keys, 8)) {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<KeyRecord>(&bytes) {
            Ok(record) => out.push((key.trim_start_matches(KEYS_PREFIX).to_string(), record)),
            Err(e) => bad.push((key.clone(), format!("not a key record: {e}"))),
        }
    }
    Ok((out, bad))
}
