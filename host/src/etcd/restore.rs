//! `ballast etcd restore`: a snapshot (from the repository, a file, or a point in
//! time) becomes the data directory of one member, or of every member of a new
//! cluster.
//!
//! The database is verified first (etcd's SHA-256 trailer, then the bbolt structure);
//! when the revision is bumped or changes are replayed, ballast writes a fresh
//! database itself (see [`super::mvcc`]). The data-directory step (new membership,
//! WAL, raft snapshot) is left to etcd's own tool, `etcdutl snapshot restore` (3.5 and
//! later) or `etcdctl snapshot restore` (3.4), so the result is exactly what etcd
//! expects of a member. An existing data directory is never deleted: restore refuses
//! it, or moves it aside when asked to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::bbolt::Bolt;
use super::connect::EtcdError;
use super::mvcc::{self, Change, Edits};
use super::snapshot;
use super::status::{self, TrailerHash};
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;

/// One member to restore.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    pub peer_urls: String,
}

/// The tool that lays out a data directory from a database file.
#[derive(Debug, Clone)]
pub struct Tool {
    pub program: PathBuf,
    /// `etcdctl` (3.4) takes `ETCDCTL_API=3`; `etcdutl` needs nothing.
    pub etcdctl: bool,
}

impl Tool {
    /// The tool named, or `etcdutl` on PATH, or `etcdctl` on PATH.
    pub fn find(named: Option<&Path>) -> Result<Tool, EtcdError> {
        let program = match named {
            Some(p) => p.to_path_buf(),
            // A tool that does not run (a broken shim, say) is passed over.
            None => ["etcdutl", "etcdctl"]
                .into_iter()
                .filter_map(on_path)
                .find(|p| runs(p))
                .ok_or_else(|| {
                    EtcdError::Restore(
                        "neither etcdutl nor etcdctl is on PATH: install the tools of the etcd \
                         version the member will run, or name one with --etcdutl PATH"
                            .into(),
                    )
                })?,
        };
        let etcdctl = program
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("etcdctl"));
        Ok(Tool { program, etcdctl })
    }
}

fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Parses `--initial-cluster` (`name=url[,url],name=url`) into members, each with a
/// data directory under `base`.
pub fn cluster_members(initial_cluster: &str, base: &Path) -> Result<Vec<Member>, EtcdError> {
    let mut members: Vec<Member> = vec![];
    for part in initial_cluster.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            EtcdError::Restore(format!("--initial-cluster: `{part}` is not NAME=PEER-URL"))
        })?;
        // A member with several peer URLs appears once per URL.
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls = format!("{},{url}", m.peer_urls),
            None => members.push(Member {
                name: name.to_string(),
                data_dir: base.join(name),
                peer_urls: url.to_string(),
            }),
        }
    }
    if members.is_empty() {
        return Err(EtcdError::Restore(
            "--initial-cluster names no member".into(),
        ));
    }
    Ok(members)
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct Plan {
    pub members: Vec<Member>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    /// Bump the revision by this much and schedule a compaction at the result.
    pub bump_revision: Option<i64>,
    /// Move an existing data directory aside instead of refusing.
    pub move_existing: bool,
    pub tool: Tool,
}

/// What was restored.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub members: Vec<RestoredMember>,
    pub revision: i64,
    /// Keys that exist at that revision.
    pub keys: u64,
    /// Changes replayed on top of the snapshot (point-in-time restore).
    pub changes_applied: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredMember {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the data directory that was in the way went.
    pub moved_aside: Option<PathBuf>,
}

/// A verified database file to restore from, and the temporary file behind it.
pub struct Database {
    pub path: PathBuf,
    _temp: Option<tempfile::TempPath>,
}

impl Database {
    /// A snapshot file given by the user, verified in place: etcd's SHA-256 trailer
    /// when it has one, and every page of the bbolt file.
    pub fn file(path: &Path) -> Result<Database, EtcdError> {
        status::of_file(path).map_err(|e| EtcdError::Restore(e.to_string()))?;
        Ok(Database {
            path: path.to_path_buf(),
            _temp: None,
        })
    }

    /// The database of a snapshot in the repository, written to a temporary file in
    /// `dir` (the data directory's parent, so nothing large lands in /tmp). The
    /// SHA-256 etcd sent is checked as the bytes pass, then the bbolt meta pages.
    pub fn exported(dir: &Path, repo: &Repository, snap: &Snapshot) -> Result<Database, EtcdError> {
        let db = Database::create(dir, |f| {
            let mut out = TrailerCheck {
                inner: std::io::BufWriter::with_capacity(1 << 20, f),
                hash: TrailerHash::default(),
            };
            snapshot::write_database(repo, snap, &mut out)?;
            out.inner.flush().map_err(|e| io(dir, e))?;
            if !out.hash.matches() {
                return Err(EtcdError::Restore(
                    "the database does not match the SHA-256 etcd sent with it; run \
                     `ballast repo check --read-data` to find the damage"
                        .into(),
                ));
            }
            Ok(())
        })?;
        Bolt::open(&map(&db.path, false)?).map_err(|e| EtcdError::Restore(e.to_string()))?;
        Ok(db)
    }

    /// A database written by `write` into a temporary file in `dir`.
    fn create(
        dir: &Path,
        write: impl FnOnce(&mut std::fs::File) -> Result<(), EtcdError>,
    ) -> Result<Database, EtcdError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".ballast-restore-")
            .suffix(".db")
            .tempfile_in(dir)
            .map_err(|e| io(dir, e))?;
        write(temp.as_file_mut())?;
        Ok(Database {
            path: temp.path().to_path_buf(),
            _temp: Some(temp.into_temp_path()),
        })
    }

    /// The newest revision in the database.
    pub fn revision(&self) -> Result<i64, EtcdError> {
        let map = map(&self.path, false)?;
        let src = Bolt::open(&map).map_err(|e| EtcdError::Restore(e.to_string()))?;
        mvcc::latest_revision(&src).map_err(|e| EtcdError::Restore(e.to_string()))
    }

    /// A new database: this one with `changes` replayed and the revision bumped.
    pub fn rewritten(
        &self,
        changes: &mut dyn Iterator<Item = Result<Change, super::bbolt::BoltError>>,
        bump_revision: Option<i64>,
        orphan_lease_ttl: i64,
    ) -> Result<(Database, mvcc::Rewritten), EtcdError> {
        let map = map(&self.path, false)?;
        let src = Bolt::open(&map).map_err(|e| EtcdError::Restore(e.to_string()))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut outcome = None;
        let db = Database::create(dir, |f| {
            let out = std::io::BufWriter::with_capacity(1 << 20, f);
            let (mut out, done) = mvcc::rewrite(
                &src,
                out,
                Edits {
                    changes,
                    bump_revision,
                    orphan_lease_ttl,
                },
            )
            .map_err(|e| EtcdError::Restore(e.to_string()))?;
            std::io::Write::flush(&mut out).map_err(|e| io(dir, e))?;
            outcome = Some(done);
            Ok(())
        })?;
        Ok((db, outcome.expect("set by the writer")))
    }
}

fn io(path: &Path, e: std::io::Error) -> EtcdError {
    EtcdError::Repo(crate::repo::RepoError::io(path, e))
}

/// A read-only map of a database file ballast wrote or verified and does not change
/// while it is mapped; `populate` maps every page at once.
fn map(path: &Path, populate: bool) -> Result<memmap2::Mmap, EtcdError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut options = memmap2::MmapOptions::new();
    if populate {
        options.populate();
    }
    // SAFETY: read-only, and nothing writes the file while the map lives.
    unsafe { options.map(&file) }.map_err(|e| io(path, e))
}

/// A UTC time for the names of directories and files moved aside.
pub(super) fn stamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Refuses (or moves aside) data directories in the way; an empty one is removed.
fn clear_the_way(plan: &Plan) -> Result<Vec<Option<PathBuf>>, EtcdError> {
    let stamp = stamp();
    let mut moved = vec![];
    for m in &plan.members {
        let d = &m.data_dir;
        let empty = match std::fs::read_dir(d) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                moved.push(None);
                continue;
            }
            Err(e) => return Err(io(d, e)),
        };
        if empty {
            std::fs::remove_dir(d).map_err(|e| io(d, e))?;
            moved.push(None);
        } else if plan.move_existing {
            let aside = PathBuf::from(format!("{}.ballast-{stamp}", d.display()));
            std::fs::rename(d, &aside).map_err(|e| io(d, e))?;
            moved.push(Some(aside));
        } else {
            return Err(EtcdError::Restore(format!(
                "the data directory {} already exists and is not empty; ballast never deletes \
                 one: stop that member and pass --move-existing to move it aside, or choose \
                 another --data-dir",
                d.display()
            )));
        }
    }
    Ok(moved)
}

/// Passes writes through, checking the SHA-256 trailer on the way.
struct TrailerCheck<W> {
    inner: W,
    hash: TrailerHash,
}

impl<W: std::io::Write> std::io::Write for TrailerCheck<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lays out every member's data directory from `db`, then reads the first one back.
pub fn restore(db: &Database, plan: &Plan, changes_applied: u64) -> Result<Restored, EtcdError> {
    for m in &plan.members {
        if let Some(parent) = m.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
    }
    let moved = clear_the_way(plan)?;
    let mut members = vec![];
    for (m, moved_aside) in plan.members.iter().zip(moved) {
        let mut cmd = Command::new(&plan.tool.program);
        if plan.tool.etcdctl {
            cmd.env("ETCDCTL_API", "3");
        }
        cmd.args(["snapshot", "restore"])
            .arg(&db.path)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--name", &m.name])
            .args(["--initial-cluster", &plan.initial_cluster])
            .args(["--initial-cluster-token", &plan.initial_cluster_token])
            .args(["--initial-advertise-peer-urls", &m.peer_urls]);
        // ballast has verified the database (the tool would only do it again).
        cmd.arg("--skip-hash-check");
        let out = cmd.output().map_err(|e| {
            EtcdError::Restore(format!("running {}: {e}", plan.tool.program.display()))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(EtcdError::Restore(format!(
                "{} snapshot restore for member {} failed: {}",
                plan.tool.program.display(),
                m.name,
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        members.push(RestoredMember {
            name: m.name.clone(),
            data_dir: m.data_dir.clone(),
            moved_aside,
        });
    }
    let first = plan.members[0].data_dir.join("member/snap/db");
    // Every page is read: mapped in one go rather than faulted in one by one.
    let map = map(&first, true)?;
    let bolt = Bolt::open(&map).map_err(|e| EtcdError::Restore(e.to_string()))?;
    let (revision, keys) = mvcc::summarize(&bolt).map_err(|e| EtcdError::Restore(e.to_string()))?;
    Ok(Restored {
        members,
        revision,
        keys,
        changes_applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_gives_one_member_per_name() {
        let m = cluster_members(
            "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,a=http://[::1]:2380",
            Path::new("/var/lib/etcd"),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].peer_urls, "http://10.0.0.1:2380,http://[::1]:2380");
        assert_eq!(m[1].data_dir, Path::new("/var/lib/etcd/b"));
        assert!(cluster_members("nonsense", Path::new("/x")).is_err());
        assert!(cluster_members("", Path::new("/x")).is_err());
    }
}
