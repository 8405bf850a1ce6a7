//! Backing up directory trees.
//!
//! One walker thread reads directories depth first and builds the trees; files to read
//! go to a pool of reader threads that chunk and hash them and hand new chunks to the
//! [`Saver`]. A file whose size, mtime and inode match the parent snapshot is not read
//! at all: its content list is taken over. Files that vanish, change while read or
//! cannot be read are reported in the snapshot's warnings; the backup goes on.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::exclude::Excludes;
use super::metadata;
use crate::repo::blob::{BlobId, BlobKind};
use crate::repo::chunker::{self, Chunker, StreamKind};
use crate::repo::index::Locations;
use crate::repo::saver::{load_known, Saver};
use crate::repo::snapshot::{self, Snapshot, SnapshotId, Source, Warning};
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::{RepoError, Repository, Result};

/// Which snapshot to compare against for the unchanged-file shortcut.
#[derive(Debug, Clone, Default)]
pub enum Parent {
    /// The newest snapshot of the same paths from this host.
    #[default]
    Latest,
    None,
    Id(String),
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub tags: Vec<String>,
    pub parent: Parent,
    /// Read and chunk every file even if the parent says it is unchanged.
    pub force_reread: bool,
    /// Do not cross into other file systems below the given paths.
    pub one_file_system: bool,
    /// Reader threads (0: one per core).
    pub readers: usize,
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_seen: AtomicU64,
}

pub struct BackupOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
}

enum FileResult {
    Stored {
        content: Vec<BlobId>,
        size: u64,
        warning: Option<String>,
    },
    Skipped(String),
}

struct ReadJob {
    path: PathBuf,
    before: fs::Metadata,
    reply: Sender<Result<FileResult>>,
}

struct Walk<'a> {
    repo: &'a Repository,
    saver: &'a Saver,
    trees: &'a Locations,
    excludes: Excludes,
    jobs: Sender<ReadJob>,
    force_reread: bool,
    root_devices: Vec<u64>,
    one_file_system: bool,
    progress: &'a Progress,
    counts: Counts,
    /// Files submitted for reading whose results have not been collected yet.
    outstanding: usize,
}

impl Walk<'_> {
    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{}: {message}", path.display());
        self.counts.warnings.push(Warning {
            path: path.display().to_string(),
            message,
        });
    }

    fn load_parent(&self, id: Option<&BlobId>) -> Option<Tree> {
        let id = id?;
        match Tree::load(self.repo, self.trees, id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "parent tree {} unreadable, reading files afresh: {e}",
                    id.short()
                );
                None
            }
        }
    }

    /// Builds the node for one path; `None` if it is excluded or vanished. A file to
    /// read, or a directory not saved yet, comes back as pending work.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        parent: Option<&Node>,
    ) -> Result<Option<(Node, Pending)>> {
        if self.excludes.matches(path) {
            return Ok(None);
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, format!("vanished before it could be read: {e}"));
                return Ok(None);
            }
        };
        let mut node = metadata::node_from(name, &meta);
        let mut pending = Pending::Nothing;
        match node.kind {
            NodeKind::Dir => {
                self.counts.dirs += 1;
                let crosses = self.one_file_system && !self.root_devices.contains(&meta.dev());
                if crosses {
                    node.subtree = Some(Tree::default().save(self.saver)?);
                } else {
                    let parent_tree = self.load_parent(parent.and_then(|p| p.subtree.as_ref()));
                    match self.dir(path, parent_tree.as_ref())? {
                        Sub::Ready(id) => node.subtree = Some(id),
                        Sub::Pending(p) => pending = Pending::Dir(p),
                    }
                }
            }
            NodeKind::File => {
                self.counts.files += 1;
                self.counts.total_bytes += node.size;
                self.progress
                    .bytes_seen
                    .fetch_add(node.size, Ordering::Relaxed);
                match parent {
                    // The parent's content is reused only while the repository still
                    // holds all of it in packs no prune has marked.
                    Some(p)
                        if !self.force_reread
                            && metadata::unchanged(p, &node)
                            && self.saver.holds_all(BlobKind::Data, &p.content) =>
                    {
                        node.content = p.content.clone();
                        self.counts.files_unmodified += 1;
                        self.progress.files.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        if parent.is_some() {
                            self.counts.files_changed += 1;
                        } else {
                            self.counts.files_new += 1;
                        }
                        let (tx, rx) = bounded(1);
                        self.jobs
                            .send(ReadJob {
                                path: path.to_path_buf(),
                                before: meta,
                                reply: tx,
                            })
                            .map_err(|_| {
                                self.saver.check().err().unwrap_or(RepoError::Interrupted)
                            })?;
                        self.outstanding += 1;
                        pending = Pending::File(rx);
                    }
                }
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => node.target = Some(t.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    self.warn(path, format!("cannot read the symlink: {e}"));
                    return Ok(None);
                }
            },
            _ => {}
        }
        Ok(Some((node, pending)))
    }

    /// Walks one directory. Its tree is saved at once when nothing in it is still
    /// being read; otherwise it is handed back pending, so that the walk can go on
    /// listing while the readers work, up to [`MAX_OUTSTANDING`] files in flight.
    fn dir(&mut self, dir: &Path, parent: Option<&Tree>) -> Result<Sub> {
        let mut names: Vec<OsString> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(e) => {
                self.warn(dir, format!("cannot list the directory: {e}"));
                vec![]
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut p = PendingDir::default();
        for name in names {
            let path = dir.join(&name);
            let parent_node = parent.and_then(|t| t.find(name.as_bytes()));
            if let Some((node, pending)) = self.entry(&path, name.as_bytes(), parent_node)? {
                p.add(node, path, pending);
            }
        }
        if p.files.is_empty() && p.dirs.is_empty() || self.outstanding > MAX_OUTSTANDING {
            return self.finish(p).map(Sub::Ready);
        }
        Ok(Sub::Pending(p))
    }

    /// Waits for everything a pending directory waits for, then saves its tree.
    fn finish(&mut self, p: PendingDir) -> Result<BlobId> {
        let PendingDir {
            mut nodes,
            files,
            dirs,
        } = p;
        for (i, sub) in dirs {
            nodes[i].subtree = Some(self.finish(sub)?);
        }
        let mut dropped = Vec::new();
        for (i, path, rx) in files {
            self.outstanding -= 1;
            match rx
                .recv()
                .map_err(|_| self.saver.check().err().unwrap_or(RepoError::Interrupted))??
            {
                FileResult::Stored {
                    content,
                    size,
                    warning,
                } => {
                    nodes[i].content = content;
                    nodes[i].size = size;
                    if let Some(w) = warning {
                        self.warn(&path, w);
                    }
                }
                FileResult::Skipped(why) => {
                    self.warn(&path, why);
                    self.counts.files -= 1;
                    self.counts.total_bytes -= nodes[i].size;
                    dropped.push(i);
                }
            }
        }
        for i in dropped.into_iter().rev() {
            nodes.remove(i);
        }
        Tree { nodes }.save(self.saver)
    }
}

/// Files being read whose directories are not saved yet. Above this, directories
/// are saved as soon as they are walked, which bounds the memory the walk holds.
const MAX_OUTSTANDING: usize = 4096;

/// Work an entry still waits for.
enum Pending {
    Nothing,
    File(Receiver<Result<FileResult>>),
    Dir(PendingDir),
}

/// A directory tree, saved or not yet.
enum Sub {
    Ready(BlobId),
    Pending(PendingDir),
}

/// A directory whose tree cannot be saved yet: files still being read, or
/// subdirectories themselves pending.
#[derive(Default)]
struct PendingDir {
    nodes: Vec<Node>,
    files: Vec<(usize, PathBuf, Receiver<Result<FileResult>>)>,
    dirs: Vec<(usize, PendingDir)>,
}

impl PendingDir {
    fn add(&mut self, node: Node, path: PathBuf, pending: Pending) {
        let i = self.nodes.len();
        self.nodes.push(node);
        match pending {
            Pending::Nothing => {}
            Pending::File(rx) => self.files.push((i, path, rx)),
            Pending::Dir(d) => self.dirs.push((i, d)),
        }
    }
}

/// What the walk counts.
#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    total_bytes: u64,
    warnings: Vec<Warning>,
}

/// Reads, chunks and hashes one file. `buf` is the reader thread's chunking window,
/// kept from file to file.
fn read_file(
    saver: &Saver,
    params: &chunker::Params,
    buf: &mut Vec<u8>,
    job: &ReadJob,
    progress: &Progress,
) -> Result<FileResult> {
    let path = &job.path;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileResult::Skipped(
                "vanished before it could be read".into(),
            ))
        }
        Err(e) => return Ok(FileResult::Skipped(format!("cannot open: {e}"))),
    };
    let mut content = Vec::new();
    let mut size = 0u64;
    // Read no more than the size seen when the file was listed: a file that grows
    // faster than it can be read (a busy log) must not keep the backup going forever.
    use std::io::Read;
    let mut chunks = Chunker::new(file.take(job.before.len()), params, std::mem::take(buf));
    while let Some(chunk) = chunks.next_chunk() {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                *buf = chunks.into_buffer();
                return Ok(FileResult::Skipped(format!("read error: {e}")));
            }
        };
        size += chunk.len() as u64;
        progress
            .bytes_read
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        match saver.save_slice(BlobKind::Data, chunk) {
            Ok(id) => content.push(id),
            Err(e) => {
                *buf = chunks.into_buffer();
                return Err(e);
            }
        }
    }
    *buf = chunks.into_buffer();
    progress.files.fetch_add(1, Ordering::Relaxed);
    let warning = match fs::symlink_metadata(path) {
        Err(_) => Some("vanished while it was being read; the content read so far is kept".into()),
        Ok(after)
            if after.len() != job.before.len()
                || after.mtime() != job.before.mtime()
                || after.mtime_nsec() != job.before.mtime_nsec()
                || size != job.before.len() =>
        {
            Some(format!(
                "changed while it was being read (size {} -> {}); the stored copy may mix old and new content",
                job.before.len(),
                after.len()
            ))
        }
        Ok(_) => None,
    };
    Ok(FileResult::Stored {
        content,
        size,
        warning,
    })
}

fn reader_loop(
    saver: &Saver,
    params: &chunker::Params,
    jobs: Receiver<ReadJob>,
    progress: &Progress,
) {
    let mut buf = Vec::new();
    for job in jobs {
        let r = if saver.check().is_err() {
            Err(RepoError::Interrupted)
        } else {
            read_file(saver, params, &mut buf, &job, progress)
        };
        let _ = job.reply.send(r);
    }
}

fn choose_parent(
    repo: &Repository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match &opts.parent {
        Parent::None => Ok(None),
        Parent::Id(spec) => snapshot::find(repo, spec).map(Some),
        Parent::Latest => Ok(snapshot::list(repo)?
            .into_iter()
            .rev()
            .find(|(_, s)| s.host == host && s.source.kind == "path" && s.source.paths == paths)),
    }
}

/// Backs up the given paths and writes the snapshot record.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let started = std::time::Instant::now();
    if opts.paths.is_empty() {
        return Err(RepoError::Invalid("no path to back up".into()));
    }
    let mut paths = Vec::new();
    for p in &opts.paths {
        let abs = std::path::absolute(p).map_err(|e| RepoError::io(p, e))?;
        fs::symlink_metadata(&abs).map_err(|e| RepoError::io(&abs, e))?;
        paths.push(abs);
    }
    let mut basenames: Vec<&[u8]> = paths
        .iter()
        .map(|p| p.file_name().map(|n| n.as_bytes()).unwrap_or(b"root"))
        .collect();
    basenames.sort();
    if paths.len() > 1 && basenames.windows(2).any(|w| w[0] == w[1]) {
        return Err(RepoError::Invalid(
            "two of the paths have the same final name; back them up separately or list their parent".into(),
        ));
    }
    let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let host = opts.host.clone().unwrap_or_else(crate::sysinfo::hostname);
    let parent = choose_parent(repo, opts, &host, &path_strings)?;
    let excludes = Excludes::new(&opts.excludes).map_err(RepoError::Invalid)?;

    let known = load_known(repo)?;
    let saver = Saver::start(repo, known.blobs, known.adopted);
    let params = chunker::Params::new(StreamKind::Files, repo.keys().chunker_seed());
    // One more reader than cores: a reader waiting on the disk or on a full encoder
    // queue leaves its core to another.
    let readers = if opts.readers == 0 {
        (std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            + 1)
        .clamp(3, 9)
    } else {
        opts.readers
    };
    let (job_tx, job_rx) = bounded::<ReadJob>(readers * 4);
    let root_devices = paths
        .iter()
        .filter_map(|p| fs::metadata(p).ok().map(|m| m.dev()))
        .collect();

    let walked = std::thread::scope(|scope| {
        for i in 0..readers {
            let (rx, saver, params) = (job_rx.clone(), &saver, &params);
            std::thread::Builder::new()
                .name(format!("ballast-read-{i}"))
                .spawn_scoped(scope, move || reader_loop(saver, params, rx, progress))
                .expect("spawning a reader thread");
        }
        drop(job_rx);
        let mut walk = Walk {
            repo,
            saver: &saver,
            trees: &known.trees,
            excludes,
            jobs: job_tx,
            force_reread: opts.force_reread,
            root_devices,
            one_file_system: opts.one_file_system,
            progress,
            counts: Counts::default(),
            outstanding: 0,
        };
        let parent_root = parent
            .as_ref()
            .and_then(|(_, s)| walk.load_parent(Some(&s.root)));
        let root = (|| {
            if paths.len() == 1 && fs::metadata(&paths[0]).map(|m| m.is_dir()).unwrap_or(false) {
                return match walk.dir(&paths[0], parent_root.as_ref())? {
                    Sub::Ready(id) => Ok(id),
                    Sub::Pending(p) => walk.finish(p),
                };
            }
            // Several paths (or one file): the root lists each by its final name.
            let mut root = PendingDir::default();
            for p in &paths {
                let name = p
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_else(|| b"root".to_vec());
                let pnode = parent_root.as_ref().and_then(|t| t.find(&name));
                if let Some((node, pending)) = walk.entry(p, &name, pnode)? {
                    root.add(node, p.clone(), pending);
                }
            }
            walk.finish(root)
        })();
        drop(std::mem::replace(&mut walk.jobs, bounded(0).0));
        root.map(|r| (r, walk.counts))
    });
    let (root, walk) = walked?;
    let stats = saver.finish()?;

    let mut snap = Snapshot::new(
        Source {
            kind: "path".into(),
            paths: path_strings,
            meta: Default::default(),
        },
        root,
    );
    snap.host = host;
    snap.tags = opts.tags.clone();
    snap.parent = parent.map(|(id, _)| id);
    snap.warnings = walk.warnings;
    let s = &mut snap.summary;
    s.files = walk.files;
    s.dirs = walk.dirs;
    s.files_new = walk.files_new;
    s.files_changed = walk.files_changed;
    s.files_unmodified = walk.files_unmodified;
    s.total_bytes = walk.total_bytes;
    s.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
    s.blobs_new = stats.blobs_new;
    s.bytes_new = stats.bytes_new;
    s.bytes_stored = stats.bytes_stored;
    s.packs_uploaded = stats.packs_uploaded;
    s.seconds = started.elapsed().as_secs_f64();
    let id = snap.save(repo)?;
    Ok(BackupOutcome { id, snapshot: snap })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saver() -> Saver {
        Saver::start(
            &Repository::in_memory_for_tests(),
            Default::default(),
            vec![],
        )
    }

    fn job(path: &Path) -> ReadJob {
        ReadJob {
            path: path.to_path_buf(),
            before: fs::symlink_metadata(path).unwrap(),
            reply: bounded(1).0,
        }
    }

    #[test]
    fn a_file_that_vanishes_before_reading_is_skipped_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gone");
        fs::write(&p, b"data").unwrap();
        let j = job(&p);
        fs::remove_file(&p).unwrap();
        match read_file(
            &saver(),
            &chunker::Params::new(StreamKind::Files, 0),
            &mut Vec::new(),
            &j,
            &Progress::default(),
        )
        .unwrap()
        {
            FileResult::Skipped(why) => assert!(why.contains("vanished"), "{why}"),
            FileResult::Stored { .. } => panic!("a vanished file cannot be stored"),
        }
    }

    #[test]
    fn a_file_that_changes_after_listing_is_stored_with_a_warning_and_bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grows");
        fs::write(&p, b"0123456789").unwrap();
        let j = job(&p);
        fs::write(&p, b"0123456789 and more written later").unwrap();
        match read_file(
            &saver(),
            &chunker::Params::new(StreamKind::Files, 0),
            &mut Vec::new(),
            &j,
            &Progress::default(),
        )
        .unwrap()
        {
            FileResult::Stored {
                size,
                warning,
                content,
            } => {
                assert_eq!(size, 10, "only the listed size is read");
                assert_eq!(content.len(), 1);
                assert!(warning.unwrap().contains("changed while it was being read"));
            }
            FileResult::Skipped(why) => panic!("skipped: {why}"),
        }
    }
}
