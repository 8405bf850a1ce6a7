//! `ballast verify`: check backups without restoring them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::context::GlobalArgs;
use super::{exit, output, Usage};
use crate::repo::check::Subset;
use crate::verify::{self, Freshness, Options, Severity};

#[derive(Subcommand)]
pub enum VerifyCommand {
    /// Have the plugin that made an application backup check its dump
    App(super::app::VerifyAppArgs),
    /// Everything the repository holds: each schedule's (or source's) newest backup
    /// against its interval, the newest etcd snapshot of each cluster, the newest
    /// Kubernetes backup of each cluster, the newest dump of each application, and a
    /// sampled read of the packs
    Backups(BackupsArgs),
}

#[derive(Args)]
pub struct BackupsArgs {
    /// The server's configuration: each schedule's newest backup is held to its
    /// expected interval (critical past 1.5 times it)
    #[arg(short, long, env = "BALLAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Without --config: the oldest each source's newest backup may be
    #[arg(long, default_value = "25h", value_parser = humantime::parse_duration)]
    max_age: Duration,
    /// The share or part of the packs read and verified
    #[arg(long, default_value = "5%", value_name = "SUBSET", value_parser = clap::value_parser!(Subset))]
    read_data_subset: Subset,
}

pub fn run(g: &GlobalArgs, c: VerifyCommand) -> Result<i32> {
    match c {
        VerifyCommand::App(a) => super::app::verify(g, a),
        VerifyCommand::Backups(a) => backups(g, a),
    }
}

fn backups(g: &GlobalArgs, a: BackupsArgs) -> Result<i32> {
    let schedules = match &a.config {
        None => Vec::new(),
        Some(path) => {
            let config = crate::server::config::Config::load(path, &super::server::check_args)
                .map_err(|e| Usage(e.to_string()))?;
            let now = jiff::Timestamp::now();
            config
                .schedules
                .iter()
                .filter(|s| s.job.kind.makes_snapshots())
                .filter_map(|s| Some((s.name.clone(), s.timing.as_ref()?.expected_interval(now))))
                .collect()
        }
    };
    let repo = g.open()?;
    // An application dump is checked by its plugin, in the sandbox the CLI sets up:
    // this binary, with this environment (repository, catalog, policy).
    let program = std::env::current_exe()?;
    let global: Vec<String> = g
        .store_options
        .iter()
        .flat_map(|o| ["-o".to_string(), o.clone()])
        .collect();
    let repo_arg = g.repo.clone();
    let (password_file, key_file) = (g.password_file.clone(), g.key_file.clone());
    let verify_app = move |id: &crate::repo::snapshot::SnapshotId| -> Result<(), String> {
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&global);
        if let Some(r) = &repo_arg {
            cmd.arg("--repo").arg(r);
        }
        if let Some(p) = &password_file {
            cmd.arg("--password-file").arg(p);
        }
        if let Some(k) = &key_file {
            cmd.arg("--key-file").arg(k);
        }
        let out = cmd
            .args(["verify", "app", &id.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("it failed")
            .trim()
            .to_string())
    };
    let findings = verify::verify(
        &repo,
        &Options {
            freshness: Freshness {
                schedules,
                max_age: a.max_age,
            },
            subset: a.read_data_subset,
            verify_app: Box::new(verify_app),
        },
    )?;
    let worst = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok);
    if g.json {
        output::json(&serde_json::json!({ "worst": worst, "findings": findings }))?;
    } else {
        let mut t = output::table(&["severity", "check", "subject", "detail"]);
        for f in &findings {
            let sev = match f.severity {
                Severity::Ok => "ok",
                Severity::Warning => "WARNING",
                Severity::Critical => "CRITICAL",
            };
            t.add_row(vec![
                sev.to_string(),
                f.check.to_string(),
                f.subject.clone(),
                f.detail.clone(),
            ]);
        }
        println!("{t}");
    }
    Ok(match worst {
        Severity::Ok => exit::OK,
        Severity::Warning => exit::PARTIAL,
        Severity::Critical => exit::CHECK_FAILED,
    })
}
