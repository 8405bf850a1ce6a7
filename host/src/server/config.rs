//! The server's configuration file: YAML, the schema in `docs/server.md`. Unknown
//! keys are errors, and `ballast server --check-config` finds every mistake the file
//! holds (a cron expression, a time zone, a job's arguments, a repository name) at
//! once, before anything runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::jobs::{Job, JobKind};
use super::notify::{Sink, SinkFile};
use super::schedule::Timing;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Where the server keeps its state (next runs, run records); default
    /// `/var/lib/ballast`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The HTTP listener (`/metrics`, `/healthz`, `/api/schedules`); default
    /// `127.0.0.1:9464`.
    #[serde(default)]
    pub listen: Option<String>,
    /// How long running jobs get to finish after SIGTERM before they are killed;
    /// default `5m`.
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// How often each repository is listed (its reachability, the newest backup of
    /// each schedule); default `5m`.
    #[serde(default)]
    pub probe_interval: Option<String>,
    pub repositories: BTreeMap<String, RepositoryFile>,
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleFile>,
    /// Notification sinks by name (docs/server.md#notifications).
    #[serde(default)]
    pub notifications: BTreeMap<String, SinkFile>,
}

/// A repository the jobs write to. The secret is named by a file, never written
/// in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryFile {
    /// A path, or s3://, gs://, az:// (as `--repo`).
    pub location: String,
    pub password_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Object store client options KEY=VALUE (as `-o`).
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// What runs: etcd-snapshot, etcd-capture, path, app, kube, prune, check,
    /// etcd-drill, kube-drill.
    pub job: String,
    /// When: a cron expression of five fields, `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, or their `-random` forms. Not given for etcd-capture, which is
    /// kept running.
    pub cron: Option<String>,
    /// The time zone of the cron expression (an IANA name); default UTC.
    pub timezone: Option<String>,
    /// The repository's name under `repositories`.
    pub repository: String,
    /// The job's command-line arguments, as the CLI command takes them.
    #[serde(default)]
    pub args: Vec<String>,
    /// Snapshots of this schedule to keep: after each successful run, `forget`
    /// with these rules removes the rest (their data goes with a prune job).
    pub retention: Option<Retention>,
    /// A run that takes longer is stopped (SIGTERM, then SIGKILL after the grace)
    /// and failed; default none.
    pub timeout: Option<String>,
    /// The notification sinks told of this schedule's runs.
    #[serde(default)]
    pub notify: Vec<String>,
    /// For etcd-capture: the recovery point objective, the longest a change may
    /// wait before it is stored (what the lag alert compares with); default 5m.
    pub rpo: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
}

impl Retention {
    /// The `forget` flags of these rules; empty when there are none.
    pub fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        for (flag, n) in [
            ("--keep-last", self.keep_last),
            ("--keep-hourly", self.keep_hourly),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
            ("--keep-yearly", self.keep_yearly),
        ] {
            if let Some(n) = n {
                f.extend([flag.to_string(), n.to_string()]);
            }
        }
        if let Some(w) = &self.keep_within {
            f.extend(["--keep-within".to_string(), w.clone()]);
        }
        f
    }
}

/// A repository as jobs reach it: the environment and flags of their command.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    pub location: String,
    pub password_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub options: Vec<String>,
}

/// One schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub job: Job,
    /// None: kept running (etcd capture).
    pub timing: Option<Timing>,
    pub repository: Repository,
    pub retention: Option<Retention>,
    pub timeout: Option<Duration>,
    pub notify: Vec<String>,
    /// For a capture: its recovery point objective.
    pub rpo: Option<Duration>,
}

impl Schedule {
    /// What `--check-config --json` and `/api/schedules` say of it.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "job": self.job.kind.name(),
            "repository": self.repository.name,
            "cron": self.timing.as_ref().map(|t| &t.written),
            "expression": self.timing.as_ref().map(|t| &t.expression),
            "timezone": self.timing.as_ref().map(|t| t.timezone.iana_name()),
        })
    }
}

/// The configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub probe_interval: Duration,
    pub repositories: Vec<Repository>,
    pub schedules: Vec<Schedule>,
    pub sinks: Vec<Sink>,
}

/// Every mistake in a configuration file, each naming where it is and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}: {} mistake(s):\n  - {}", .path, .problems.len(), .problems.join("\n  - "))]
pub struct Invalid {
    pub path: String,
    pub problems: Vec<String>,
}

/// Checks a job's command line as the CLI would parse it (`Err` holds clap's
/// message). Given by the CLI, which owns the parser.
pub type ArgsCheck<'a> = &'a dyn Fn(&[String]) -> Result<(), String>;

fn duration(
    what: &str,
    text: Option<&str>,
    default: Duration,
    problems: &mut Vec<String>,
) -> Duration {
    match text {
        None => default,
        Some(t) => humantime::parse_duration(t).unwrap_or_else(|e| {
            problems.push(format!("{what} `{t}`: {e} (write e.g. 30s, 5m, 2h)"));
            default
        }),
    }
}

impl Config {
    /// Reads and checks a configuration file.
    /// `open_secrets`: whether each repository's secret file must open here (the
    /// server's check; `verify backups` reads schedules where the secrets may not be
    /// mounted).
    pub fn load(
        path: &Path,
        check_args: ArgsCheck<'_>,
        open_secrets: bool,
    ) -> Result<Config, Invalid> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Invalid {
            path: shown.clone(),
            problems: vec![format!("cannot read it: {e}")],
        })?;
        Config::parse(&shown, &text, check_args, open_secrets)
    }

    pub fn parse(
        path: &str,
        text: &str,
        check_args: ArgsCheck<'_>,
        open_secrets: bool,
    ) -> Result<Config, Invalid> {
        let invalid = |problems: Vec<String>| Invalid {
            path: path.to_string(),
            problems,
        };
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| invalid(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        let listen_text = file.listen.as_deref().unwrap_or("127.0.0.1:9464");
        let listen = listen_text.parse().unwrap_or_else(|e| {
            problems.push(format!(
                "listen `{listen_text}`: {e} (write an address and a port, e.g. 0.0.0.0:9464)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 9464))
        });
        let shutdown_grace = duration(
            "shutdown_grace",
            file.shutdown_grace.as_deref(),
            Duration::from_secs(300),
            &mut problems,
        );
        let probe_interval = duration(
            "probe_interval",
            file.probe_interval.as_deref(),
            Duration::from_secs(300),
            &mut problems,
        );
        if file.repositories.is_empty() {
            problems.push("no repositories: name at least one under `repositories`".into());
        }
        let mut repositories = Vec::new();
        for (name, r) in &file.repositories {
            match (&r.password_file, &r.key_file) {
                (None, None) => problems.push(format!(
                    "repository `{name}`: give password_file or key_file (the secret is never written in this file)"
                )),
                (Some(_), Some(_)) => problems.push(format!(
                    "repository `{name}`: give password_file or key_file, not both"
                )),
                (Some(f), None) | (None, Some(f)) if open_secrets => {
                    // Opened, not read: a mistake is found now, and the secret never
                    // reaches a message.
                    if let Err(e) = std::fs::File::open(f) {
                        problems.push(format!(
                            "repository `{name}`: cannot open {}: {e}",
                            f.display()
                        ));
                    }
                }
                _ => {}
            }
            if r.location.trim().is_empty() {
                problems.push(format!("repository `{name}`: location is empty"));
            }
            // Options go on a job's command line, which every user of the machine can
            // read in /proc: credentials come through the environment instead.
            for o in &r.options {
                let key = o.split('=').next().unwrap_or_default().to_ascii_lowercase();
                if [
                    "secret",
                    "password",
                    "token",
                    "sas",
                    "access_key",
                    "account_key",
                ]
                .iter()
                .any(|w| key.contains(w))
                {
                    problems.push(format!(
                        "repository `{name}`: option `{key}` is a credential: give it to the server through the environment (e.g. AWS_SECRET_ACCESS_KEY), not in options"
                    ));
                }
            }
            repositories.push(Repository {
                name: name.clone(),
                location: r.location.clone(),
                password_file: r.password_file.clone(),
                key_file: r.key_file.clone(),
                options: r.options.clone(),
            });
        }
        let mut sinks = Vec::new();
        for (name, f) in &file.notifications {
            match Sink::load(name, f) {
                Ok(s) => sinks.push(s),
                Err(e) => problems.push(format!("notification sink `{name}`: {e}")),
            }
        }
        let mut schedules = Vec::new();
        for (name, s) in &file.schedules {
            for sink in &s.notify {
                if !file.notifications.contains_key(sink) {
                    problems.push(format!(
                        "schedule `{name}`: notify names `{sink}`, which is not under `notifications`"
                    ));
                }
            }
            if let Some(s) = schedule(name, s, &repositories, check_args, &mut problems) {
                schedules.push(s);
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(Config {
            state_dir: file
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/ballast")),
            listen,
            shutdown_grace,
            probe_interval,
            repositories,
            schedules,
            sinks,
        })
    }
}

fn schedule(
    name: &str,
    s: &ScheduleFile,
    repositories: &[Repository],
    check_args: ArgsCheck<'_>,
    problems: &mut Vec<String>,
) -> Option<Schedule> {
    let at = format!("schedule `{name}`");
    let before = problems.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problems.push(format!(
            "{at}: a name is letters, digits, `-`, `_` and `.` (it becomes a tag and a metric label)"
        ));
    }
    let kind = JobKind::parse(&s.job)
        .map_err(|e| problems.push(format!("{at}: {e}")))
        .ok();
    let repository = repositories.iter().find(|r| r.name == s.repository);
    if repository.is_none() {
        let known: Vec<&str> = repositories.iter().map(|r| r.name.as_str()).collect();
        problems.push(format!(
            "{at}: no repository `{}` (repositories: {})",
            s.repository,
            known.join(", ")
        ));
    }
    let timing = match (kind, &s.cron) {
        (Some(JobKind::EtcdCapture), Some(_)) => {
            problems.push(format!(
                "{at}: an etcd-capture job is kept running, not scheduled: remove `cron`"
            ));
            None
        }
        (Some(JobKind::EtcdCapture), None) | (None, _) => None,
        (Some(_), None) => {
            problems.push(format!(
                "{at}: no `cron` (e.g. `@daily-random` or `0 3 * * *`)"
            ));
            None
        }
        (Some(_), Some(cron)) => Timing::parse(name, cron, s.timezone.as_deref().unwrap_or("UTC"))
            .map_err(|e| problems.push(format!("{at}: {e}")))
            .ok(),
    };
    let rpo = match (kind, s.rpo.as_deref()) {
        (Some(JobKind::EtcdCapture), r) => Some(duration(
            &format!("{at}: rpo"),
            r,
            Duration::from_secs(300),
            problems,
        )),
        (_, Some(_)) => {
            problems.push(format!("{at}: rpo is for etcd-capture jobs: remove it"));
            None
        }
        (_, None) => None,
    };
    let timeout = s
        .timeout
        .as_deref()
        .map(|t| duration(&format!("{at}: timeout"), Some(t), Duration::ZERO, problems));
    if let Some(r) = &s.retention {
        if r.flags().is_empty() {
            problems.push(format!(
                "{at}: retention has no keep_* rule (remove it, or keep e.g. keep_daily: 7)"
            ));
        }
        if kind.is_some_and(|k| !k.makes_snapshots()) {
            problems.push(format!(
                "{at}: a {} job makes no snapshots to keep: remove retention",
                s.job
            ));
        }
    }
    let kind = kind?;
    let job = Job::new(kind, name, &s.args);
    if let Err(e) = check_args(&job.argv()) {
        problems.push(format!("{at}: args: {e}"));
    }
    if let Some(r) = &s.retention {
        if let Err(e) = check_args(&job.forget_argv(r)) {
            problems.push(format!("{at}: retention: {e}"));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Schedule {
        name: name.to_string(),
        job,
        timing,
        repository: repository?.clone(),
        retention: s.retention.clone(),
        timeout,
        notify: s.notify.clone(),
        rpo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_args(_: &[String]) -> Result<(), String> {
        Ok(())
    }

    const GOOD: &str = r#"
state_dir: /tmp/ballast-state
listen: 127.0.0.1:0
repositories:
  main:
    location: /srv/backups
    password_file: /dev/null
schedules:
  etcd:
    job: etcd-snapshot
    cron: "@hourly-random"
    timezone: Europe/Berlin
    repository: main
    args: [--endpoints, "https://127.0.0.1:2379"]
    retention: {keep_hourly: 24, keep_daily: 7}
  capture:
    job: etcd-capture
    repository: main
    args: [--endpoints, "https://127.0.0.1:2379"]
"#;

    #[test]
    fn a_good_file_loads() {
        let c = Config::parse("server.yaml", GOOD, &any_args, true).unwrap();
        assert_eq!(c.schedules.len(), 2);
        let etcd = c.schedules.iter().find(|s| s.name == "etcd").unwrap();
        assert!(etcd.timing.is_some());
        assert_eq!(c.state_dir, PathBuf::from("/tmp/ballast-state"));
        let capture = c.schedules.iter().find(|s| s.name == "capture").unwrap();
        assert!(capture.timing.is_none());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let bad = GOOD.replace("timezone:", "time_zone:");
        let e = Config::parse("server.yaml", &bad, &any_args, true).unwrap_err();
        assert!(e.to_string().contains("time_zone"), "{e}");
    }

    #[test]
    fn every_mistake_is_named_at_once() {
        let bad = r#"
repositories:
  main: {location: /srv, password_file: /dev/null}
schedules:
  a: {job: etcd-snapshot, cron: "61 * * * *", repository: main}
  b: {job: tape, cron: "@daily", repository: main}
  c: {job: path, cron: "@daily", repository: elsewhere, args: [/data]}
  d: {job: path, cron: "@daily", timezone: Mars/Olympus, repository: main, args: [/data]}
  e: {job: etcd-capture, cron: "@daily", repository: main}
  f: {job: check, cron: "@daily", repository: main, retention: {keep_last: 3}}
  g: {job: path, repository: main, args: [/data]}
"#;
        let e = Config::parse("server.yaml", bad, &any_args, true).unwrap_err();
        let text = e.to_string();
        for name in ["`a`", "`b`", "`c`", "`d`", "`e`", "`f`", "`g`"] {
            assert!(text.contains(&format!("schedule {name}")), "{name}: {text}");
        }
        assert!(text.contains("Mars/Olympus"), "{text}");
        assert!(text.contains("tape"), "{text}");
        assert!(text.contains("elsewhere"), "{text}");
        assert_eq!(e.problems.len(), 7, "{text}");
    }

    #[test]
    fn a_job_whose_arguments_the_cli_refuses_is_refused() {
        let refuse = |argv: &[String]| {
            if argv.iter().any(|a| a == "--endpoints") {
                Err("unexpected argument '--endpoints'".to_string())
            } else {
                Ok(())
            }
        };
        let e = Config::parse("server.yaml", GOOD, &refuse, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("schedule `etcd`: args: unexpected argument"),
            "{e}"
        );
    }

    #[test]
    fn credentials_in_store_options_are_refused_without_their_value() {
        let bad = GOOD.replace(
            "password_file: /dev/null",
            "password_file: /dev/null\n    options: [aws_secret_access_key=hunter2, region=eu-west-1]",
        );
        let e = Config::parse("server.yaml", &bad, &any_args, true).unwrap_err();
        assert!(e.to_string().contains("aws_secret_access_key"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.problems.len(), 1, "{e}");
    }

    #[test]
    fn a_missing_password_file_is_named() {
        let bad = GOOD.replace(
            "password_file: /dev/null",
            "password_file: /etc/ballast/nowhere",
        );
        let e = Config::parse("server.yaml", &bad, &any_args, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("repository `main`: cannot open /etc/ballast/nowhere"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_is_named_by_a_file_only() {
        let bad = GOOD.replace("password_file: /dev/null", "password: hunter2");
        let e = Config::parse("server.yaml", &bad, &any_args, true).unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
