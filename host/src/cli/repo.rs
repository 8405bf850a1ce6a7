//! `ballast repo init|check|stats|prune|repair-index|unlock`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::context::{new_password, GlobalArgs};
use super::exit;
use super::output::{self, bytes};
use crate::repo::check::{self, CheckOptions};
use crate::repo::keys::Secret;
use crate::repo::lease::{self, Lease};
use crate::repo::prune::{self, PruneOptions};
use crate::repo::Repository;
use crate::store::{Location, Store, StoreOptions};

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a repository at an empty location
    Init(InitArgs),
    /// Verify the repository: structure, or every byte with --read-data
    Check(CheckArgs),
    /// Show sizes and counts
    Stats,
    /// Remove data no snapshot references (two-phase: mark, then delete after --grace)
    Prune(PruneArgs),
    /// Rebuild the index from the packs' trailers
    RepairIndex,
    /// End the lease of a prune, forget or repair-index whose process is gone
    Unlock,
}

#[derive(Args)]
pub struct InitArgs {
    /// Make the first key a new key file written to this path (instead of a password)
    #[arg(long, value_name = "PATH")]
    new_key_file: Option<PathBuf>,
    /// A label for the first key (who or what uses it)
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob (decrypt and hash)
    #[arg(long)]
    read_data: bool,
    /// Read only some packs: a random share (`5%`) or a part (`1/10`: runs 1/10 to
    /// 10/10 read every pack once between them)
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data", value_parser = clap::value_parser!(crate::repo::check::Subset))]
    read_data_subset: Option<crate::repo::check::Subset>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// How long data stays marked before it is deleted; must exceed your longest backup
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace: std::time::Duration,
    /// Repack packs with more than this percentage of unreferenced bytes (0-100)
    #[arg(long, default_value_t = 25.0, value_parser = percent)]
    max_unused: f64,
    /// Only report what would be done
    #[arg(long)]
    dry_run: bool,
    /// Give up an unreadable snapshot record (id or a prefix of at least 8 digits):
    /// prune refuses to run while a record it cannot read is not named here
    #[arg(long, value_name = "ID")]
    forget_unreadable: Vec<String>,
}

/// A percentage between 0 and 100.
fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not a percentage between 0 and 100"));
    }
    Ok(v)
}

pub fn run(g: &GlobalArgs, cmd: RepoCommand) -> Result<i32> {
    match cmd {
        RepoCommand::Init(a) => init(g, a),
        RepoCommand::Check(a) => check(g, a),
        RepoCommand::Stats => stats(g),
        RepoCommand::Prune(a) => prune(g, a),
        RepoCommand::RepairIndex => repair_index(g),
        RepoCommand::Unlock => unlock(g),
    }
}

fn init(g: &GlobalArgs, a: InitArgs) -> Result<i32> {
    let location = g.location()?;
    if let Location::Local(path) = &location {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let options = StoreOptions::parse(&g.store_options).map_err(anyhow::Error::msg)?;
    let store = Store::connect(&location, &options)?;
    let secret = match &a.new_key_file {
        Some(path) => {
            let (secret, text) = Secret::new_key_file();
            write_private(path, text.as_bytes())?;
            secret
        }
        None => match &g.key_file {
            Some(path) => Secret::read_key_file(path).map_err(anyhow::Error::msg)?,
            None => new_password(
                ("BALLAST_PASSWORD", "BALLAST_PASSWORD_FILE"),
                g.password_file.as_deref(),
            )?,
        },
    };
    let repo = Repository::init(store, &secret, &a.label)?;
    if g.json {
        output::json(&json!({ "location": location.to_string(), "id": repo.config().id }))?;
    } else {
        println!("created repository {} at {location}", repo.config().id);
        println!("keep the password (or key file) safe: without it the data cannot be read");
    }
    Ok(exit::OK)
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create the key file {} (it must not exist yet)",
                path.display()
            )
        })?;
    f.write_all(data)?;
    Ok(())
}

fn check(g: &GlobalArgs, a: CheckArgs) -> Result<i32> {
    let repo = g.open()?;
    let progress = check::Progress::default();
    let report = std::thread::scope(|s| {
        let reads = a.read_data || a.read_data_subset.is_some();
        let bar = output::bar(g.progress() && reads, None, "{spinner} reading packs {msg}");
        let work = s.spawn(|| {
            check::check(
                &repo,
                &CheckOptions {
                    read_data: a.read_data,
                    subset: a.read_data_subset,
                },
                &progress,
            )
        });
        while !work.is_finished() {
            bar.set_message(format!(
                "{}/{}",
                progress.packs_done.load(Ordering::Relaxed),
                progress.packs_total.load(Ordering::Relaxed)
            ));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
        work.join().expect("check thread")
    })?;
    if g.json {
        output::json(&report)?;
    } else {
        println!(
            "{} snapshots, {} packs, {} index files, {} blobs{}",
            report.snapshots,
            report.packs,
            report.index_files,
            report.blobs,
            if a.read_data || a.read_data_subset.is_some() {
                format!(
                    ", {} packs ({}) read and verified",
                    report.packs_read,
                    bytes(report.bytes_read)
                )
            } else {
                String::new()
            }
        );
        if !report.unindexed_packs.is_empty() {
            println!(
                "note: {} packs are not indexed yet (left by an interrupted or running backup); the next backup reuses them, prune removes them",
                report.unindexed_packs.len()
            );
        }
        for p in &report.problems {
            let affected = if p.snapshots.is_empty() {
                "no snapshot affected".to_string()
            } else {
                format!("affects snapshots {}", p.snapshots.join(", "))
            };
            println!("error: {}: {} ({affected})", p.what, p.detail);
        }
        if report.ok() {
            println!("no problems found");
        } else {
            println!("{} problems found", report.problems.len());
        }
    }
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::CHECK_FAILED
    })
}

fn stats(g: &GlobalArgs) -> Result<i32> {
    let repo = g.open()?;
    let st = check::stats(&repo)?;
    if g.json {
        output::json(&st)?;
    } else {
        let mut t = output::table(&["", ""]);
        t.add_row(vec!["snapshots".into(), st.snapshots.to_string()]);
        t.add_row(vec![
            "size of all snapshots".into(),
            bytes(st.snapshot_bytes),
        ]);
        t.add_row(vec![
            "unique data (before compression)".into(),
            bytes(st.raw_bytes),
        ]);
        t.add_row(vec!["stored in packs".into(), bytes(st.pack_bytes)]);
        t.add_row(vec!["packs".into(), st.packs.to_string()]);
        t.add_row(vec![
            "blobs (data / tree)".into(),
            format!("{} / {}", st.data_blobs, st.tree_blobs),
        ]);
        t.add_row(vec!["index files".into(), st.index_files.to_string()]);
        if st.pack_bytes > 0 {
            t.add_row(vec![
                "saving".into(),
                format!("{:.1}x", st.snapshot_bytes as f64 / st.pack_bytes as f64),
            ]);
        }
        println!("{t}");
    }
    Ok(exit::OK)
}

fn prune(g: &GlobalArgs, a: PruneArgs) -> Result<i32> {
    let repo = g.open()?;
    let opts = PruneOptions {
        grace: a.grace,
        max_unused: a.max_unused / 100.0,
        dry_run: a.dry_run,
        forget_unreadable: a.forget_unreadable,
    };
    let lease = Lease::acquire(&repo, "prune")?;
    let r = prune::prune(&repo, &lease, &opts)?;
    lease.release()?;
    if g.json {
        output::json(&r)?;
    } else {
        let would = if r.dry_run { "would be " } else { "" };
        println!(
            "{} snapshots reference {} blobs in {} packs",
            r.snapshots, r.referenced_blobs, r.packs
        );
        println!(
            "deleted {} packs ({}) marked earlier; {} marked packs were referenced again and kept",
            r.packs_deleted,
            bytes(r.bytes_deleted),
            r.packs_rescued
        );
        println!(
            "{} packs {would}marked now ({}; {} of them repacked first); deleted by a prune after {}",
            r.packs_marked,
            bytes(r.bytes_marked),
            r.packs_repacked,
            humantime::format_duration(a.grace)
        );
        if r.packs_waiting > 0 {
            println!(
                "{} packs marked earlier wait for the grace period",
                r.packs_waiting
            );
        }
        if r.packs_young_unindexed > 0 {
            println!(
                "{} packs of backups still running (no index lists them yet, written within the grace period) left alone",
                r.packs_young_unindexed
            );
        }
        println!(
            "index files: {} -> {}",
            r.index_files_before, r.index_files_after
        );
        if !r.packs_kept_unreadable.is_empty() {
            println!(
                "warning: {} unindexed packs due for deletion were kept: their trailers cannot be read (see `ballast repo check --read-data`)",
                r.packs_kept_unreadable.len()
            );
        }
        for id in &r.records_forgotten {
            println!("removed the unreadable snapshot record {id}");
        }
    }
    Ok(exit::OK)
}

fn unlock(g: &GlobalArgs) -> Result<i32> {
    let repo = g.open()?;
    let ended = lease::unlock(&repo)?;
    if g.json {
        output::json(&json!({
            "ended": ended.iter().map(|h| json!({
                "operation": h.record.operation,
                "holder": h.record.holder,
                "since": h.record.acquired,
                "expires": h.record.expires,
            })).collect::<Vec<_>>(),
        }))?;
    } else if ended.is_empty() {
        println!("no lease was held; the repository is free");
    } else {
        for h in &ended {
            println!(
                "ended the lease of {} by {}@{} (pid {}), held since {}; if that process still runs, it notices at its next renewal (within 30 s) and stops before the deletion after that",
                h.record.operation,
                h.record.holder.user,
                h.record.holder.host,
                h.record.holder.pid,
                output::short_time(&h.record.acquired)
            );
        }
    }
    Ok(exit::OK)
}

fn repair_index(g: &GlobalArgs) -> Result<i32> {
    let repo = g.open()?;
    let lease = Lease::acquire(&repo, "repair-index")?;
    let (n, unreadable) = check::repair_index(&repo, &lease)?;
    lease.release()?;
    if g.json {
        output::json(&json!({ "packs_indexed": n, "unreadable_packs": unreadable }))?;
    } else {
        println!("index rebuilt from {n} packs");
        for u in &unreadable {
            println!("warning: pack {u}");
        }
    }
    Ok(if unreadable.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
