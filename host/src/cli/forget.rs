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
    /// Apply the policy separately to each group of these fields: host, tags,
    /// source; `auto` is all three, but the host only for path backups (an etcd
    /// snapshot's source is its cluster, an application backup's its target, whichever
    /// machine or pod took it)
    #[arg(long, default_value = "auto")]
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
    let all_snapshots = all.clone();
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
    let warnings = coverage_warnings(&all_snapshots, &decisions);
    for w in &warnings {
        if !g.json {
            eprintln!("warning: {w}");
        }
    }
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
            &serde_json::json!({ "dry_run": a.dry_run, "decisions": decisions, "prune": pruned, "warnings": warnings }),
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

/// Where forgetting would open holes in the point-in-time coverage of an etcd cluster
/// inside the range it keeps: the delta segments of a full snapshot go with it, so
/// keeping one full snapshot a day out of hourly ones keeps an hour of every day.
fn coverage_warnings(
    all: &[(SnapshotId, crate::repo::snapshot::Snapshot)],
    decisions: &[crate::repo::forget::Decision],
) -> Vec<String> {
    use crate::etcd::pitr;
    let removed: std::collections::HashSet<&str> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    let kept: Vec<(SnapshotId, crate::repo::snapshot::Snapshot)> = all
        .iter()
        .filter(|(id, _)| !removed.contains(id.to_string().as_str()))
        .cloned()
        .collect();
    let clusters: std::collections::BTreeSet<String> = all
        .iter()
        .filter_map(|(id, s)| crate::etcd::delta::Full::of(id, s).map(|f| f.cluster_id))
        .collect();
    let mut out = vec![];
    for cluster in clusters {
        let holes = pitr::holes(
            &pitr::coverage(all, &cluster),
            &pitr::coverage(&kept, &cluster),
        );
        if holes.is_empty() {
            continue;
        }
        let total: i64 = holes.iter().map(|(a, b)| b - a).sum();
        let show = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .map(|t| output::short_time(&t))
                .unwrap_or_default()
        };
        out.push(format!(
            "etcd cluster {cluster}: point-in-time restore loses {} stretch(es) inside the range it keeps, {} in all (first: {} to {}): the delta segments of the full snapshots forgotten go with them. Keep them with --keep-within, or keep full snapshots as often as they are taken (e.g. --keep-hourly with --full-every 1h)",
            holes.len(),
            humantime::format_duration(std::time::Duration::from_millis(total as u64)),
            show(holes[0].0),
            show(holes[0].1)
        ));
    }
    out
}
