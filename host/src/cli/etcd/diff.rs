//! `ballast etcd diff`: the keys created, updated and deleted between two revisions.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::cli::context::GlobalArgs;
use crate::cli::{exit, output};
use crate::etcd::pitr::{self, KeyChange, Timeline};

#[derive(Args)]
pub struct DiffArgs {
    /// The earlier revision
    #[arg(long)]
    from: i64,
    /// The later revision
    #[arg(long)]
    to: i64,
    /// Only keys under this prefix
    #[arg(long, default_value = "")]
    prefix: String,
    /// The cluster whose history to use (default: that of the newest etcd snapshot)
    #[arg(long)]
    cluster_id: Option<String>,
}

pub fn run(g: &GlobalArgs, a: DiffArgs) -> Result<i32> {
    let repo = g.open()?;
    let timeline = Timeline::load(&repo, a.cluster_id.as_deref())?;
    let keys = pitr::diff(&repo, &timeline, a.from, a.to, a.prefix.as_bytes())?;
    let count = |c| keys.iter().filter(|k| k.change == c).count();
    let (created, updated, deleted) = (
        count(KeyChange::Created),
        count(KeyChange::Updated),
        count(KeyChange::Deleted),
    );
    if g.json {
        output::json(&json!({
            "from": a.from, "to": a.to, "prefix": a.prefix,
            "created": created, "updated": updated, "deleted": deleted,
            "keys": keys,
        }))?;
    } else {
        for k in &keys {
            let mark = match k.change {
                KeyChange::Created => "+",
                KeyChange::Updated => "M",
                KeyChange::Deleted => "-",
            };
            println!("{mark} {} (revision {})", k.key, k.revision);
        }
        println!(
            "revisions {} to {}: {created} created, {updated} updated, {deleted} deleted",
            a.from, a.to
        );
    }
    Ok(exit::OK)
}
