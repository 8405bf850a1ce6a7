//! `ballast backup path DIR...`; `backup app` is in `app.rs`, `backup kube` in `kube.rs`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::context::GlobalArgs;
use super::exit;
use super::output::{self, bytes};
use crate::files::backup::{self, BackupOptions, Parent, Progress};

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back up directories or files (a mounted volume, a host path)
    Path(PathArgs),
    /// Dump an application through a plugin: quiesce, dump, unquiesce
    App(super::app::BackupAppArgs),
    /// Capture Kubernetes objects through the API (the whole cluster, or namespaces)
    Kube(super::kube::BackupKubeArgs),
}

#[derive(Args)]
pub struct PathArgs {
    /// Directories or files to back up
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Leave out paths matching this glob (`*.tmp` matches names; `/a/b/**` whole paths); repeatable
    #[arg(short, long, value_name = "GLOB")]
    exclude: Vec<String>,
    #[command(flatten)]
    labels: super::context::LabelArgs,
    /// Compare against this snapshot instead of the latest one of the same paths
    #[arg(long, conflicts_with = "no_parent")]
    parent: Option<String>,
    /// Do not compare against any earlier snapshot
    #[arg(long)]
    no_parent: bool,
    /// Read every file, even those the parent snapshot shows unchanged
    #[arg(long)]
    force_reread: bool,
    /// Stay on the file system of each given path
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Files read at the same time (default: one per core, at least 2)
    #[arg(long, default_value_t = 0)]
    readers: usize,
}

pub fn run(g: &GlobalArgs, cmd: BackupCommand) -> Result<i32> {
    match cmd {
        BackupCommand::Path(a) => path(g, a),
        BackupCommand::App(a) => super::app::backup(g, a),
        BackupCommand::Kube(a) => super::kube::backup(g, a),
    }
}

fn path(g: &GlobalArgs, a: PathArgs) -> Result<i32> {
    let repo = g.open()?;
    let opts = BackupOptions {
        paths: a.paths,
        excludes: a.exclude,
        tags: a.labels.tag,
        parent: match (a.no_parent, a.parent) {
            (true, _) => Parent::None,
            (_, Some(id)) => Parent::Id(id),
            _ => Parent::Latest,
        },
        force_reread: a.force_reread,
        one_file_system: a.one_file_system,
        readers: a.readers,
        host: a.labels.host,
    };
    let progress = Progress::default();
    let outcome = std::thread::scope(|s| {
        let bar = output::bar(g.progress(), None, "{spinner} {msg}");
        let work = s.spawn(|| backup::backup(&repo, &opts, &progress));
        let started = std::time::Instant::now();
        while !work.is_finished() {
            let read = progress.bytes_read.load(Ordering::Relaxed);
            bar.set_message(format!(
                "{} files, {} read, {} seen, {}/s",
                progress.files.load(Ordering::Relaxed),
                bytes(read),
                bytes(progress.bytes_seen.load(Ordering::Relaxed)),
                bytes((read as f64 / started.elapsed().as_secs_f64().max(0.001)) as u64)
            ));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
        work.join().expect("backup thread")
    })?;
    let s = &outcome.snapshot;
    let m = &s.summary;
    if g.json {
        output::json(&json!({
            "snapshot_id": outcome.id.to_string(),
            "snapshot": s,
            "requests": repo.store().requests(),
        }))?;
    } else {
        println!("snapshot {} saved", outcome.id.short());
        println!(
            "  files: {} new, {} changed, {} unmodified; {} directories",
            m.files_new, m.files_changed, m.files_unmodified, m.dirs
        );
        println!(
            "  read {} of {}; added {} ({} stored) in {} packs",
            bytes(m.bytes_read),
            bytes(m.total_bytes),
            bytes(m.bytes_new),
            bytes(m.bytes_stored),
            m.packs_uploaded
        );
        println!(
            "  took {:.1}s ({}/s)",
            m.seconds,
            bytes((m.total_bytes as f64 / m.seconds.max(0.001)) as u64)
        );
        if !s.warnings.is_empty() {
            println!("  {} warnings:", s.warnings.len());
            for w in &s.warnings {
                println!("    {}: {}", w.path, w.message);
            }
        }
    }
    let unreadable = s
        .warnings
        .iter()
        .any(|w| !w.message.starts_with("changed while"));
    Ok(if unreadable { exit::PARTIAL } else { exit::OK })
}
