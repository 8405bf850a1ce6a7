//! Two-phase prune: data no snapshot references is first *marked*, and deleted only by
//! a later prune once the grace period has passed, if still nothing references it.
//!
//! Backups take no locks; prune holds the repository's lease ([`Lease`]), so two
//! prunes (or a prune and a forget or repair-index) never run at once. Safety comes
//! from these rules:
//! - prune refuses to run while any snapshot record cannot be read: the data of a
//!   record it cannot read would look unreferenced (`--forget-unreadable` names the
//!   records to give up);
//! - a backup never deduplicates against a marked pack (see `saver::load_known`), so
//!   backups that start after a mark cannot come to depend on it;
//! - a backup that did deduplicate against a pack that was marked (or deleted) while
//!   it ran does not record its snapshot (see `Saver::finish`);
//! - a pack that no index lists (a running or interrupted backup's) is left alone
//!   while it is younger than the grace period (by the store's modification time);
//!   older, it is only marked, and deleted only once its trailer was read and shows
//!   no referenced blob: a pack whose trailer cannot be read is kept;
//! - a backup whose own packs were marked or deleted while it ran (it ran longer than
//!   the grace period) does not record its snapshot (see `Saver::finish`);
//! - a mark is dated when it is written, after any repacking, and its packs are
//!   deleted only by a later prune, after the grace period, if still unreferenced.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::blob::{BlobId, BlobKind};
use super::index::{self, IndexFile, IndexPack, Locations};
use super::lease::Lease;
use super::marks;
use super::pack::{self, PackBuilder, PackId};
use super::snapshot;
use super::tree;
use super::{RepoError, Repository, Result};

/// Packs per compacted index file (about 64 GiB of data each).
const COMPACTED_PACKS: usize = 2048;

/// A pack smaller than this is merged with others by prune...
const SMALL_PACK: u64 = (super::pack::TARGET_SIZE / 8) as u64;
/// ... once there are this many.
const MIN_SMALL_PACKS: usize = 8;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long a mark must age before its packs are deleted.
    pub grace: std::time::Duration,
    /// Repack a pack when more than this fraction of its bytes is unreferenced.
    pub max_unused: f64,
    pub dry_run: bool,
    /// Snapshot records that cannot be read and are to be given up (ids or unique
    /// prefixes): prune runs only when every unreadable record is named here, and
    /// removes them.
    pub forget_unreadable: Vec<String>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: std::time::Duration::from_secs(24 * 3600),
            max_unused: 0.25,
            dry_run: false,
            forget_unreadable: vec![],
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub packs: usize,
    pub referenced_blobs: usize,
    /// Packs marked by this run (deleted by a later run after the grace period).
    pub packs_marked: usize,
    pub bytes_marked: u64,
    /// Packs whose live blobs were copied into new packs before marking.
    pub packs_repacked: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Marked packs that turned out to be referenced again, and were kept.
    pub packs_rescued: usize,
    /// Packs marked earlier that still wait for the grace period.
    pub packs_waiting: usize,
    /// Packs no index lists yet, written within the grace period (a running
    /// backup's): not marked.
    pub packs_young_unindexed: usize,
    pub index_files_before: usize,
    pub index_files_after: usize,
    /// Local repositories: partial upload files of killed processes, removed.
    pub staging_files_removed: usize,
    /// Unindexed packs due for deletion whose trailer could not be read: kept, since
    /// nothing shows they hold no referenced blob.
    pub packs_kept_unreadable: Vec<String>,
    /// Unreadable snapshot records given up with `--forget-unreadable`.
    pub records_forgotten: Vec<String>,
    pub dry_run: bool,
}

/// Every blob the readable snapshots reference (roots, subtrees and file contents),
/// and the records that cannot be read.
#[allow(clippy::type_complexity)]
pub fn referenced_blobs(
    repo: &Repository,
) -> Result<(usize, HashSet<BlobId>, Vec<(String, RepoError)>)> {
    let (snaps, unreadable) = snapshot::list_all(repo)?;
    let trees = Locations::load(repo, |k, _| k == BlobKind::Tree)?;
    let mut used = HashSet::new();
    for (_, s) in &snaps {
        if !used.insert(s.root) {
            continue;
        }
        tree::walk(repo, &trees, &s.root, &mut |_, node| {
            used.extend(node.content.iter().copied());
            used.extend(node.subtree);
            Ok(())
        })?;
    }
    Ok((snaps.len(), used, unreadable))
}

/// The unreadable records prune may give up: all of them, named by the user, or an
/// error that lists them and says how.
fn unreadable_to_forget(
    unreadable: &[(String, RepoError)],
    named: &[String],
) -> Result<Vec<String>> {
    let id_of = |key: &str| {
        key.strip_prefix(snapshot::PREFIX)
            .unwrap_or(key)
            .to_string()
    };
    let missing: Vec<String> = unreadable
        .iter()
        .filter(|(key, _)| {
            let id = id_of(key);
            !named
                .iter()
                .any(|n| n.len() >= 8 && id.starts_with(&n.to_ascii_lowercase()))
        })
        .map(|(key, e)| format!("{key}: {e}"))
        .collect();
    if !missing.is_empty() {
        return Err(RepoError::Invalid(format!(
            "prune refuses to run: {} snapshot records cannot be read, and the data only they \
             reference would look unreferenced and be deleted. See `ballast repo check`; to give \
             them up, name each with --forget-unreadable ID. Unreadable: {}",
            missing.len(),
            missing.join("; ")
        )));
    }
    Ok(unreadable.iter().map(|(key, _)| key.clone()).collect())
}

/// Runs a prune under `lease` (see [`Lease::acquire`]).
pub fn prune(repo: &Repository, lease: &Lease, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let (n_snaps, used, unreadable) = referenced_blobs(repo)?;
    let forgotten = unreadable_to_forget(&unreadable, &opts.forget_unreadable)?;
    report.snapshots = n_snaps;
    report.referenced_blobs = used.len();
    if !opts.dry_run {
        for key in &forgotten {
            lease.check()?;
            repo.store().delete(key)?;
            tracing::warn!("removed the unreadable snapshot record {key} (--forget-unreadable)");
        }
    }
    report.records_forgotten = forgotten
        .iter()
        .map(|k| k.strip_prefix(snapshot::PREFIX).unwrap_or(k).to_string())
        .collect();

    let listed_index: Vec<String> = repo
        .store()
        .list(index::PREFIX)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let (indexed, index_keys) = index::fold(
        repo,
        HashMap::<PackId, IndexPack>::new,
        |indexed, _, file| {
            for p in file.packs {
                indexed.insert(p.id, p);
            }
        },
    )?;
    report.index_files_before = index_keys.len();
    let dated = repo.list_packs_dated()?;
    let listed: HashMap<PackId, u64> = dated.iter().map(|(id, size, _)| (*id, *size)).collect();
    report.packs = listed.len();
    let all_marks = marks::read(repo)?;
    let already_marked = all_marks.packs();
    let marks = all_marks.marks;

    // Phase 2: delete what earlier runs marked, once due and still unreferenced.
    let now = jiff::Timestamp::now();
    let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::MAX);
    // Which packs hold each referenced blob: a marked pack may go only if every
    // referenced blob in it is also held by a pack that stays (a repacked copy).
    let mut holders: HashMap<BlobId, Vec<PackId>> = HashMap::new();
    for p in indexed.values().filter(|p| listed.contains_key(&p.id)) {
        for b in p.blobs.iter().filter(|b| used.contains(&b.id)) {
            holders.entry(b.id).or_default().push(p.id);
        }
    }
    let mut deleted: HashSet<PackId> = HashSet::new();
    let mut due_marks = Vec::new();
    for (key, mark) in &marks {
        if now.duration_since(mark.time) < grace {
            report.packs_waiting += mark.packs.len();
            continue;
        }
        due_marks.push(key.clone());
        for id in &mark.packs {
            let Some(&size) = listed.get(id) else {
                continue;
            };
            let blobs = match indexed.get(id) {
                Some(p) => p.blobs.clone(),
                None => match repo.read_pack_trailer(id, size) {
                    Ok(p) => p.blobs,
                    Err(e) => {
                        // Deleted only on evidence: without its trailer nothing shows
                        // that the pack holds no referenced blob.
                        tracing::warn!(
                            "keeping unindexed pack {}: its trailer cannot be read: {e}",
                            id.short()
                        );
                        report.packs_kept_unreadable.push(id.to_string());
                        continue;
                    }
                },
            };
            let needed = blobs.iter().any(|b| {
                used.contains(&b.id)
                    && !holders
                        .get(&b.id)
                        .is_some_and(|hs| hs.iter().any(|h| h != id && !deleted.contains(h)))
            });
            if needed {
                report.packs_rescued += 1;
            } else {
                deleted.insert(*id);
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            }
        }
    }

    // Phase 1: find new candidates. An unindexed pack written within the grace
    // period most likely belongs to a backup still running: it is left alone, so
    // that a backup that finishes within the grace period never finds its own packs
    // marked (and one that runs longer is not recorded: see `Saver::finish`).
    let young: HashSet<PackId> = dated
        .iter()
        .filter(|(id, _, modified)| {
            !indexed.contains_key(id) && modified.is_none_or(|m| now.duration_since(m) < grace)
        })
        .map(|(id, _, _)| *id)
        .collect();
    let mut to_mark: Vec<PackId> = Vec::new();
    let mut to_repack: Vec<&IndexPack> = Vec::new();
    for (id, &size) in &listed {
        if already_marked.contains(id) || deleted.contains(id) {
            continue;
        }
        match indexed.get(id) {
            None if young.contains(id) => report.packs_young_unindexed += 1,
            None => {
                // Unindexed and older than the grace period: an interrupted
                // backup's (a later backup adopts it unless it is marked).
                to_mark.push(*id);
                report.bytes_marked += size;
            }
            Some(p) => {
                let live: u64 = p
                    .blobs
                    .iter()
                    .filter(|b| used.contains(&b.id))
                    .map(|b| b.length as u64)
                    .sum();
                let total: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
                if live == 0 {
                    to_mark.push(*id);
                    report.bytes_marked += size;
                } else if total > 0 && (total - live) as f64 / total as f64 > opts.max_unused {
                    to_repack.push(p);
                }
            }
        }
    }
    // Small packs (the last pack of every backup, and every segment of an etcd
    // capture) are merged once there are enough of them to be worth a rewrite.
    let small: Vec<&IndexPack> = listed
        .iter()
        .filter(|(id, &size)| {
            size < SMALL_PACK
                && !already_marked.contains(id)
                && !deleted.contains(id)
                && !to_mark.contains(id)
                && !to_repack.iter().any(|p| p.id == **id)
        })
        .filter_map(|(id, _)| indexed.get(id))
        .collect();
    if small.len() >= MIN_SMALL_PACKS {
        to_repack.extend(small);
    }
    report.packs_repacked = to_repack.len();
    report.packs_marked = to_mark.len() + to_repack.len();
    if opts.dry_run {
        report.bytes_marked += to_repack.iter().map(|p| listed[&p.id]).sum::<u64>();
        report.index_files_after = report.index_files_before;
        return Ok(report);
    }

    // Repack: copy live blobs (still sealed) into new packs, index them, then mark the
    // old packs like any other.
    if !to_repack.is_empty() {
        let new_packs = repack(repo, &to_repack, &used)?;
        if !new_packs.is_empty() {
            index::write(
                repo,
                &IndexFile {
                    packs: new_packs,
                    supersedes: vec![],
                },
            )?;
            report.index_files_after += 1;
        }
        for p in &to_repack {
            report.bytes_marked += listed[&p.id];
            to_mark.push(p.id);
        }
    }
    if !to_mark.is_empty() {
        // Dated now, after any repacking: the grace period starts when the mark is
        // there for backups to see.
        lease.check()?;
        marks::write(repo, to_mark)?;
    }

    // Compact the index (dropping deleted packs) before deleting anything it lists.
    report.index_files_after += report.index_files_before;
    if !deleted.is_empty() || index_keys.len() > 16 {
        let packs: Vec<IndexPack> = indexed
            .into_values()
            .filter(|p| !deleted.contains(&p.id) && listed.contains_key(&p.id))
            .collect();
        let repack_files = report.index_files_after - report.index_files_before;
        lease.check()?;
        report.index_files_after =
            index::compact(repo, packs, &listed_index, COMPACTED_PACKS)? + repack_files;
    }
    for id in &deleted {
        lease.check()?;
        repo.store().delete(&pack::key(id))?;
    }
    // Due marks are done with; damaged ones never counted.
    for key in due_marks.iter().chain(&all_marks.damaged) {
        lease.check()?;
        repo.store().delete(key)?;
    }
    report.staging_files_removed = remove_stale_staging(repo, opts.grace);
    Ok(report)
}

/// A local repository writes each object to a staging file (`name#n`) and renames it
/// into place; a process killed mid-write leaves the staging file behind, invisible to
/// listings. Those older than the grace period (and at least an hour) are removed.
fn remove_stale_staging(repo: &Repository, grace: std::time::Duration) -> usize {
    let Some(root) = repo.store().location().local_path() else {
        return 0;
    };
    // At least an hour, whatever the grace period: a running upload is younger.
    let age = grace.max(std::time::Duration::from_secs(3600));
    let cutoff = std::time::SystemTime::now()
        .checked_sub(age)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().contains('#')
                && meta.modified().is_ok_and(|m| m <= cutoff)
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

fn repack(
    repo: &Repository,
    packs: &[&IndexPack],
    used: &HashSet<BlobId>,
) -> Result<Vec<IndexPack>> {
    let mut out = Vec::new();
    let mut builder = PackBuilder::default();
    let flush = |b: PackBuilder, out: &mut Vec<IndexPack>| -> Result<()> {
        let f = b.finish(repo.keys());
        let size = f.bytes.len() as u64;
        repo.store().put(&pack::key(&f.id), f.bytes)?;
        out.push(IndexPack {
            id: f.id,
            size,
            blobs: f.entries,
        });
        Ok(())
    };
    let mut copied = HashSet::new();
    for p in packs {
        let live: Vec<_> = p
            .blobs
            .iter()
            .filter(|b| used.contains(&b.id) && copied.insert(b.id))
            .collect();
        let ranges: Vec<_> = live
            .iter()
            .map(|b| b.offset as u64..b.offset as u64 + b.length as u64)
            .collect();
        let data = repo.store().get_ranges(&pack::key(&p.id), &ranges)?;
        for (b, sealed) in live.iter().zip(data) {
            if !builder.is_empty() && builder.len() + sealed.len() > pack::TARGET_SIZE {
                flush(std::mem::take(&mut builder), &mut out)?;
            }
            builder.add(b.kind, b.id, b.raw_len as usize, |o| {
                o.extend_from_slice(&sealed)
            });
        }
    }
    if !builder.is_empty() {
        flush(builder, &mut out)?;
    }
    Ok(out)
}
