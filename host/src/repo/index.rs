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
use super::crypto::{Keys, Sealed};
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

/// Writes an index delta (one backup's packs) and returns its key.
pub fn write(repo: &Repository, file: &IndexFile) -> Result<String> {
    write_named(repo, file, "")
}

fn write_named(repo: &Repository, file: &IndexFile, name_prefix: &str) -> Result<String> {
    let plain = postcard::to_stdvec(file).expect("serialising the index");
    let compressed = zstd::bulk::compress(&plain, 3).map_err(|e| RepoError::io("index", e))?;
    let sealed = repo.keys().seal(Sealed::Index, &compressed);
    let key = format!(
        "{PREFIX}{name_prefix}{}",
        hex::encode(blake3::hash(&sealed).as_bytes())
    );
    repo.store().put(&key, Bytes::from(sealed))?;
    Ok(key)
}

/// Replaces the index files `old` by compacted files holding `packs`, at most
/// `per_file` packs each. The new files are written first, then the old ones deleted.
///
/// A compaction's files are named `c-<millis>-<part>of<parts>-<hash>`: a reader sees
/// from the listing alone whether a compaction is complete, and reads the newest
/// complete one first to learn which files it supersedes.
pub fn compact(
    repo: &Repository,
    packs: Vec<IndexPack>,
    old: &[String],
    per_file: usize,
) -> Result<usize> {
    let millis = jiff::Timestamp::now().as_millisecond();
    let parts: Vec<&[IndexPack]> = if packs.is_empty() {
        vec![&[]]
    } else {
        packs.chunks(per_file.max(1)).collect()
    };
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let file = IndexFile {
            packs: part.to_vec(),
            supersedes: old.to_vec(),
        };
        write_named(
            repo,
            &file,
            &format!("{COMPACTED}{millis:013}-{:05}of{n:05}-", i + 1),
        )?;
    }
    for k in old {
        repo.store().delete(k)?;
    }
    Ok(n)
}

/// The most an index file may decompress to: far more than the index of any
/// repository ballast writes one file for (about 60 bytes per blob), and a bound on
/// what a crafted file can make a reader allocate.
pub const MAX_PLAIN: u64 = 1 << 30;

/// Opens, decompresses and decodes the sealed index file stored under `key`.
pub fn decode(keys: &Keys, key: &str, sealed: &[u8]) -> Result<IndexFile> {
    let damaged = |detail: String| RepoError::Damaged {
        what: format!("index file {key}"),
        detail,
    };
    let compressed = keys
        .open(Sealed::Index, sealed)
        .map_err(|_| damaged("it fails authentication".into()))?;
    let plain = inflate(&compressed, MAX_PLAIN).map_err(damaged)?;
    postcard::from_bytes(&plain).map_err(|e| damaged(format!("cannot decode: {e}")))
}

/// Decompresses a zstd stream of at most `limit` bytes.
fn inflate(compressed: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(compressed)
        .and_then(|d| d.take(limit + 1).read_to_end(&mut plain))
        .map_err(|e| format!("zstd: {e}"))?;
    if plain.len() as u64 > limit {
        return Err(format!("it decompresses to more than {limit} bytes"));
    }
    Ok(plain)
}

const COMPACTED: &str = "c-";

/// `(millis, part, parts)` of a compacted file's key.
fn compaction_of(key: &str) -> Option<(&str, u32)> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(COMPACTED)?;
    let (millis, rest) = rest.split_once('-')?;
    let (_part, rest) = rest.split_once("of")?;
    let parts = rest.split_once('-')?.0.parse().ok()?;
    Some((millis, parts))
}

/// Files fetched at the same time; also the most decoded files held in memory.
const BATCH: usize = 8;

/// Folds every index file into a state, streaming: at most [`BATCH`] files are in
/// memory at once, so the index never has to fit in memory whole. Returns the state
/// and the keys read.
///
/// The newest complete compaction is read first and the files it supersedes are
/// skipped; an incomplete one (being written right now) is ignored, since the files it
/// replaces still exist. If a file vanishes between listing and reading (a compaction
/// finished meanwhile), the pass starts over with a fresh state.
pub fn fold<S>(
    repo: &Repository,
    init: impl Fn() -> S,
    mut visit: impl FnMut(&mut S, &str, IndexFile),
) -> Result<(S, Vec<String>)> {
    let mut attempt = 0;
    loop {
        let mut state = init();
        match pass(repo, &mut |k: &str, f: IndexFile| visit(&mut state, k, f))? {
            Some(keys) => return Ok((state, keys)),
            None if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            }
            None => {
                return Err(RepoError::Invalid(
                    "the index kept changing while it was read (is a prune running?); try again"
                        .into(),
                ))
            }
        }
    }
}

/// One pass over the index; `None` if it must be retried.
fn pass(repo: &Repository, visit: &mut dyn FnMut(&str, IndexFile)) -> Result<Option<Vec<String>>> {
    let listed: Vec<String> = repo
        .store()
        .list(PREFIX)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    // Group compacted files by compaction, newest first; keep complete ones only.
    let mut compactions: std::collections::BTreeMap<&str, (u32, Vec<&String>)> = Default::default();
    for k in &listed {
        if let Some((millis, parts)) = compaction_of(k) {
            let e = compactions.entry(millis).or_insert((parts, vec![]));
            e.1.push(k);
        }
    }
    let newest_complete = compactions
        .iter()
        .rev()
        .find(|(_, (parts, files))| files.len() as u32 == *parts);
    let mut order: Vec<&String> = newest_complete
        .map(|(_, (_, f))| f.clone())
        .unwrap_or_default();
    let in_incomplete: HashSet<&String> = compactions
        .iter()
        .filter(|(_, (parts, files))| files.len() as u32 != *parts)
        .flat_map(|(_, (_, f))| f.iter().copied())
        .collect();
    let first: HashSet<&String> = order.iter().copied().collect();
    order.extend(
        listed
            .iter()
            .filter(|k| !first.contains(k) && !in_incomplete.contains(k)),
    );

    let mut superseded: HashSet<String> = HashSet::new();
    let mut read = Vec::with_capacity(order.len());
    for batch in order.chunks(BATCH) {
        let wanted: Vec<String> = batch
            .iter()
            .filter(|k| !superseded.contains(k.as_str()))
            .map(|k| (*k).clone())
            .collect();
        for (key, r) in wanted.iter().zip(repo.store().get_many(&wanted, BATCH)) {
            let bytes = match r {
                Ok(b) => b,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let file = decode(repo.keys(), key, &bytes)?;
            if first.contains(key) {
                superseded.extend(file.supersedes.iter().cloned());
            }
            read.push(key.clone());
            visit(key, file);
        }
    }
    Ok(Some(read))
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
    /// Packs a prune marked: a blob also held by another pack is read from that one.
    marked: HashSet<PackId>,
}

impl Locations {
    /// Loads the locations of the blobs `keep` selects. A blob held by two packs (the
    /// original and a repacked copy) is read from the one no prune has marked, which
    /// is the one that stays.
    pub fn load(
        repo: &Repository,
        mut keep: impl FnMut(BlobKind, &BlobId) -> bool,
    ) -> Result<Locations> {
        let marked = super::marks::marked_packs(repo)?;
        let (locs, _) = fold(
            repo,
            || Locations {
                marked: marked.clone(),
                ..Default::default()
            },
            |locs, _, file| {
                for p in &file.packs {
                    locs.add_pack(p, &mut keep);
                }
            },
        )?;
        Ok(locs)
    }

    pub fn add_pack(&mut self, p: &IndexPack, keep: &mut impl FnMut(BlobKind, &BlobId) -> bool) {
        let mut number = None;
        let marked = self.marked.contains(&p.id);
        for e in &p.blobs {
            if !keep(e.kind, &e.id) {
                continue;
            }
            if marked
                && self
                    .map
                    .get(&e.id)
                    .is_some_and(|l| !self.marked.contains(&self.packs[l.pack as usize].0))
            {
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
                Location {
                    pack: n,
                    kind: e.kind,
                    offset: e.offset,
                    length: e.length,
                    raw_len: e.raw_len,
                },
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
/// collision needs about 2^64 blobs), each with the number of the pack that holds it
/// (so that a backup knows which packs it comes to depend on), or [`KnownBlobs::NEW`]
/// for a blob this backup adds.
#[derive(Default)]
pub struct KnownBlobs {
    data: PrefixMap,
    tree: PrefixMap,
}

type PrefixMap = HashMap<[u8; 16], u32, std::hash::BuildHasherDefault<PrefixHasher>>;

/// Blob ids are keyed hashes already: their first bytes serve as the hash.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

fn prefix(id: &BlobId) -> [u8; 16] {
    id.0[..16].try_into().expect("16 bytes")
}

impl KnownBlobs {
    /// The pack number of a blob added by the running backup.
    pub const NEW: u32 = u32::MAX;

    fn map(&mut self, kind: BlobKind) -> &mut PrefixMap {
        match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        }
    }

    /// Records that pack `pack` holds the blob; `true` if it was not known before.
    pub fn insert(&mut self, kind: BlobKind, id: &BlobId, pack: u32) -> bool {
        let mut new = false;
        self.map(kind).entry(prefix(id)).or_insert_with(|| {
            new = true;
            pack
        });
        new
    }

    /// The pack number of a known blob.
    pub fn get(&self, kind: BlobKind, id: &BlobId) -> Option<u32> {
        match kind {
            BlobKind::Data => self.data.get(&prefix(id)).copied(),
            BlobKind::Tree => self.tree.get(&prefix(id)).copied(),
        }
    }

    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.get(kind, id).is_some()
    }

    pub fn len(&self) -> usize {
        self.data.len() + self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackId;

    #[test]
    fn a_stream_that_inflates_past_the_limit_is_refused() {
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap();
        assert!(bomb.len() < 1024);
        let err = inflate(&bomb, 4096).unwrap_err();
        assert!(err.contains("more than 4096 bytes"), "{err}");
        assert_eq!(inflate(&bomb, 1 << 20).unwrap().len(), 1 << 20);
    }

    fn delta(repo: &Repository, n: u8) -> String {
        let p = IndexPack {
            id: PackId([n; 32]),
            size: 100,
            blobs: vec![],
        };
        write(
            repo,
            &IndexFile {
                packs: vec![p],
                supersedes: vec![],
            },
        )
        .unwrap()
    }

    fn packs(repo: &Repository) -> Vec<u8> {
        let (mut ids, _) = fold(repo, Vec::new, |v, _, f| {
            v.extend(f.packs.iter().map(|p| p.id.0[0]))
        })
        .unwrap();
        ids.sort();
        ids.dedup();
        ids
    }

    #[test]
    fn compaction_replaces_deltas_and_an_incomplete_one_is_ignored() {
        let repo = Repository::in_memory_for_tests();
        let old = vec![delta(&repo, 1), delta(&repo, 2), delta(&repo, 3)];
        let all: Vec<IndexPack> = (1..=3)
            .map(|n| IndexPack {
                id: PackId([n; 32]),
                size: 100,
                blobs: vec![],
            })
            .collect();
        assert_eq!(compact(&repo, all, &old, 2).unwrap(), 2);
        let listed = repo.store().list(PREFIX).unwrap();
        assert_eq!(
            listed.len(),
            2,
            "the deltas are gone, two compacted parts remain"
        );
        assert!(listed.iter().all(|o| o.key.contains("of00002-")));
        assert_eq!(packs(&repo), vec![1, 2, 3]);

        // A compaction caught half-written (part 1 of 2, deltas not yet deleted): the
        // reader ignores it and still reads the deltas it would replace.
        let d4 = delta(&repo, 4);
        let file = IndexFile {
            packs: vec![],
            supersedes: vec![d4.clone()],
        };
        write_named(&repo, &file, "c-9999999999999-00001of00002-").unwrap();
        assert_eq!(packs(&repo), vec![1, 2, 3, 4]);
    }
}
