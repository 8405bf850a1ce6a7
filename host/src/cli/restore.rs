//! `ballast restore SNAPSHOT --target DIR`; `restore app` is in `app.rs`, `restore
//! kube` in `kube/restore.rs`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::context::GlobalArgs;
use super::exit;
use super::output::{self, bytes};
use crate::files::restore::{self, Progress, RestoreOptions};
use crate::repo::snapshot;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RestoreArgs {
    #[command(subcommand)]
    app: Option<RestoreCommand>,
    /// Snapshot id (or unique prefix, or `latest`)
    #[arg(required = true)]
    snapshot: Option<String>,
    /// Directory to restore into (created if missing; existing files are overwritten)
    #[arg(long, short, required = true)]
    target: Option<PathBuf>,
    /// Restore only paths matching this glob, and everything below them; repeatable
    #[arg(long, short)]
    include: Vec<String>,
    /// Packs read at the same time
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

#[derive(clap::Subcommand)]
enum RestoreCommand {
    /// Load an application backup into a target through its plugin
    App(super::app::RestoreAppArgs),
    /// Restore the objects of a Kubernetes backup into a cluster, in dependency
    /// order, after a pre-flight
    Kube(super::kube::restore::RestoreKubeArgs),
}

pub fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<i32> {
    match a.app {
        Some(RestoreCommand::App(app)) => return super::app::restore(g, app),
        Some(RestoreCommand::Kube(k)) => return super::kube::restore::run(g, k),
        None => {}
    }
    let (Some(spec), Some(target)) = (a.snapshot, a.target) else {
        anyhow::bail!("restore needs a SNAPSHOT and --target DIR");
    };
    let repo = g.open()?;
    let (id, snap) = snapshot::find(&repo, &spec)?;
    let opts = RestoreOptions {
        target,
        include: a.include,
        threads: a.threads,
    };
    let progress = Progress::default();
    let summary = std::thread::scope(|s| {
        let bar = output::bar(
            g.progress(),
            Some(snap.summary.total_bytes.max(1)),
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        );
        let work = s.spawn(|| restore::restore(&repo, &snap, &opts, &progress));
        while !work.is_finished() {
            bar.set_length(progress.bytes_total.load(Ordering::Relaxed).max(1));
            bar.set_position(progress.bytes_written.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
        work.join().expect("restore thread")
    })?;
    if g.json {
        output::json(
            &json!({ "snapshot_id": id.to_string(), "summary": summary, "requests": repo.store().requests() }),
        )?;
    } else {
        println!(
            "restored snapshot {} into {}: {} files, {} directories, {} in {:.1}s ({} packs read)",
            id.short(),
            opts.target.display(),
            summary.files,
            summary.dirs,
            bytes(summary.bytes),
            summary.seconds,
            summary.packs_read
        );
        for e in &summary.errors {
            println!("error: {}: {}", e.path, e.message);
        }
    }
    if summary.errors.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "error: {} paths were not restored completely (see above)",
            summary.errors.len()
        );
        Ok(exit::FAILURE)
    }
}
