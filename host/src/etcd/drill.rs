//! A restore drill for an etcd snapshot: the backup is proved by restoring it. The
//! snapshot is written out (its SHA-256 checked against the one etcd sent), laid out
//! as the data directory of a one-member cluster in a scratch directory, and served
//! by a real etcd on loopback ports; then the member is asked for its revision and
//! its number of keys, which must be those of the record and of the database. The
//! scratch directory and the member are gone at the end, whatever happened.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::connect::{EtcdError, EtcdOptions};
use super::restore::{self, Database, Member, Plan, Tool};
use crate::repo::snapshot::{Snapshot, SnapshotId};
use crate::repo::Repository;

pub struct DrillOptions {
    /// The etcd binary that serves the restored member.
    pub etcd: PathBuf,
    /// etcdutl or etcdctl, which lays out the data directory.
    pub tool: Tool,
    /// Where the scratch directory goes (it holds a copy of the database).
    pub scratch: PathBuf,
    /// How long the member may take to answer.
    pub timeout: Duration,
}

/// What a drill found.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub snapshot: String,
    pub taken: jiff::Timestamp,
    /// The revision the snapshot's record names.
    pub recorded_revision: Option<i64>,
    /// The revision and keys of the restored database, read from its file.
    pub restored_revision: i64,
    pub restored_keys: u64,
    /// What the etcd member serving it answered.
    pub served_revision: i64,
    pub served_keys: u64,
    pub etcd_version: String,
    /// The database matched the SHA-256 etcd sent with it.
    pub sha256_verified: bool,
    pub seconds: f64,
    pub problems: Vec<String>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a signal must undo: a drill's scratch directory holds plaintext copies of
/// the whole database (every Secret of the cluster), and its etcd serves them.
#[derive(Default)]
struct Undo {
    scratch: Option<PathBuf>,
    etcd: Option<u32>,
}

static UNDO: std::sync::Mutex<Undo> = std::sync::Mutex::new(Undo {
    scratch: None,
    etcd: None,
});

/// On SIGTERM or SIGINT (a server's timeout or shutdown, Ctrl-C): the member is
/// killed and the scratch directory removed before the process ends, as a normal
/// end would.
fn undo_on_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                let undo = UNDO.lock().unwrap();
                if let Some(pid) = undo.etcd {
                    // SAFETY: kill(2) on the drill's own etcd child.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                }
                if let Some(dir) = &undo.scratch {
                    let _ = std::fs::remove_dir_all(dir);
                }
                eprintln!(
                    "error: the drill was stopped by a signal; its scratch directory is removed"
                );
                std::process::exit(143);
            });
        });
    });
}

/// Scratch directories of drills that ended without cleaning up (a SIGKILL): the
/// database copies they hold are removed when older than a day.
fn remove_stale(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(86_400));
        if stale
            && e.file_name()
                .to_string_lossy()
                .starts_with("ballast-drill-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The etcd member of a drill, stopped (and reaped) when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        UNDO.lock().unwrap().etcd = None;
    }
}

/// The scratch directory, removed when dropped (and by a signal before then).
struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        UNDO.lock().unwrap().scratch = None;
    }
}

fn serve(etcd: &Path, member: &Member, client: &str, log: &Path) -> Result<Served, EtcdError> {
    let log = std::fs::File::create(log)
        .map_err(|e| EtcdError::Restore(format!("{}: {e}", log.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| EtcdError::Restore(e.to_string()))?;
    let child = Command::new(etcd)
        .arg("--name")
        .arg(&member.name)
        .arg("--data-dir")
        .arg(&member.data_dir)
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args(["--listen-peer-urls", &member.peer_urls])
        .args(["--initial-advertise-peer-urls", &member.peer_urls])
        .arg("--initial-cluster")
        .arg(format!("{}={}", member.name, member.peer_urls))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            EtcdError::Restore(format!(
                "cannot start {} for the drill: {e} (install etcd, or name it with --etcd)",
                etcd.display()
            ))
        })?;
    UNDO.lock().unwrap().etcd = Some(child.id());
    Ok(Served(child))
}

/// The tail of the member's log, for a drill whose member did not answer.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Runs the drill (it blocks: the repository is read on this thread, and the
/// member is asked on a runtime of its own).
pub fn drill(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    opts: &DrillOptions,
) -> Result<DrillReport, EtcdError> {
    let start = Instant::now();
    std::fs::create_dir_all(&opts.scratch)
        .map_err(|e| EtcdError::Restore(format!("{}: {e}", opts.scratch.display())))?;
    undo_on_signal();
    remove_stale(&opts.scratch);
    let scratch = Scratch(
        tempfile::Builder::new()
            .prefix("ballast-drill-")
            .tempdir_in(&opts.scratch)
            .map_err(|e| EtcdError::Restore(format!("{}: {e}", opts.scratch.display())))?,
    );
    UNDO.lock().unwrap().scratch = Some(scratch.0.path().to_path_buf());
    let db = Database::exported(scratch.0.path(), repo, snap)?;
    let (client_port, peer_port) = super::local::two_ports()
        .map_err(|e| EtcdError::Restore(format!("no free loopback port for the drill: {e}")))?;
    let member = Member {
        name: "drill".into(),
        data_dir: scratch.0.path().join("member"),
        peer_urls: format!("http://127.0.0.1:{peer_port}"),
    };
    let plan = Plan {
        members: vec![member.clone()],
        initial_cluster: format!("drill={}", member.peer_urls),
        initial_cluster_token: format!("ballast-drill-{}", id.short()),
        bump_revision: None,
        move_existing: false,
        tool: opts.tool.clone(),
    };
    let restored = restore::restore(&db, &plan, 0)?;
    drop(db);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let log = scratch.0.path().join("etcd.log");
    let mut served = serve(&opts.etcd, &member, &client_url, &log)?;
    let connect = EtcdOptions {
        endpoints: vec![client_url.clone()],
        ..Default::default()
    };
    let deadline = Instant::now() + opts.timeout;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EtcdError::Restore(e.to_string()))?;
    let (status, count) = runtime.block_on(async {
        loop {
            let answer = async {
                let mut c = connect.connect(&client_url).await?;
                let status = c
                    .status()
                    .await
                    .map_err(|e| EtcdError::Restore(e.to_string()))?;
                let count = c
                    .get(
                        vec![0u8],
                        Some(
                            etcd_client::GetOptions::new()
                                .with_from_key()
                                .with_count_only(),
                        ),
                    )
                    .await
                    .map_err(|e| EtcdError::Restore(e.to_string()))?;
                Ok::<_, EtcdError>((status, count))
            };
            let answer = async {
            tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .unwrap_or_else(|_| Err(EtcdError::Restore("no answer within 5s".into())))
        };
        match answer.await {
                Ok(a) => break Ok(a),
                Err(e) if Instant::now() >= deadline || matches!(served.0.try_wait(), Ok(Some(_))) => {
                    break Err(EtcdError::Restore(format!(
                        "the restored member did not answer within {:?}, or ended ({e}); its log ends:\n{}",
                        opts.timeout,
                        tail(&log)
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    let served_revision = status.header().map(|h| h.revision()).unwrap_or_default();
    let served_keys = count.count() as u64;
    let recorded_revision = snap.source.meta.get("revision").and_then(|v| v.as_i64());
    let mut problems = Vec::new();
    if let Some(r) = recorded_revision.filter(|r| *r != restored.revision) {
        problems.push(format!(
            "the record names revision {r}, the restored database holds {}",
            restored.revision
        ));
    }
    if served_revision != restored.revision {
        problems.push(format!(
            "the member serves revision {served_revision}, the restored database holds {}",
            restored.revision
        ));
    }
    if served_keys != restored.keys {
        problems.push(format!(
            "the member serves {served_keys} keys, the restored database holds {}",
            restored.keys
        ));
    }
    Ok(DrillReport {
        snapshot: id.to_string(),
        taken: snap.time,
        recorded_revision,
        restored_revision: restored.revision,
        restored_keys: restored.keys,
        served_revision,
        served_keys,
        etcd_version: status.version().to_string(),
        sha256_verified: true,
        seconds: start.elapsed().as_secs_f64(),
        problems,
    })
}
