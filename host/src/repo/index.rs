//! The index: which pack holds which blob.
//!
//! Every backup writes one delta, `index/<id>`, listing the packs it uploaded and
//! their blobs; `repo prune` compacts deltas into fewer files. Each file is
//! `seal(zstd(postcard(IndexFile)))`. Readers never need the whole index in memory:
//! a backup keeps 16-byte id prefixes only ([`KnownBlobs`]), a restore keeps the
//! locations of the blobs its snapshot needs ([`Locations`]).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blob::{BlobId, BlobKind};
use super::pack::{PackEntry, PackId};
use super::{RepoError, Repository, Result};

pub const PREFIX: &str = "index/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces (written by compaction); readers that still see
    /// them may ignore them.
    pub supersedes: Vec<String>,
}

/// Writes an index file and returns its key.
pub fn write(repo: &Repository, file: &IndexFile) -> Result<String> {
    let plain = postcard::to_stdvec(file).expect("serialising the index");
    let compressed = zstd::bulk::compress(&plain, 3).map_err(|e| RepoError::io("index", e))?;
    let sealed = repo.keys().cipher.seal(&compressed);
    let key = format!("{PREFIX}{}", hex::encode(blake3::hash(&sealed).as_bytes()));
    repo.store().put(&key, Bytes::from(sealed))?;
    Ok(key)
}

fn decode(repo: &Repository, key: &str, sealed: &[u8]) -> Result<IndexFile> {
    let damaged = |detail: String| RepoError::Damaged { what: format!("index file {key}"), detail };
    let compressed = repo.keys().cipher.open(sealed).map_err(|_| damaged("it fails authentication".into()))?;
    let plain = zstd::stream::decode_all(&compressed[..]).map_err(|e| damaged(format!("zstd: {e}")))?;
    postcard::from_bytes(&plain).map_err(|e| damaged(format!("cannot decode: {e}")))
}

/// Calls `visit` for every index file, fetching several at a time. Returns the keys
/// read. A file deleted by a concurrent compaction is harmless: its replacement was
/// written first, so the listing is simply taken again.
pub fn for_each(repo: &Repository, mut visit: impl FnMut(&str, IndexFile)) -> Result<Vec<String>> {
    for attempt in 0..3 {
        let keys: Vec<String> = repo.store().list(PREFIX)?.into_iter().map(|o| o.key).collect();
        let mut files = Vec::with_capacity(keys.len());
        let mut vanished = false;
        for (key, r) in keys.iter().zip(repo.store().get_many(&keys, 8)) {
            match r {
                Ok(bytes) => files.push((key.clone(), decode(repo, key, &bytes)?)),
                Err(e) if e.is_not_found() && attempt < 2 => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if vanished {
            continue;
        }
        let superseded: HashSet<String> = files.iter().flat_map(|(_, f)| f.supersedes.iter().cloned()).collect();
        for (key, file) in files {
            if !superseded.contains(&key) {
                visit(&key, file);
            }
        }
        return Ok(keys);
    }
    unreachable!("the loop returns on its last attempt")
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

/// Blob locations, for the blobs a command needs.
#[derive(Default)]
pub struct Locations {
    packs: Vec<(PackId, u64)>,
    pack_numbers: HashMap<PackId, u32>,
    map: HashMap<BlobId, Location>,
}

impl Locations {
    /// Loads the locations of the blobs `keep` selects.
    pub fn load(repo: &Repository, mut keep: impl FnMut(BlobKind, &BlobId) -> bool) -> Result<Locations> {
        let mut locs = Locations::default();
        for_each(repo, |_, file| {
            for p in &file.packs {
                locs.add_pack(p, &mut keep);
            }
        })?;
        Ok(locs)
    }

    pub fn add_pack(&mut self, p: &IndexPack, keep: &mut impl FnMut(BlobKind, &BlobId) -> bool) {
        let mut number = None;
        for e in &p.blobs {
            if !keep(e.kind, &e.id) {
                continue;
            }
            let n = *number.get_or_insert_with(|| {
                *self.pack_numbers.entry(p.id).or_insert_with(|| {
                    self.packs.push((p.id, p.size));
                    (self.packs.len() - 1) as u32
                })
            });
            self.map.insert(
                e.id,
                Location { pack: n, kind: e.kind, offset: e.offset, length: e.length, raw_len: e.raw_len },
            );
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.map.get(id).copied()
    }

    pub fn pack(&self, n: u32) -> PackId {
        self.packs[n as usize].0
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The blobs a backup can deduplicate against: 16-byte id prefixes per kind (a chance
/// collision needs about 2^64 blobs), plus the locations of tree blobs so that a
/// parent snapshot can be walked.
#[derive(Default)]
pub struct KnownBlobs {
    data: HashSet<u128>,
    tree: HashSet<u128>,
}

impl KnownBlobs {
    pub fn insert(&mut self, kind: BlobKind, id: &BlobId) -> bool {
        match kind {
            BlobKind::Data => self.data.insert(id.prefix()),
            BlobKind::Tree => self.tree.insert(id.prefix()),
        }
    }

    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> bool {
        match kind {
            BlobKind::Data => self.data.contains(&id.prefix()),
            BlobKind::Tree => self.tree.contains(&id.prefix()),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len() + self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
