//! `ballast backup app`, `ballast restore app`, `ballast verify app`: application
//! dumps through a plugin, into and out of the repository.

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::context::GlobalArgs;
use super::exit;
use super::output::{self, bytes};
use super::plugin::{report, PluginArgs};
use crate::plugins::app;
use crate::plugins::job::Ran;
use crate::repo::snapshot;

#[derive(Args)]
pub struct BackupAppArgs {
    /// The plugin: a catalog name or a path to a .wasm component
    #[arg(long)]
    plugin: String,
    /// The policy target to back up
    #[arg(long)]
    target: String,
    #[command(flatten)]
    labels: super::context::LabelArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct RestoreAppArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// The policy target to load the dump into
    #[arg(long)]
    target: String,
    /// The plugin (default: the one that made the backup, from the catalog)
    #[arg(long)]
    plugin: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct VerifyAppArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// The target a plugin may run its client programs with while it checks the dump
    /// (they do not connect); default: the one the dump came from
    #[arg(long)]
    target: Option<String>,
    /// The plugin (default: the one that made the backup, from the catalog)
    #[arg(long)]
    plugin: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn backup(g: &GlobalArgs, a: BackupAppArgs) -> Result<i32> {
    let repo = g.open()?;
    let rt = a.plugins.runtime()?;
    let (loaded, grants) = a.plugins.load(&rt, &a.plugin)?;
    let opts = a.plugins.job_options(g, "backup-app", Some(&a.target))?;
    let outcome = app::backup(
        &rt,
        &repo,
        &loaded,
        grants,
        &a.target,
        &opts,
        a.labels.labels(),
    )?;
    let s = &outcome.sequence;
    let hooks = s.hooks();
    match &outcome.saved {
        Some((id, snap)) if g.json => {
            output::json(&json!({"snapshot_id": id.to_string(), "snapshot": snap}))?;
        }
        Some((id, snap)) => {
            report(g, &loaded, &outcome.context, &hooks)?;
            let m = &snap.summary;
            println!(
                "snapshot {} saved: {} of {} from {} ({} added, {} stored) in {:.1}s",
                id.short(),
                bytes(m.total_bytes),
                loaded.info.name,
                a.target,
                bytes(m.bytes_new),
                bytes(m.bytes_stored),
                m.seconds
            );
        }
        None => {
            report(g, &loaded, &outcome.context, &hooks)?;
            let e = s.error().map(|e| e.to_string()).unwrap_or_default();
            if let Some(sig) = s.interrupted {
                eprintln!(
                    "error: the backup of {} was stopped; no snapshot was recorded: {e}",
                    a.target
                );
                return Ok(128 + sig);
            }
            bail!(
                "the backup of {} failed; no snapshot was recorded: {e}",
                a.target
            );
        }
    }
    Ok(exit::OK)
}

/// The plugin to replay a snapshot with: the one given, else the recorded one by
/// name from the catalog (a different build than the recorded one is reported).
fn plugin_for(
    plugins: &PluginArgs,
    rt: &crate::plugins::Runtime,
    snap: &snapshot::Snapshot,
    given: Option<&str>,
) -> Result<(crate::plugins::Loaded, crate::plugins::policy::Grants)> {
    let (name, digest) = app::recorded_plugin(snap)?;
    if given.is_none() && !crate::plugins::policy::valid_plugin_name(&name) {
        bail!("the snapshot names plugin {name:?}, which is not a catalog name; choose one with --plugin");
    }
    let (loaded, grants) = plugins.load(rt, given.unwrap_or(&name))?;
    if loaded.sha256 != digest {
        eprintln!(
            "note: the backup was made by {name} with sha256 {digest}; using {}",
            loaded.describe()
        );
    }
    Ok((loaded, grants))
}

pub fn restore(g: &GlobalArgs, a: RestoreAppArgs) -> Result<i32> {
    let repo = g.open()?;
    let (id, snap) = snapshot::find(&repo, &a.snapshot)?;
    let rt = a.plugins.runtime()?;
    let (loaded, grants) = plugin_for(&a.plugins, &rt, &snap, a.plugin.as_deref())?;
    let opts = a.plugins.job_options(g, "restore-app", Some(&a.target))?;
    let (result, ctx) = app::replay(&rt, &repo, &snap, &loaded, grants, Some(&a.target), &opts)?;
    let failed = result.is_err();
    report(g, &loaded, &ctx, &[("restore", Ran::from(&result))])?;
    if failed {
        return Ok(exit::FAILURE);
    }
    if !g.json {
        println!(
            "restored snapshot {} into {} with {}",
            id.short(),
            a.target,
            loaded.describe()
        );
    }
    Ok(exit::OK)
}

pub fn verify(g: &GlobalArgs, a: VerifyAppArgs) -> Result<i32> {
    let repo = g.open()?;
    let (id, snap) = snapshot::find(&repo, &a.snapshot)?;
    let rt = a.plugins.runtime()?;
    let (loaded, grants) = plugin_for(&a.plugins, &rt, &snap, a.plugin.as_deref())?;
    // A plugin that runs a client program to check a dump needs a target for it (the
    // program never connects): the one the dump came from, unless told otherwise.
    let recorded = snap
        .source
        .meta
        .get("target")
        .and_then(|t| t.as_str())
        .map(String::from);
    let target = a.target.clone().or(recorded);
    let opts = a.plugins.job_options(g, "verify-app", target.as_deref())?;
    let (result, ctx) = app::replay(&rt, &repo, &snap, &loaded, grants, None, &opts)?;
    let failed = result.is_err();
    report(g, &loaded, &ctx, &[("verify", Ran::from(&result))])?;
    if failed {
        return Ok(exit::FAILURE);
    }
    if !g.json {
        println!("snapshot {} verified by {}", id.short(), loaded.describe());
    }
    Ok(exit::OK)
}
