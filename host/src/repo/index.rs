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

/// Compacted index files are named `index/c-<id>` so that readers can take them first
/// and learn which deltas they replace.
const COMPACTED: &str = "c-";

/// Writes an index file and returns its key. A file that supersedes others is written
/// as a compacted file.
pub fn write(repo: &Repository, file: &IndexFile) -> Result<String> {
    let plain = postcard::to_stdvec(file).expect("serialising the index");
    let compressed = zstd::bulk::compress(&plain, 3).map_err(|e| RepoError::io("index", e))?;
    let sealed = repo.keys().cipher.seal(&compressed);
    let kind = if file.supersedes.is_empty() { "" } else { COMPACTED };
    let key = format!("{PREFIX}{kind}{}", hex::encode(blake3::hash(&sealed).as_bytes()));
    repo.store().put(&key, Bytes::from(sealed))?;
    Ok(key)
}

fn decode(repo: &Repository, key: &str, sealed: &[u8]) -> Result<IndexFile> {
    let damaged = |detail: String| RepoError::Damaged { what: format!("index file {key}"), detail };
    let compressed = repo.keys().cipher.open(sealed).map_err(|_| damaged("it fails authentication".into()))?;
    let plain = zstd::stream::decode_all(&compressed[..]).map_err(|e| damaged(format!("zstd: {e}")))?;
    postcard::from_bytes(&plain).map_err(|e| damaged(format!("cannot decode: {e}")))
}

/// Files fetched at the same time; also the most decoded files held in memory.
const BATCH: usize = 8;

/// Calls `visit` for every index file, streaming: at most [`BATCH`] files are in
/// memory at once, so the index never has to fit in memory whole. Compacted files are
/// read first; the deltas they supersede are skipped. Returns the keys read.
pub fn for_each(repo: &Repository, mut visit: impl FnMut(&str, IndexFile)) -> Result<Vec<String>> {
    let mut keys: Vec<String> = repo.store().list(PREFIX)?.into_iter().map(|o| o.key).collect();
    keys.sort_by_key(|k| !k[PREFIX.len()..].starts_with(COMPACTED));
    let mut superseded: HashSet<String> = HashSet::new();
    let mut read = Vec::with_capacity(keys.len());
    for batch in keys.chunks(BATCH) {
        let wanted: Vec<String> = batch.iter().filter(|k| !superseded.contains(*k)).cloned().collect();
        for (key, r) in wanted.iter().zip(repo.store().get_many(&wanted, BATCH)) {
            let bytes = match r {
                Ok(b) => b,
                // Removed by a concurrent compaction, whose output was written first
                // and read above (or is newer than this listing and adds nothing new).
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let file = decode(repo, key, &bytes)?;
            superseded.extend(file.supersedes.iter().cloned());
            read.push(key.clone());
            visit(key, file);
        }
    }
    Ok(read)
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
