//! `ballast drill`: prove a backup by restoring it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::context::GlobalArgs;
use super::{exit, output};
use crate::etcd::delta;
use crate::etcd::drill::{self, DrillOptions};
use crate::etcd::restore::Tool;
use crate::repo::snapshot as records;

#[derive(Subcommand)]
pub enum DrillCommand {
    /// Restore an etcd snapshot into a scratch directory, serve it with etcd on
    /// loopback, and compare its revision and keys with the record and the database
    Etcd(EtcdDrillArgs),
}

#[derive(Args)]
pub struct EtcdDrillArgs {
    /// The etcd snapshot (id, unique prefix, or `latest`)
    #[arg(default_value = "latest")]
    snapshot: String,
    /// The etcd binary that serves the restored member [default: etcd on PATH]
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    etcd: PathBuf,
    /// etcdutl (or etcdctl for 3.4) that lays out the data directory [default: on PATH]
    #[arg(long, value_name = "PATH")]
    etcdutl: Option<PathBuf>,
    /// Where the scratch directory goes (it holds a copy of the database)
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir())]
    scratch: PathBuf,
    /// How long the restored member may take to answer
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(g: &GlobalArgs, c: DrillCommand) -> Result<i32> {
    match c {
        DrillCommand::Etcd(a) => etcd(g, a),
    }
}

fn etcd(g: &GlobalArgs, a: EtcdDrillArgs) -> Result<i32> {
    let repo = g.open()?;
    let (id, snap) = records::find_of_kind(&repo, &a.snapshot, delta::FULL)?;
    let opts = DrillOptions {
        etcd: a.etcd,
        tool: Tool::find(a.etcdutl.as_deref())?,
        scratch: a.scratch,
        timeout: a.timeout,
    };
    let report = drill::drill(&repo, &id, &snap, &opts)
        .with_context(|| format!("the drill of etcd snapshot {}", id.short()))?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["passed"] = serde_json::json!(report.passed());
        output::json(&v)?;
    } else {
        let verdict = if report.passed() { "passed" } else { "FAILED" };
        println!(
            "drill of etcd snapshot {} ({}): {verdict} in {:.1}s",
            id.short(),
            report.taken,
            report.seconds
        );
        println!(
            "  database: SHA-256 verified, revision {}, {} keys",
            report.restored_revision, report.restored_keys
        );
        println!(
            "  served by etcd {}: revision {}, {} keys",
            report.etcd_version, report.served_revision, report.served_keys
        );
        for p in &report.problems {
            println!("  problem: {p}");
        }
    }
    Ok(if report.passed() {
        exit::OK
    } else {
        exit::CHECK_FAILED
    })
}
