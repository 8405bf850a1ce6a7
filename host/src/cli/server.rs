//! `ballast server`: run the schedules of a configuration file, or check it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser};
use jiff::Timestamp;
use serde_json::json;

use super::context::GlobalArgs;
use super::{exit, output, Usage};
use crate::server::config::Config;
use crate::server::schedule;

#[derive(Args)]
pub struct ServerArgs {
    /// The configuration file (YAML; the schema is in docs/server.md)
    #[arg(
        short,
        long,
        env = "BALLAST_CONFIG",
        default_value = "/etc/ballast/server.yaml"
    )]
    config: PathBuf,
    /// Check the configuration (every schedule's cron expression, time zone,
    /// repository and job arguments), print each schedule's next runs, and exit
    #[arg(long)]
    check_config: bool,
    /// Run this schedule's job once, as the server would (state, run record,
    /// retention, notifications), and exit with the job's code: for a CronJob
    #[arg(long, value_name = "SCHEDULE", conflicts_with = "check_config")]
    once: Option<String>,
    /// With --once: push the run's metrics to this Pushgateway (group job="ballast",
    /// schedule=NAME)
    #[arg(long, value_name = "URL", requires = "once")]
    pushgateway: Option<url::Url>,
    /// With --once: write the run's metrics to this file (the node exporter's
    /// textfile collector), replaced atomically
    #[arg(long, value_name = "PATH", requires = "once")]
    textfile: Option<PathBuf>,
}

/// A job's command line as this binary would parse it.
pub(super) fn check_args(argv: &[String]) -> Result<(), String> {
    let full = std::iter::once("ballast".to_string()).chain(argv.iter().cloned());
    match super::Cli::try_parse_from(full) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

pub fn run(g: &GlobalArgs, a: ServerArgs) -> Result<i32> {
    let config = Config::load(&a.config, &check_args, true).map_err(|e| Usage(e.to_string()))?;
    if a.check_config {
        return print(g, &config);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(schedule) = &a.once {
        use crate::server::state::Outcome;
        use crate::server::Publish;
        let mut publish = Vec::new();
        publish.extend(a.pushgateway.map(Publish::Pushgateway));
        publish.extend(a.textfile.map(Publish::Textfile));
        let run = rt.block_on(crate::server::once(config, schedule, &publish))?;
        if let Some(why) = &run.reason {
            eprintln!(
                "schedule {schedule} ({}) {}: {why}",
                run.job,
                run.outcome.name()
            );
        }
        return Ok(match run.outcome {
            Outcome::Succeeded => exit::OK,
            Outcome::Partial => exit::PARTIAL,
            Outcome::Skipped => exit::LOCKED,
            Outcome::Failed | Outcome::Missed => exit::FAILURE,
        });
    }
    rt.block_on(crate::server::serve(config))?;
    Ok(exit::OK)
}

fn print(g: &GlobalArgs, c: &Config) -> Result<i32> {
    let now = Timestamp::now();
    if g.json {
        let list: Vec<_> = c
            .schedules
            .iter()
            .map(|s| {
                let mut v = s.describe();
                v["next_run"] = json!(s.timing.as_ref().and_then(|t| t.next_after(now)));
                v["expected_interval_seconds"] = json!(s
                    .timing
                    .as_ref()
                    .map(|t| t.expected_interval(now).as_secs()));
                v["command"] = json!(s.job.argv());
                v
            })
            .collect();
        output::json(&json!({ "valid": true, "listen": c.listen.to_string(),
            "state_dir": c.state_dir, "schedules": list }))?;
        return Ok(exit::OK);
    }
    println!("{}: valid; listening on {}", "configuration", c.listen);
    let mut t = output::table(&[
        "schedule",
        "job",
        "repository",
        "when",
        "next run",
        "command",
    ]);
    for s in &c.schedules {
        let (when, next) = match &s.timing {
            Some(t) => (
                if t.written == t.expression {
                    t.written.clone()
                } else {
                    format!("{} ({})", t.written, t.expression)
                },
                t.next_after(now)
                    .map(|n| schedule::local(n, &t.timezone))
                    .unwrap_or_else(|| "never".into()),
            ),
            None => ("kept running".to_string(), "-".to_string()),
        };
        t.add_row(vec![
            s.name.clone(),
            s.job.kind.name().to_string(),
            s.repository.name.clone(),
            when,
            next,
            format!("ballast {}", s.job.argv().join(" ")),
        ]);
    }
    println!("{t}");
    Ok(exit::OK)
}
