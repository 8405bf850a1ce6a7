//! `ballast etcd watch`: continuous change capture into delta segments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::cli::context::LabelArgs;

use super::ConnectArgs;
use crate::cli::context::GlobalArgs;
use crate::cli::{exit, output};
use crate::etcd::watch::{self, CaptureOptions, Progress};

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Close a segment this long after its first change: the most a crash can lose
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    segment_interval: Duration,
    /// ... or once it holds this much (bytes, or with K/M/G suffix)
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    segment_size: usize,
    /// Stop once every change up to this revision is stored
    #[arg(long)]
    until_revision: Option<i64>,
    /// Stop after this long (default: run until SIGINT or SIGTERM)
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
    /// Take a full snapshot this often (segments depend on the newest one, so
    /// retention can let older chains go); `0s` never
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    full_every: Duration,
    #[command(flatten)]
    labels: LabelArgs,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.trim().to_ascii_uppercase() {
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1 << 10),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1 << 20),
        t if t.ends_with('G') => (t[..t.len() - 1].to_string(), 1 << 30),
        t => (t, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{s}` is not a size (e.g. 8M)"))
}

pub fn run(g: &GlobalArgs, a: WatchArgs) -> Result<i32> {
    let repo = g.open()?;
    let opts = a.connect.options();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        repo.store().block_on(async move {
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                stop.store(true, Ordering::SeqCst);
            });
        });
    }
    let cap = CaptureOptions {
        interval: a.segment_interval,
        bytes: a.segment_size,
        until_revision: a.until_revision,
        run_for: a.run_for,
        full_every: (!a.full_every.is_zero()).then_some(a.full_every),
        heartbeat: CaptureOptions::default_heartbeat(a.segment_interval),
        labels: a.labels.labels(),
    };
    let json = g.json;
    let summary = watch::capture(&repo, &opts, &cap, stop, &mut |p| {
        if json {
            // One JSON object per line, as things happen.
            println!(
                "{}",
                serde_json::to_string(&p).expect("progress serializes")
            );
            return;
        }
        match p {
            Progress::FullSnapshot {
                id,
                revision,
                reason,
            } => println!(
                "full snapshot {} at revision {revision}: {reason}",
                id.short()
            ),
            Progress::Watching {
                endpoint,
                from_revision,
            } => println!("watching {endpoint} from revision {from_revision}"),
            Progress::Segment { id, info, bytes } => println!(
                "segment {}: revisions {}-{}, {} changes, {}",
                id.short(),
                info.start_revision,
                info.end_revision,
                info.changes,
                output::bytes(bytes)
            ),
            Progress::Reconnecting {
                detail,
                resume_from,
            } => eprintln!("etcd: {detail}; reconnecting, resuming from revision {resume_from}"),
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "summary": summary }))?
        );
    } else {
        println!(
            "stopped: {} segments, {} changes, {} full snapshots, stored through revision {}",
            summary.segments, summary.changes, summary.full_snapshots, summary.last_revision
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(super::parse_size("8M"), Ok(8 << 20));
        assert_eq!(super::parse_size("512k"), Ok(512 << 10));
        assert_eq!(super::parse_size("100"), Ok(100));
        assert!(super::parse_size("lots").is_err());
    }
}
