//! `ballast etcd ...`: snapshots from a running cluster, exported files, status,
//! restore, change capture and point-in-time history.

mod diff;
mod restore;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::context::{GlobalArgs, LabelArgs};
use super::exit;
use super::output;
use crate::etcd::connect::EtcdOptions;
use crate::etcd::delta;
use crate::etcd::{snapshot, status};
use crate::repo::snapshot as records;

#[derive(Subcommand)]
pub enum EtcdCommand {
    /// Stream a snapshot from etcd into the repository (verified against etcd's SHA-256)
    Snapshot(SnapshotArgs),
    /// Write the database of an etcd snapshot in the repository to a file, byte for byte
    Export(ExportArgs),
    /// Print HASH, REVISION, TOTAL KEYS and TOTAL SIZE of a snapshot, as `etcdctl snapshot status` does
    Status(StatusArgs),
    /// Restore a snapshot (or a point in time) into the data directory of one member or of a new cluster
    Restore(restore::RestoreArgs),
    /// Capture every change continuously into delta segments (point-in-time restore)
    Watch(watch::WatchArgs),
    /// Show the keys created, updated and deleted between two revisions
    Diff(diff::DiffArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct StatusArgs {
    /// A snapshot in the repository (id, unique prefix or `latest`), or a snapshot
    /// file (`etcdctl snapshot save` output, or a member's `member/snap/db`)
    snapshot: String,
    /// Output format, as etcdctl's `-w` (`--json` is the same as `-w json`)
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
    write_out: Format,
}

/// How to reach etcd; the flags and environment variables of etcdctl.
#[derive(Args)]
pub(super) struct ConnectArgs {
    /// Client endpoints, comma-separated
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// CA certificate to verify the server (enables TLS)
    #[arg(long, env = "ETCDCTL_CACERT")]
    cacert: Option<PathBuf>,
    /// Client certificate
    #[arg(long, env = "ETCDCTL_CERT")]
    cert: Option<PathBuf>,
    /// Client key
    #[arg(long, env = "ETCDCTL_KEY")]
    key: Option<PathBuf>,
    /// User name, or NAME:PASSWORD
    #[arg(long, env = "ETCDCTL_USER", hide_env_values = true)]
    user: Option<String>,
    /// Password of --user
    #[arg(long, env = "ETCDCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Time to establish a connection
    #[arg(long, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    dial_timeout: Duration,
    /// Time for a request (and for each gap in the snapshot stream, at least 30 s)
    #[arg(long, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    command_timeout: Duration,
}

impl ConnectArgs {
    pub(super) fn options(&self) -> EtcdOptions {
        let (user, password) = match (&self.user, &self.password) {
            (Some(u), None) if u.contains(':') => {
                let (n, p) = u.split_once(':').unwrap();
                (Some(n.to_string()), Some(p.to_string()))
            }
            (u, p) => (u.clone(), p.clone()),
        };
        EtcdOptions {
            endpoints: self.endpoints.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            user,
            password,
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
        }
    }
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// File to write (must not exist)
    out: PathBuf,
}

pub fn run(g: &GlobalArgs, cmd: EtcdCommand) -> Result<i32> {
    match cmd {
        EtcdCommand::Snapshot(a) => take(g, a),
        EtcdCommand::Export(a) => export(g, a),
        EtcdCommand::Restore(a) => restore::run(g, a),
        EtcdCommand::Watch(a) => watch::run(g, a),
        EtcdCommand::Diff(a) => diff::run(g, a),
        EtcdCommand::Status(a) => {
            let s = status_of(g, &a.snapshot)?;
            if g.json || matches!(a.write_out, Format::Json) {
                output::json(&s)?;
            } else {
                let mut t = output::table(&["hash", "revision", "total keys", "total size"]);
                t.add_row(vec![
                    format!("{:08x}", s.hash),
                    s.revision.to_string(),
                    s.total_keys.to_string(),
                    output::bytes(s.total_size),
                ]);
                println!("{t}");
                if s.sha256_verified {
                    println!("sha256 trailer verified");
                }
            }
            Ok(exit::OK)
        }
    }
}

/// Status of a file, or of a repository snapshot exported to a temporary file.
fn status_of(g: &GlobalArgs, what: &str) -> Result<status::Status> {
    let path = std::path::Path::new(what);
    if path.exists() {
        return Ok(status::of_file(path)?);
    }
    let repo = g.open().with_context(|| {
        format!("`{what}` is not a file; as a snapshot id it needs the repository")
    })?;
    let (id, snap) = records::find_of_kind(&repo, what, delta::FULL)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("etcd.db");
    snapshot::export(&repo, &snap, &file)
        .with_context(|| format!("reading snapshot {}", id.short()))?;
    Ok(status::of_file(&file)?)
}

fn take(g: &GlobalArgs, a: SnapshotArgs) -> Result<i32> {
    let repo = g.open()?;
    let opts = a.connect.options();
    let bar = output::bar(g.progress(), None, "{spinner} {msg}");
    let taken = snapshot::take(&repo, &opts, &a.labels.labels(), &mut |n| {
        bar.set_message(format!("{} streamed", output::bytes(n)))
    })?;
    bar.finish_and_clear();
    let s = &taken.snapshot;
    if g.json {
        output::json(&json!({
            "snapshot_id": taken.id.to_string(),
            "snapshot": s,
            "members": taken.members.iter().map(|(e, r)| match r {
                Ok(m) => json!({ "endpoint": e, "status": m }),
                Err(err) => json!({ "endpoint": e, "error": err }),
            }).collect::<Vec<_>>(),
            "requests": repo.store().requests(),
        }))?;
    } else {
        let mut t = output::table(&[
            "endpoint",
            "member",
            "leader",
            "version",
            "db size",
            "raft index",
            "revision",
        ]);
        for (e, r) in &taken.members {
            match r {
                Ok(m) => t.add_row(vec![
                    e.clone(),
                    m.member_id.clone(),
                    if m.is_leader {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    m.version.clone(),
                    output::bytes(m.db_size.max(0) as u64),
                    m.raft_index.to_string(),
                    m.revision.to_string(),
                ]),
                Err(err) => t.add_row(vec![e.clone(), format!("unreachable: {err}")]),
            };
        }
        println!("{t}");
        println!(
            "snapshot {} saved from {} (member {}): {} database, revision {}, {} new data stored, {:.1}s",
            taken.id.short(),
            taken.source.endpoint,
            taken.source.member_id,
            output::bytes(s.summary.total_bytes.saturating_sub(32)),
            taken.source.revision,
            output::bytes(s.summary.bytes_stored),
            s.summary.seconds
        );
    }
    Ok(exit::OK)
}

fn export(g: &GlobalArgs, a: ExportArgs) -> Result<i32> {
    let repo = g.open()?;
    let (id, snap) = records::find_of_kind(&repo, &a.snapshot, delta::FULL)?;
    let n = snapshot::export(&repo, &snap, &a.out).with_context(|| {
        format!(
            "exporting snapshot {} (the file must not exist yet)",
            id.short()
        )
    })?;
    if g.json {
        output::json(&json!({ "snapshot_id": id.to_string(), "file": a.out, "bytes": n }))?;
    } else {
        println!(
            "wrote {} ({}) from snapshot {}",
            a.out.display(),
            output::bytes(n),
            id.short()
        );
    }
    Ok(exit::OK)
}
