//! `ballast snapshots`, `ballast ls`, `ballast diff`: looking at what is stored.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::context::GlobalArgs;
use super::exit;
use super::output::{self, bytes};
use crate::files::{diff as treediff, ls as listing};
use crate::repo::snapshot::{self, Snapshot};

/// Which snapshots a command looks at.
#[derive(Args)]
pub struct Filter {
    /// Only snapshots with this tag; repeatable (all must match)
    #[arg(long)]
    tag: Vec<String>,
    /// Only snapshots from this host
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots of this source kind (path, stream, ...)
    #[arg(long)]
    kind: Option<String>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.tag.iter().all(|t| s.tags.contains(t))
            && self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.kind.as_ref().is_none_or(|k| &s.source.kind == k)
    }
}

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: Filter,
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// List below this path of the snapshot only
    path: Option<String>,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older snapshot
    a: String,
    /// The newer snapshot
    b: String,
}

pub fn snapshots(g: &GlobalArgs, a: SnapshotsArgs) -> Result<i32> {
    let repo = g.open()?;
    let list: Vec<_> = snapshot::list(&repo)?
        .into_iter()
        .filter(|(_, s)| a.filter.matches(s))
        .collect();
    if g.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| json!({ "id": id.to_string(), "snapshot": s }))
            .collect();
        return output::json(&v).map(|_| exit::OK);
    }
    let mut t = output::table(&[
        "id", "time", "host", "kind", "tags", "source", "size", "added",
    ]);
    for (id, s) in &list {
        t.add_row(vec![
            id.short(),
            output::short_time(&s.time),
            s.host.clone(),
            s.source.kind.clone(),
            s.tags.join(","),
            shown_source(s),
            bytes(s.summary.total_bytes),
            bytes(s.summary.bytes_stored),
        ]);
    }
    println!("{t}");
    println!("{} snapshots", list.len());
    Ok(exit::OK)
}

/// The source column: paths, and for a Kubernetes backup the cluster it came from
/// (its API server and context) before what it took.
fn shown_source(s: &snapshot::Snapshot) -> String {
    let cluster = &s.source.meta.get("cluster");
    match cluster.and_then(|c| c["server"].as_str()) {
        Some(server) => {
            let context = cluster.and_then(|c| c["context"].as_str()).unwrap_or("?");
            let scope = s.source.paths.get(1).map(String::as_str).unwrap_or("all");
            format!("{server} ({context}) {scope}")
        }
        None => s.source.paths.join(" "),
    }
}

pub fn ls(g: &GlobalArgs, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let (_, snap) = snapshot::find(&repo, &a.snapshot)?;
    let entries = listing::list(&repo, &snap, a.path.as_deref().unwrap_or(""))?;
    if g.json {
        return output::json(&entries).map(|_| exit::OK);
    }
    for e in entries {
        let target = e.target.map(|t| format!(" -> {t}")).unwrap_or_default();
        println!(
            "{} {:>5} {:>5} {:>10} {} {}{target}",
            e.mode,
            e.uid,
            e.gid,
            e.size,
            &e.mtime[..19.min(e.mtime.len())],
            e.path
        );
    }
    Ok(exit::OK)
}

pub fn diff(g: &GlobalArgs, a: DiffArgs) -> Result<i32> {
    let repo = g.open()?;
    let (ida, sa) = snapshot::find(&repo, &a.a)?;
    let (idb, sb) = snapshot::find(&repo, &a.b)?;
    let changes = treediff::diff(&repo, &sa.root, &sb.root)?;
    if g.json {
        return output::json(
            &json!({ "from": ida.to_string(), "to": idb.to_string(), "changes": changes }),
        )
        .map(|_| exit::OK);
    }
    for c in &changes {
        let what = if c.what.is_empty() {
            String::new()
        } else {
            format!("  ({})", c.what.join(", "))
        };
        println!("{} {}{what}", c.change.sign(), c.path);
    }
    let count = |k: treediff::Change| changes.iter().filter(|c| c.change == k).count();
    println!(
        "{} added, {} removed, {} modified",
        count(treediff::Change::Added),
        count(treediff::Change::Removed),
        count(treediff::Change::Modified)
    );
    Ok(exit::OK)
}
