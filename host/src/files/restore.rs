//! Restoring a snapshot (or part of it) into a directory.
//!
//! The plan is made from the trees first: directories, files with their sizes, and for
//! every needed blob the places it goes. Then each pack is read once, with ranged reads
//! that cover neighbouring blobs, and every blob is written to all its places (the
//! writing threads create the files). Blocks of zeros are not written, and every file
//! is set to its full size at the end, so sparse files stay sparse. Metadata comes
//! last, directories deepest first.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use super::metadata;
use crate::repo::blob::{self, BlobId};
use crate::repo::index::Locations;
use crate::repo::snapshot::{Snapshot, Warning};
use crate::repo::tree::{self, Node, NodeKind};
use crate::repo::{pack, RepoError, Repository, Result};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only paths matching one of these globs (and everything below them).
    pub include: Vec<String>,
    /// Packs read at the same time (0: four).
    pub threads: usize,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_written: AtomicU64,
    pub bytes_total: AtomicU64,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub packs_read: u64,
    pub seconds: f64,
    /// Files that could not be restored completely, or metadata that could not be set.
    pub errors: Vec<Warning>,
}

struct Item {
    path: PathBuf,
    node: Node,
    /// For a hard link to a file restored earlier in this run.
    link_to: Option<PathBuf>,
}

fn include_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches('/');
        b.add(Glob::new(p).map_err(|e| RepoError::Invalid(format!("include pattern `{p}`: {e}")))?);
    }
    Ok(Some(
        b.build().map_err(|e| RepoError::Invalid(e.to_string()))?,
    ))
}

/// Whether `path` or one of its ancestors matches.
fn selected(set: &GlobSet, path: &[u8]) -> bool {
    let mut p = path;
    loop {
        if set.is_match(tree::path_of(p)) {
            return true;
        }
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let include = include_set(&opts.include)?;
    let locations = tree::locations_for(repo, &[snapshot.root])?;

    // 1. The plan: every node to restore, parents before children. Paths are raw
    // bytes: names need not be UTF-8, and two names that differ only in bytes that
    // are not UTF-8 must stay two files.
    let mut all: Vec<(Vec<u8>, Node)> = Vec::new();
    tree::walk(repo, &locations, &snapshot.root, &mut |path, node| {
        let mut n = node.clone();
        n.subtree = None;
        all.push((path.to_vec(), n));
        Ok(())
    })?;
    let keep: HashSet<Vec<u8>> = match &include {
        None => all.iter().map(|(p, _)| p.clone()).collect(),
        Some(set) => {
            let mut keep = HashSet::new();
            for (p, _) in &all {
                if selected(set, p) {
                    let mut a = p.as_slice();
                    keep.insert(a.to_vec());
                    while let Some(i) = a.iter().rposition(|&b| b == b'/') {
                        a = &a[..i];
                        keep.insert(a.to_vec());
                    }
                }
            }
            keep
        }
    };
    if include.is_some() && keep.is_empty() {
        return Err(RepoError::Invalid(format!(
            "no path in the snapshot matches {:?}",
            opts.include
        )));
    }
    fs::create_dir_all(&opts.target).map_err(|e| RepoError::io(&opts.target, e))?;
    let mut items = Vec::new();
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (p, node) in all {
        if !keep.contains(&p) {
            continue;
        }
        // Every name was checked to be one path component when its tree was read,
        // so the path stays below the target.
        let path = opts.target.join(tree::path_of(&p));
        let mut link_to = None;
        if node.kind == NodeKind::File && node.links > 1 {
            match first_link.get(&(node.device, node.inode)) {
                Some(first) => link_to = Some(first.clone()),
                None => {
                    first_link.insert((node.device, node.inode), path.clone());
                }
            }
        }
        items.push(Item {
            path,
            node,
            link_to,
        });
    }

    // 2. Directories and empty files of the right size.
    let mut summary = RestoreSummary::default();
    let errors = Mutex::new(Vec::new());
    let fail = |path: &Path, message: String| {
        errors.lock().unwrap().push(Warning {
            path: path.display().to_string(),
            message,
        })
    };
    let mut destinations: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let r = match item.node.kind {
            NodeKind::Dir => {
                summary.dirs += 1;
                fs::create_dir_all(&item.path)
            }
            NodeKind::File if item.link_to.is_none() => {
                // Never write through a symlink that already sits at this path.
                if fs::symlink_metadata(&item.path).is_ok_and(|m| m.file_type().is_symlink()) {
                    let _ = fs::remove_file(&item.path);
                }
                summary.files += 1;
                summary.bytes += item.node.size;
                let mut offset = 0u64;
                for id in &item.node.content {
                    let Some(loc) = locations.get(id) else {
                        fail(
                            &item.path,
                            format!(
                                "incomplete: {}",
                                RepoError::BlobNotIndexed {
                                    blob: id.to_string()
                                }
                            ),
                        );
                        break;
                    };
                    destinations.entry(*id).or_default().push((i, offset));
                    offset += loc.raw_len as u64;
                }
                // Files are created by the threads that write them (creating tens of
                // thousands of inodes is kernel work worth spreading) and sized in
                // the last pass; here only what is in the way goes.
                match fs::symlink_metadata(&item.path) {
                    Ok(_) => fs::remove_file(&item.path),
                    Err(_) => Ok(()),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            fail(&item.path, format!("cannot create: {e}"));
        }
    }
    progress.bytes_total.store(summary.bytes, Ordering::Relaxed);

    // 3. Read each pack once and put every blob where it belongs.
    let mut by_pack: HashMap<u32, Vec<BlobId>> = HashMap::new();
    for id in destinations.keys() {
        by_pack
            .entry(locations.get(id).expect("checked above").pack)
            .or_default()
            .push(*id);
    }
    let packs: Mutex<Vec<(u32, Vec<BlobId>)>> = Mutex::new(by_pack.into_iter().collect());
    summary.packs_read = packs.lock().unwrap().len() as u64;
    let threads = if opts.threads == 0 { 4 } else { opts.threads };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some((pack_no, blobs)) = packs.lock().unwrap().pop() else {
                    return;
                };
                let affected: Vec<usize> = blobs
                    .iter()
                    .flat_map(|b| destinations[b].iter().map(|(i, _)| *i))
                    .collect();
                if let Err(e) = restore_pack(
                    repo,
                    &locations,
                    pack_no,
                    blobs,
                    &destinations,
                    &items,
                    progress,
                    &fail,
                ) {
                    // A pack that cannot be read: name every file that needed it, go on.
                    let mut seen = HashSet::new();
                    for i in affected.into_iter().filter(|i| seen.insert(*i)) {
                        fail(&items[i].path, format!("incomplete: {e}"));
                    }
                }
            });
        }
    });

    // 4. Every file at its full size (creating the empty and all-zero ones), links,
    // special files, then metadata, directories last and deepest first.
    for item in items
        .iter()
        .filter(|i| i.node.kind == NodeKind::File && i.link_to.is_none())
    {
        let r = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&item.path)
            .and_then(|f| {
                if f.metadata()?.len() != item.node.size {
                    f.set_len(item.node.size)?;
                }
                Ok(())
            });
        if let Err(e) = r {
            fail(&item.path, format!("cannot create: {e}"));
        }
    }
    for item in &items {
        let r = match (&item.node.kind, &item.link_to) {
            (NodeKind::File, Some(first)) => {
                let _ = fs::remove_file(&item.path);
                fs::hard_link(first, &item.path)
            }
            (NodeKind::Symlink, _) => {
                let target =
                    std::ffi::OsStr::from_bytes(item.node.target.as_deref().unwrap_or_default());
                let _ = fs::remove_file(&item.path);
                std::os::unix::fs::symlink(target, &item.path)
            }
            (NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice, _) => {
                let _ = fs::remove_file(&item.path);
                metadata::make_special(&item.path, &item.node)
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            fail(&item.path, format!("cannot create: {e}"));
        }
    }
    for item in items
        .iter()
        .filter(|i| i.node.kind != NodeKind::Dir && i.node.kind != NodeKind::Socket)
    {
        if let Err(e) = metadata::apply(&item.path, &item.node) {
            fail(&item.path, format!("cannot set metadata: {e}"));
        }
    }
    for item in items.iter().rev().filter(|i| i.node.kind == NodeKind::Dir) {
        if let Err(e) = metadata::apply(&item.path, &item.node) {
            fail(&item.path, format!("cannot set metadata: {e}"));
        }
    }
    summary.errors = errors.into_inner().unwrap();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The byte ranges of `data` that are not whole 4 KiB blocks of zeros. Writing only
/// these keeps holes of sparse files (disk images, databases) as holes.
fn nonzero_runs(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    const BLOCK: usize = 4096;
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, block) in data.chunks(BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let (s, e) = (i * BLOCK, i * BLOCK + block.len());
        match runs.last_mut() {
            Some(last) if last.end == s => last.end = e,
            _ => runs.push(s..e),
        }
    }
    runs
}

/// Gaps up to this size between wanted blobs are read rather than split into requests.
const MAX_GAP: u64 = 256 * 1024;
/// Largest single ranged read.
const MAX_SPAN: u64 = 8 * 1024 * 1024;

#[allow(clippy::too_many_arguments)]
fn restore_pack(
    repo: &Repository,
    locations: &Locations,
    pack_no: u32,
    mut blobs: Vec<BlobId>,
    destinations: &HashMap<BlobId, Vec<(usize, u64)>>,
    items: &[Item],
    progress: &Progress,
    fail: &(dyn Fn(&Path, String) + Sync),
) -> Result<()> {
    blobs.sort_by_key(|id| locations.get(id).expect("located").offset);
    let key = pack::key(&locations.pack(pack_no));
    // Group blobs into spans of neighbouring ones.
    let mut spans: Vec<(u64, u64, Vec<BlobId>)> = Vec::new();
    for id in blobs {
        let l = locations.get(&id).expect("located");
        let (s, e) = (l.offset as u64, l.offset as u64 + l.length as u64);
        match spans.last_mut() {
            Some(last) if s <= last.1 + MAX_GAP && e - last.0 <= MAX_SPAN => {
                last.1 = last.1.max(e);
                last.2.push(id);
            }
            _ => spans.push((s, e, vec![id])),
        }
    }
    // One ranged read per span, each processed before the next is fetched: every
    // byte of the pack is read once, and memory holds one span per thread.
    let mut opener = blob::Opener::default();
    for (start, end, ids) in &spans {
        let bytes = repo.store().get_range(&key, *start..*end)?;
        for id in ids {
            let l = locations.get(id).expect("located");
            let off = (l.offset as u64 - start) as usize;
            let plain = match opener.open(repo.keys(), id, &bytes[off..off + l.length as usize]) {
                Ok(p) => p,
                Err(e) => {
                    for (i, _) in &destinations[id] {
                        fail(
                            &items[*i].path,
                            format!("incomplete: {e} (in pack {})", locations.pack(pack_no)),
                        );
                    }
                    continue;
                }
            };
            let runs = nonzero_runs(plain);
            for (i, offset) in &destinations[id] {
                progress
                    .bytes_written
                    .fetch_add(plain.len() as u64, Ordering::Relaxed);
                if runs.is_empty() {
                    continue; // all zeros: a hole, the file was created at full size
                }
                let path = &items[*i].path;
                let r = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .and_then(|f| {
                        runs.iter().try_for_each(|r| {
                            f.write_all_at(&plain[r.clone()], offset + r.start as u64)
                        })
                    });
                if let Err(e) = r {
                    fail(path, format!("cannot write: {e}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_runs_skip_zero_blocks() {
        let mut d = vec![0u8; 5 * 4096 + 100];
        d[10] = 1;
        d[3 * 4096 + 5] = 2;
        d[4 * 4096] = 3;
        d[5 * 4096 + 99] = 4;
        assert_eq!(nonzero_runs(&d), vec![0..4096, 3 * 4096..5 * 4096 + 100]);
        assert!(nonzero_runs(&[0u8; 9000]).is_empty());
    }

    #[test]
    fn include_matches_a_path_or_an_ancestor() {
        let set = include_set(&["etc".into(), "data/*.log".into()])
            .unwrap()
            .unwrap();
        assert!(selected(&set, b"etc"));
        assert!(selected(&set, b"etc/app/x.yaml"));
        assert!(selected(&set, b"data/a.log"));
        assert!(selected(&set, b"data/\xff.log"));
        assert!(!selected(&set, b"data/a.bin"));
        assert!(!selected(&set, b"etcetera"));
    }
}
