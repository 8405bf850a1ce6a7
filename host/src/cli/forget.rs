//! `ballast forget --keep-...`: remove snapshots by a retention policy.

use anyhow::{bail, Result};
use clap::Args;

use super::context::GlobalArgs;
use super::exit;
use super::output;
use super::snapshots::Filter;
use crate::repo::forget::{decide_all, GroupBy, Policy};
use crate::repo::lease::Lease;
use crate::repo::prune::{self, PruneOptions};
use crate::repo::snapshot::{self, SnapshotId};

#[derive(Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this (e.g. 7d, 36h) relative to the newest
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_within: Option<std::time::Duration>,
    #[command(flatten)]
    filter: Filter,
    /// Apply the policy separately to each group of these fields
    #[arg(long, default_value = "host,tags,source")]
    group_by: String,
    /// Show what would be removed, remove nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Run `repo prune` afterwards (with the default grace period)
    #[arg(long)]
    prune: bool,
}

pub fn run(g: &GlobalArgs, a: ForgetArgs) -> Result<i32> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
    };
    if policy.is_empty() {
        bail!("no --keep-* rule given; refusing to forget every snapshot (use e.g. --keep-last 1)");
    }
    let group_by = GroupBy::parse(&a.group_by).map_err(anyhow::Error::msg)?;
    let repo = g.open()?;
    let lease = if a.dry_run {
        None
    } else {
        Some(Lease::acquire(&repo, "forget")?)
    };
    let all = snapshot::list(&repo)?;
    let existing: std::collections::HashSet<SnapshotId> = all.iter().map(|(id, _)| *id).collect();
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.filter.matches(s))
        .collect();
    let decisions = decide_all(
        &policy,
        group_by,
        &snaps,
        |id| existing.contains(id),
        &jiff::tz::TimeZone::system(),
    );
    let mut removed = 0;
    if let Some(lease) = &lease {
        for d in decisions.iter().filter(|d| !d.keep) {
            let id: SnapshotId = d.id.parse()?;
            lease.check()?;
            repo.store().delete(&snapshot::key(&id))?;
            removed += 1;
        }
    }
    let pruned = match (&lease, a.prune) {
        (Some(lease), true) => Some(prune::prune(&repo, lease, &PruneOptions::default())?),
        _ => None,
    };
    if let Some(lease) = lease {
        lease.release()?;
    }
    if g.json {
        output::json(
            &serde_json::json!({ "dry_run": a.dry_run, "decisions": decisions, "prune": pruned }),
        )?;
    } else {
        let mut t = output::table(&["id", "time", "group", "action", "reasons"]);
        for d in &decisions {
            let action = match (d.keep, a.dry_run) {
                (true, _) => "keep",
                (false, true) => "would remove",
                (false, false) => "removed",
            };
            t.add_row(vec![
                d.id[..8].to_string(),
                output::short_time(&d.time),
                d.group.clone(),
                action.into(),
                d.reasons.join(","),
            ]);
        }
        println!("{t}");
        let n = decisions.iter().filter(|d| !d.keep).count();
        if a.dry_run {
            println!("{n} snapshots would be removed (dry run)");
        } else {
            println!("{removed} snapshots removed; run `ballast repo prune` to free their data");
        }
    }
    if let (Some(r), false) = (&pruned, g.json) {
        println!(
            "prune: {} packs marked, {} deleted",
            r.packs_marked, r.packs_deleted
        );
    }
    Ok(exit::OK)
}
