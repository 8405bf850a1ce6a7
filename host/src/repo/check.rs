//! `repo check`: structure (config, keys, index vs packs, every snapshot's trees and
//! blobs reachable) and, with `read_data`, every byte (each pack hashed against its
//! name, every blob decrypted and hashed against its id), or with a [`Subset`], the
//! bytes of some packs. Problems name the pack and the snapshots they affect.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::blob::{self, BlobKind};
use super::index::{self, IndexPack, Locations};
use super::lease::Lease;
use super::pack::{self, PackId};
use super::snapshot::{self, SnapshotId};
use super::tree;
use super::{Repository, Result};

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only these packs' bytes (a scheduled check that covers the repository
    /// over several runs).
    pub subset: Option<Subset>,
}

/// Which packs a sampled read takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// `n/m`: the packs whose id's first byte is `n - 1` modulo `m`; the runs
    /// `1/m` to `m/m` read every pack exactly once between them.
    Part { n: u32, m: u32 },
    /// `P%`: a random sample of that share of the packs (at least one), a new one
    /// every run.
    Percent(f64),
}

impl std::str::FromStr for Subset {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Subset, String> {
        let bad = || format!("`{s}`: write a share of the packs as 5% or a part as 1/10");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("`{s}`: a share is more than 0% and at most 100%"));
            }
            return Ok(Subset::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(format!("`{s}`: a part n/m needs 1 <= n <= m"));
        }
        Ok(Subset::Part { n, m })
    }
}

impl Subset {
    fn take(self, mut ids: Vec<PackId>) -> Vec<PackId> {
        match self {
            Subset::Part { n, m } => ids
                .into_iter()
                .filter(|id| u32::from(id.0[0]) % m == n - 1)
                .collect(),
            Subset::Percent(p) => {
                use rand::seq::SliceRandom;
                let want = ((ids.len() as f64 * p / 100.0).ceil() as usize).min(ids.len());
                ids.shuffle(&mut rand::thread_rng());
                ids.truncate(want.max(1));
                ids
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Progress {
    pub packs_done: AtomicU64,
    pub packs_total: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub what: String,
    pub detail: String,
    /// Short ids of the snapshots that cannot be fully restored because of it.
    pub snapshots: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub index_files: usize,
    pub blobs: usize,
    /// Packs whose bytes were read (all with `read_data`, some with a subset).
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Packs no index lists: left by an interrupted or running backup. Not an error:
    /// the next backup adopts them, or prune removes them.
    pub unindexed_packs: Vec<String>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(repo: &Repository, opts: &CheckOptions, progress: &Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let listed: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    report.packs = listed.len();

    // Index against packs.
    let ((indexed, locations), keys) = index::fold(
        repo,
        || (HashMap::<PackId, IndexPack>::new(), Locations::default()),
        |(indexed, locations), _, file| {
            for p in file.packs {
                locations.add_pack(&p, &mut |_, _| true);
                indexed.insert(p.id, p);
            }
        },
    )?;
    report.index_files = keys.len();
    report.blobs = locations.len();
    let mut bad_packs: HashMap<PackId, (String, String)> = HashMap::new();
    for (id, p) in &indexed {
        match listed.get(id) {
            None => {
                bad_packs.insert(
                    *id,
                    (
                        format!("pack {id}"),
                        "the index lists it but it is missing".into(),
                    ),
                );
            }
            Some(&size) if size != p.size => {
                bad_packs.insert(
                    *id,
                    (
                        format!("pack {id}"),
                        format!(
                            "it has {size} bytes, the index says {} (truncated or replaced)",
                            p.size
                        ),
                    ),
                );
            }
            Some(_) => {}
        }
    }
    report.unindexed_packs = listed
        .keys()
        .filter(|id| !indexed.contains_key(id))
        .map(|id| id.to_string())
        .collect();
    report.unindexed_packs.sort();

    // Snapshots: every tree readable, every blob indexed; remember which packs each uses.
    let (snaps, unreadable) = snapshot::list_all(repo)?;
    report.snapshots = snaps.len() + unreadable.len();
    let mut uses: Vec<(SnapshotId, HashSet<u32>)> = Vec::new();
    let mut problems: Vec<Problem> = unreadable
        .into_iter()
        .map(|(key, e)| Problem {
            what: format!("snapshot record {key}"),
            detail: format!("{e}; the snapshot is lost unless you have another copy of the record"),
            snapshots: vec![key
                .trim_start_matches(snapshot::PREFIX)
                .chars()
                .take(8)
                .collect()],
        })
        .collect();
    for (sid, s) in &snaps {
        let mut packs_used = HashSet::new();
        let mut missing = BTreeSet::new();
        let mut note = |id: &blob::BlobId, packs_used: &mut HashSet<u32>| match locations.get(id) {
            Some(l) => {
                packs_used.insert(l.pack);
            }
            None => {
                missing.insert(id.to_string());
            }
        };
        note(&s.root, &mut packs_used);
        let walked = tree::walk(repo, &locations, &s.root, &mut |_, node| {
            for id in node.content.iter().chain(node.subtree.iter()) {
                note(id, &mut packs_used);
            }
            Ok(())
        });
        if let Err(e) = walked {
            problems.push(Problem {
                what: format!("snapshot {}", sid.short()),
                detail: format!("its trees cannot be read: {e}"),
                snapshots: vec![sid.short()],
            });
        }
        if !missing.is_empty() {
            let first = missing.iter().next().cloned().unwrap_or_default();
            problems.push(Problem {
                what: format!("snapshot {}", sid.short()),
                detail: format!(
                    "{} blobs it references are in no index (first: {first}); if packs hold them, `ballast repo repair-index` restores the index",
                    missing.len()
                ),
                snapshots: vec![sid.short()],
            });
        }
        uses.push((*sid, packs_used));
    }

    // Every byte.
    if opts.read_data || opts.subset.is_some() {
        let mut ids: Vec<PackId> = listed.keys().copied().collect();
        ids.sort_by_key(|i| i.0);
        if let Some(subset) = opts.subset {
            ids = subset.take(ids);
        }
        report.packs_read = ids.len();
        progress
            .packs_total
            .store(ids.len() as u64, Ordering::Relaxed);
        let oversized: Vec<PackId> = ids
            .iter()
            .filter(|id| listed[id] > pack::MAX_SIZE)
            .copied()
            .collect();
        for id in &oversized {
            progress.packs_done.fetch_add(1, Ordering::Relaxed);
            bad_packs.insert(
                *id,
                (
                    format!("pack {id}"),
                    format!(
                        "it is {} bytes, more than any pack ballast writes; not read",
                        listed[id]
                    ),
                ),
            );
        }
        let ids: Vec<PackId> = ids
            .into_iter()
            .filter(|id| !oversized.contains(id))
            .collect();
        for batch in ids.chunks(4) {
            let keys: Vec<String> = batch.iter().map(pack::key).collect();
            for (id, r) in batch.iter().zip(repo.store().get_many(&keys, 4)) {
                progress.packs_done.fetch_add(1, Ordering::Relaxed);
                let bytes = match r {
                    Ok(b) => b,
                    Err(e) => {
                        bad_packs
                            .insert(*id, (format!("pack {id}"), format!("cannot be read: {e}")));
                        continue;
                    }
                };
                report.bytes_read += bytes.len() as u64;
                if let Err(detail) = verify_pack(repo, id, &bytes, indexed.get(id)) {
                    bad_packs.insert(*id, (format!("pack {id}"), detail));
                }
            }
        }
    }

    // Name the snapshots each bad pack affects.
    let mut bad: Vec<_> = bad_packs.into_iter().collect();
    bad.sort_by(|a, b| a.0.cmp(&b.0));
    for (pack_id, (what, detail)) in bad {
        let affected: Vec<String> = uses
            .iter()
            .filter(|(_, packs)| packs.iter().any(|n| locations.pack(*n) == pack_id))
            .map(|(sid, _)| sid.short())
            .collect();
        problems.push(Problem {
            what,
            detail,
            snapshots: affected,
        });
    }
    report.problems = problems;
    Ok(report)
}

/// Hashes a whole pack against its name and opens every blob in it.
fn verify_pack(
    repo: &Repository,
    id: &PackId,
    bytes: &[u8],
    indexed: Option<&IndexPack>,
) -> Result<(), String> {
    let actual = blake3::hash(bytes);
    let name_ok = actual.as_bytes() == &id.0;
    let entries = match pack::parse_whole(repo.keys(), id, bytes) {
        Ok(e) => e,
        Err(e) => return Err(format!("{e}")),
    };
    let mut damaged = 0;
    let mut first = None;
    let mut opener = blob::Opener::default();
    for e in &entries {
        // parse_whole checked that every entry lies inside the pack.
        let start = e.offset as usize;
        let sealed = &bytes[start..start + e.length as usize];
        if let Err(err) = opener.open(repo.keys(), &e.id, sealed) {
            damaged += 1;
            first.get_or_insert_with(|| err.to_string());
        }
    }
    if let Some(p) = indexed {
        if p.blobs.len() != entries.len() {
            return Err(format!(
                "its trailer lists {} blobs, the index {}",
                entries.len(),
                p.blobs.len()
            ));
        }
    }
    match (damaged, name_ok) {
        (0, true) => Ok(()),
        (0, false) => {
            Err("its content does not hash to its name (a damaged byte outside the blobs?)".into())
        }
        (n, _) => Err(format!(
            "{n} of {} blobs are damaged; first: {}",
            entries.len(),
            first.unwrap_or_default()
        )),
    }
}

/// `repo repair-index`: rebuilds the index from the packs' trailers and replaces every
/// index file, under the repository's lease. A pack whose trailer cannot be read keeps
/// the entries the old index had for it (if any): a read error must not make its
/// blobs unreachable. Returns (packs indexed, packs unreadable).
pub fn repair_index(repo: &Repository, lease: &Lease) -> Result<(usize, Vec<String>)> {
    let old_keys: Vec<String> = repo
        .store()
        .list(index::PREFIX)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    // An index that cannot be read at all is what repair-index is for.
    let old: HashMap<PackId, IndexPack> = match index::fold(repo, HashMap::new, |m, _, f| {
        m.extend(f.packs.into_iter().map(|p| (p.id, p)))
    }) {
        Ok((m, _)) => m,
        Err(e) => {
            tracing::warn!("the old index cannot be read ({e}); rebuilding from the packs alone");
            HashMap::new()
        }
    };
    let mut packs = Vec::new();
    let mut unreadable = Vec::new();
    for (id, size) in repo.list_packs()? {
        match repo.read_pack_trailer(&id, size) {
            Ok(p) => packs.push(p),
            Err(e) => {
                let kept = old.get(&id).cloned();
                unreadable.push(format!(
                    "{}: {e}{}",
                    id.short(),
                    if kept.is_some() {
                        " (its old index entries are kept)"
                    } else {
                        ""
                    }
                ));
                packs.extend(kept);
            }
        }
    }
    let n = packs.len();
    lease.check()?;
    index::compact(repo, packs, &old_keys, 2048)?;
    Ok((n, unreadable))
}

/// Counts for `repo stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub blobs: usize,
    pub data_blobs: usize,
    pub tree_blobs: usize,
    /// Plaintext bytes of all blobs (each stored once).
    pub raw_bytes: u64,
    /// Sum of the sizes of all snapshots, as if nothing were deduplicated.
    pub snapshot_bytes: u64,
    pub index_files: usize,
}

pub fn stats(repo: &Repository) -> Result<Stats> {
    let ((mut st, _), keys) = index::fold(
        repo,
        || (Stats::default(), HashSet::new()),
        |(st, seen), _, file| {
            for p in &file.packs {
                for b in &p.blobs {
                    if seen.insert((b.kind, b.id)) {
                        st.raw_bytes += b.raw_len as u64;
                        match b.kind {
                            BlobKind::Data => st.data_blobs += 1,
                            BlobKind::Tree => st.tree_blobs += 1,
                        }
                    }
                }
            }
        },
    )?;
    st.index_files = keys.len();
    st.blobs = st.data_blobs + st.tree_blobs;
    for (_, size) in repo.list_packs()? {
        st.packs += 1;
        st.pack_bytes += size;
    }
    let snaps = snapshot::list(repo)?;
    st.snapshots = snaps.len();
    st.snapshot_bytes = snaps.iter().map(|(_, s)| s.summary.total_bytes).sum();
    Ok(st)
}
