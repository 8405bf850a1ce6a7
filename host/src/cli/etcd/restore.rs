//! `ballast etcd restore`: flags in etcdutl's names, then the library's restore.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use super::ConnectArgs;
use crate::cli::context::GlobalArgs;
use crate::cli::{exit, output};
use crate::etcd::delta;
use crate::etcd::inplace::{self, Manifest, Waits};
use crate::etcd::pitr::{self, Point, Timeline};
use crate::etcd::restore::{self, Database, Member, Plan, Tool};
use crate::repo::snapshot as records;

#[derive(Args)]
pub struct RestoreArgs {
    /// A snapshot in the repository (id, unique prefix or `latest`), or a snapshot
    /// file; omitted with --to-revision or --to-time
    #[arg(required_unless_present_any = ["to_revision", "to_time", "rollback"])]
    snapshot: Option<String>,
    /// Restore the keyspace exactly as it was at this revision (a full snapshot plus
    /// the changes `ballast etcd watch` captured after it)
    #[arg(long, conflicts_with_all = ["snapshot", "to_time"])]
    to_revision: Option<i64>,
    /// Restore the keyspace as it was at this time (RFC 3339, e.g. 2026-11-24T09:30:00Z)
    #[arg(long, conflicts_with = "snapshot")]
    to_time: Option<jiff::Timestamp>,
    /// The cluster whose history to use (default: that of the newest etcd snapshot)
    #[arg(long)]
    cluster_id: Option<String>,
    /// The member's data directory to create; with --all-members, the directory that
    /// receives one data directory per member (named after it)
    #[arg(long, required_unless_present_any = ["in_place", "rollback"], conflicts_with = "in_place")]
    data_dir: Option<PathBuf>,
    /// The member's name
    #[arg(long, default_value = "default")]
    name: String,
    /// Every member of the restored cluster, NAME=PEER-URL,... (default: this member alone)
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The new cluster's token (give each restored cluster its own)
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Restore every member named in --initial-cluster, each into DATA_DIR/NAME
    #[arg(long, requires = "initial_cluster")]
    all_members: bool,
    /// Add this much to the restored revision, so that revisions never go backwards
    /// for clients (Kubernetes uses 1000000000); needs --mark-compacted
    #[arg(long, requires = "mark_compacted")]
    bump_revision: Option<i64>,
    /// Mark the bumped revision compacted, so that watchers (the Kubernetes API
    /// server's caches) re-list instead of missing the restore
    #[arg(long, requires = "bump_revision")]
    mark_compacted: bool,
    /// Move a data directory that is in the way to DIR.ballast-TIME instead of refusing
    #[arg(long)]
    move_existing: bool,
    /// The tool that writes the data directory: etcdutl (3.5+) or etcdctl (3.4);
    /// default: etcdutl on PATH, else etcdctl
    #[arg(long, env = "BALLAST_ETCDUTL")]
    etcdutl: Option<PathBuf>,
    /// Restore this node's etcd static pod in place (kubeadm): stop it by moving its
    /// manifest aside, move its data directory aside, restore, start it, check it
    #[arg(long, conflicts_with_all = ["all_members", "move_existing"])]
    in_place: bool,
    /// Undo the last --in-place restore: the previous data directory goes back
    #[arg(long, conflicts_with_all = ["snapshot", "to_revision", "to_time", "in_place"])]
    rollback: bool,
    /// The etcd static-pod manifest, for --in-place and --rollback
    #[arg(long, default_value = "/etc/kubernetes/manifests/etcd.yaml")]
    manifest: PathBuf,
    /// Point in time: keys replayed from the capture can be bound to leases granted
    /// after the snapshot, which it does not hold; each is re-created with this TTL
    /// (counted from the restored cluster's start), so its keys go when it runs out
    /// (Events, API server leases) instead of living for ever
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    orphan_lease_ttl: std::time::Duration,
    /// Do not ask for confirmation (--in-place, --rollback)
    #[arg(long)]
    yes: bool,
    /// --in-place as one of the restores of every member from the same snapshot (run
    /// on each control-plane node at about the same time): after this node's etcd
    /// stops, waits until no other member runs the old cluster; the restored members
    /// form a new cluster that no member left on the old data can join. Also needed
    /// when this node's etcd does not answer, so its member list cannot be read
    #[arg(long, requires = "in_place")]
    whole_cluster: bool,
    /// How long to wait for etcd to stop, and to start (--in-place, --rollback)
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    wait: std::time::Duration,
    /// The local member, for --in-place and --rollback (etcdctl's flags)
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `--orphan-lease-ttl` in seconds (at least one).
fn lease_ttl(a: &RestoreArgs) -> i64 {
    (a.orphan_lease_ttl.as_secs() as i64).max(1)
}

pub fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<i32> {
    if a.bump_revision.is_some_and(|n| n <= 0) {
        bail!("--bump-revision must be a positive number of revisions");
    }
    if a.in_place || a.rollback {
        return in_place(g, a);
    }
    let (members, initial_cluster) = members(&a)?;
    let plan = Plan {
        initial_cluster,
        members,
        initial_cluster_token: a.initial_cluster_token.clone(),
        bump_revision: a.bump_revision,
        move_existing: a.move_existing,
        tool: Tool::find(a.etcdutl.as_deref())?,
    };
    let work_dir = plan.members[0]
        .data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (db, from, replayed) = database(g, &a, &work_dir)?;
    let restored = restore::restore(&db, &plan, replayed)?;
    if g.json {
        output::json(&json!({ "from": from, "restored": restored }))?;
    } else {
        for m in &restored.members {
            if let Some(aside) = &m.moved_aside {
                println!(
                    "moved the existing {} to {}",
                    m.data_dir.display(),
                    aside.display()
                );
            }
            println!("restored member {} into {}", m.name, m.data_dir.display());
        }
        println!(
            "from {from}: revision {}, {} keys, {} captured changes replayed{}",
            restored.revision,
            restored.keys,
            restored.changes_applied,
            if a.bump_revision.is_some() {
                " (bumped; compaction scheduled at that revision)"
            } else {
                ""
            }
        );
        println!(
            "start each member with the same --name, --initial-cluster and \
             --initial-cluster-token, and --data-dir pointing at its directory"
        );
    }
    Ok(exit::OK)
}

/// The database to restore, verified: a snapshot, a file, or a point in time; with
/// the revision bumped if asked.
fn database(g: &GlobalArgs, a: &RestoreArgs, work_dir: &Path) -> Result<(Database, String, u64)> {
    let point = match (a.to_revision, a.to_time) {
        (Some(r), _) => Some(Point::Revision(r)),
        (None, Some(t)) => Some(Point::Time(t)),
        (None, None) => None,
    };
    Ok(match (point, &a.snapshot) {
        (Some(point), _) => point_in_time(g, a, point, work_dir)?,
        (None, Some(what)) => {
            let (db, from) = source(g, what, work_dir)?;
            match a.bump_revision {
                Some(n) => (
                    db.rewritten(&mut std::iter::empty(), Some(n), lease_ttl(&a))?
                        .0,
                    from,
                    0,
                ),
                None => (db, from, 0),
            }
        }
        (None, None) => bail!("name a snapshot, or give --to-revision or --to-time"),
    })
}

/// `--in-place` and `--rollback` on a kubeadm node.
fn in_place(g: &GlobalArgs, a: RestoreArgs) -> Result<i32> {
    let manifest = Manifest::read(&a.manifest)?;
    let data_dir = manifest.data_dir()?;
    let opts = a.connect.options();
    let waits = Waits {
        stop: a.wait,
        start: a.wait,
    };
    let action = if a.rollback {
        format!(
            "put back the data directory of the last in-place restore of {}",
            data_dir.display()
        )
    } else {
        format!(
            "stop etcd ({}), move {} aside and restore it from {}",
            a.manifest.display(),
            data_dir.display(),
            a.snapshot.as_deref().unwrap_or("the point in time")
        )
    };
    confirm(&action, a.yes)?;
    let quiet = g.json;
    let mut report = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    if a.rollback {
        let done = inplace::rollback(&manifest, &opts, &waits, &mut report)?;
        if g.json {
            output::json(&json!({ "rolled_back": done }))?;
        } else {
            println!(
                "rolled back: etcd runs on the previous data in {} ({} keys); the restored one is in {}",
                done.data_dir.display(),
                done.keys,
                done.moved_aside.display()
            );
        }
        return Ok(exit::OK);
    }
    let work_dir = data_dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    let (db, from, replayed) = database(g, &a, &work_dir)?;
    let tool = Tool::find(a.etcdutl.as_deref())?;
    let (restored, done) = inplace::restore(
        &manifest,
        &db,
        tool,
        a.bump_revision,
        replayed,
        &opts,
        &waits,
        a.whole_cluster,
        &mut report,
    )?;
    if g.json {
        output::json(&json!({ "from": from, "restored": restored, "in_place": done }))?;
    } else {
        println!(
            "etcd is back on {} from {from}: revision {}, {} keys (checked); the previous data              is in {}; undo with --rollback",
            done.data_dir.display(),
            restored.revision,
            done.keys,
            done.moved_aside.display()
        );
    }
    Ok(exit::OK)
}

/// Asks before changing a running node, unless `--yes`.
fn confirm(action: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("this will {action}; pass --yes to confirm (there is no terminal to ask on)");
    }
    eprint!("This will {action}.\nType `yes` to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing changed");
    }
    Ok(())
}

/// The members to restore, and the --initial-cluster they form.
fn members(a: &RestoreArgs) -> Result<(Vec<Member>, String)> {
    let cluster = a
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={}", a.name, a.initial_advertise_peer_urls));
    let data_dir = a.data_dir.clone().expect("clap requires --data-dir here");
    let all = restore::cluster_members(&cluster, &data_dir)?;
    if a.all_members {
        return Ok((all, cluster));
    }
    let Some(me) = all.iter().find(|m| m.name == a.name) else {
        bail!(
            "--name {} is not in --initial-cluster {cluster}: name this member, or pass \
             --all-members to restore them all",
            a.name
        );
    };
    Ok((
        vec![Member {
            name: a.name.clone(),
            data_dir,
            peer_urls: if a.initial_cluster.is_some() {
                me.peer_urls.clone()
            } else {
                a.initial_advertise_peer_urls.clone()
            },
        }],
        cluster,
    ))
}

/// The database to restore: a file, verified where it is, or a repository snapshot
/// exported next to the data directory and verified.
fn source(g: &GlobalArgs, what: &str, work_dir: &Path) -> Result<(Database, String)> {
    let path = Path::new(what);
    if path.is_file() {
        return Ok((Database::file(path)?, path.display().to_string()));
    }
    let repo = g.open().with_context(|| {
        format!("`{what}` is not a file; as a snapshot id it needs the repository")
    })?;
    let (id, snap) = records::find_of_kind(&repo, what, delta::FULL)?;
    let db = Database::exported(work_dir, &repo, &snap)
        .with_context(|| format!("reading snapshot {}", id.short()))?;
    Ok((db, format!("snapshot {}", id.short())))
}

/// The database as it was at `point`: the newest full snapshot before it, with the
/// captured changes up to the point replayed.
fn point_in_time(
    g: &GlobalArgs,
    a: &RestoreArgs,
    point: Point,
    work_dir: &Path,
) -> Result<(Database, String, u64)> {
    let repo = g.open()?;
    let timeline = Timeline::load(&repo, a.cluster_id.as_deref())?;
    let mut skipped = vec![];
    for route in timeline.routes(&repo, point)? {
        let base = route.base;
        let db = Database::exported(work_dir, &repo, &base.snapshot)
            .with_context(|| format!("reading snapshot {}", base.id.short()))?;
        let held = db.revision()?;
        if held > route.revision {
            // Written while that snapshot streamed: too late for this point.
            skipped.push(format!("{} (holds revision {held})", base.id.short()));
            continue;
        }
        let mut changes = pitr::changes(&repo, &route.runs, route.revision);
        let (db, done) = db.rewritten(&mut changes, a.bump_revision, lease_ttl(&a))?;
        let segments: usize = route.runs.iter().map(|r| r.segments.len()).sum();
        let leases = if done.leases_recreated > 0 {
            format!(
                "; {} leases granted after the snapshot re-created with a TTL of {}",
                done.leases_recreated,
                humantime::format_duration(a.orphan_lease_ttl)
            )
        } else {
            String::new()
        };
        let from = format!(
            "snapshot {} (revision {held}) and {segments} delta segments, to revision {}{leases}",
            base.id.short(),
            route.revision
        );
        return Ok((db, from, done.changes_applied));
    }
    bail!(
        "no full snapshot is old enough for this point: {}; {}",
        skipped.join(", "),
        timeline.describe()
    )
}
