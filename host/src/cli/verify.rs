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

/// How long a plugin may take to check one dump.
const APP_TIMEOUT: Duration = Duration::from_secs(1800);

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
            let config =
                crate::server::config::Config::load(path, &super::server::check_args, false)
                    .map_err(|e| Usage(e.to_string()))?;
            let now = jiff::Timestamp::now();
            // The schedules that write to this repository.
            let here = g.location()?.to_string();
            config
                .schedules
                .iter()
                .filter(|s| {
                    crate::store::Location::parse(&s.repository.location)
                        .is_ok_and(|l| l.to_string() == here)
                })
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
    // The repository and its secret reach the child through its environment (only
    // its user can read it), never on its command line; a prompted password too.
    let mut vars: Vec<(&str, String)> = Vec::new();
    if let Some(r) = &g.repo {
        vars.push(("BALLAST_REPO", r.clone()));
    }
    match (&g.key_file, &g.password_file) {
        (Some(k), _) => vars.push(("BALLAST_KEY_FILE", k.display().to_string())),
        (None, Some(p)) => vars.push(("BALLAST_PASSWORD_FILE", p.display().to_string())),
        (None, None) => {
            if let crate::repo::keys::Secret::Password(p) = g.secret()? {
                vars.push(("BALLAST_PASSWORD", p.to_string()));
            }
        }
    }
    let verify_app = move |id: &crate::repo::snapshot::SnapshotId| -> Result<(), String> {
        let mut child = std::process::Command::new(&program)
            .args(&global)
            .args(["verify", "app", &id.to_string()])
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        // Read as it comes: a child that fills the pipe would never end.
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut text = String::new();
                let _ = e.read_to_string(&mut text);
                text
            })
        });
        // A plugin that hangs stops this check, not the whole verification.
        let deadline = std::time::Instant::now() + APP_TIMEOUT;
        let status = loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(s) => break s,
                None if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no verdict within {}",
                        humantime::format_duration(APP_TIMEOUT)
                    ));
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if status.success() {
            return Ok(());
        }
        let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
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
