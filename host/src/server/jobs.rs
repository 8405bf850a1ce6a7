//! What a schedule runs: a `ballast` command, the same one an operator types or a
//! CronJob runs, with the schedule's arguments. The server adds only a tag naming
//! the schedule (so that retention and the newest-backup gauge find its snapshots)
//! and `--json` (so that it can read what the run did).

use super::config::Retention;

/// The kinds of job, by the command they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `ballast etcd snapshot`
    EtcdSnapshot,
    /// `ballast etcd watch`, kept running and restarted with backoff.
    EtcdCapture,
    /// `ballast backup path`
    Path,
    /// `ballast backup app`
    App,
    /// `ballast backup kube`
    Kube,
    /// `ballast repo prune`
    Prune,
    /// `ballast repo check`
    Check,
    /// `ballast drill etcd`: the newest etcd snapshot restored and served.
    EtcdDrill,
    /// `ballast restore kube --dry-run`: a Kubernetes backup sent to a cluster
    /// with `dryRun=All`, nothing written.
    KubeDrill,
}

const KINDS: [(&str, JobKind); 9] = [
    ("etcd-snapshot", JobKind::EtcdSnapshot),
    ("etcd-capture", JobKind::EtcdCapture),
    ("path", JobKind::Path),
    ("app", JobKind::App),
    ("kube", JobKind::Kube),
    ("prune", JobKind::Prune),
    ("check", JobKind::Check),
    ("etcd-drill", JobKind::EtcdDrill),
    ("kube-drill", JobKind::KubeDrill),
];

impl JobKind {
    pub fn parse(name: &str) -> Result<JobKind, String> {
        KINDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                format!("no job `{name}` (jobs: {})", names.join(", "))
            })
    }

    pub fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind is named")
    }

    /// The CLI command it runs.
    fn command(self) -> &'static [&'static str] {
        match self {
            JobKind::EtcdSnapshot => &["etcd", "snapshot"],
            JobKind::EtcdCapture => &["etcd", "watch"],
            JobKind::Path => &["backup", "path"],
            JobKind::App => &["backup", "app"],
            JobKind::Kube => &["backup", "kube"],
            JobKind::Prune => &["repo", "prune"],
            JobKind::Check => &["repo", "check"],
            JobKind::EtcdDrill => &["drill", "etcd"],
            JobKind::KubeDrill => &["restore", "kube", "--dry-run"],
        }
    }

    /// Whether its runs are snapshots (tagged, kept by a retention policy, and
    /// counted by the newest-backup gauge).
    pub fn makes_snapshots(self) -> bool {
        !matches!(
            self,
            JobKind::Prune | JobKind::Check | JobKind::EtcdDrill | JobKind::KubeDrill
        )
    }
}

/// The tag a schedule's snapshots carry.
pub fn schedule_tag(schedule: &str) -> String {
    format!("schedule={schedule}")
}

/// One schedule's job: its command line, less the repository (given through the
/// environment when it runs).
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: JobKind,
    schedule: String,
    args: Vec<String>,
}

impl Job {
    pub fn new(kind: JobKind, schedule: &str, args: &[String]) -> Job {
        Job {
            kind,
            schedule: schedule.to_string(),
            args: args.to_vec(),
        }
    }

    /// The arguments of `ballast` that run it.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec!["--json".to_string()];
        argv.extend(self.kind.command().iter().map(|s| s.to_string()));
        argv.extend(self.args.iter().cloned());
        if self.kind.makes_snapshots() {
            argv.extend(["--tag".to_string(), schedule_tag(&self.schedule)]);
        }
        argv
    }

    /// The arguments of the `forget` that applies a retention policy to this
    /// schedule's snapshots (and no others).
    pub fn forget_argv(&self, r: &Retention) -> Vec<String> {
        // Grouped by source and tags, not host: a pod's host name changes with every
        // restart, and each old name's group would keep its snapshots for ever.
        let mut argv = vec![
            "--json".to_string(),
            "forget".to_string(),
            "--tag".to_string(),
            schedule_tag(&self.schedule),
            "--group-by".to_string(),
            "source,tags".to_string(),
        ];
        argv.extend(r.flags());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_its_cli_command_with_the_schedule_tag() {
        let j = Job::new(JobKind::Path, "home", &["/home".into(), "-x".into()]);
        assert_eq!(
            j.argv(),
            [
                "--json",
                "backup",
                "path",
                "/home",
                "-x",
                "--tag",
                "schedule=home"
            ]
        );
        let c = Job::new(
            JobKind::Check,
            "weekly-check",
            &["--read-data-subset".into(), "5%".into()],
        );
        assert_eq!(
            c.argv(),
            ["--json", "repo", "check", "--read-data-subset", "5%"]
        );
        let r = Retention {
            keep_daily: Some(7),
            keep_within: Some("2d".into()),
            ..Default::default()
        };
        assert_eq!(
            j.forget_argv(&r),
            [
                "--json",
                "forget",
                "--tag",
                "schedule=home",
                "--group-by",
                "source,tags",
                "--keep-daily",
                "7",
                "--keep-within",
                "2d"
            ]
        );
    }

    #[test]
    fn every_kind_parses_by_its_name() {
        for (name, kind) in KINDS {
            assert_eq!(JobKind::parse(name), Ok(kind));
            assert_eq!(kind.name(), name);
        }
        assert!(JobKind::parse("tape")
            .unwrap_err()
            .contains("etcd-snapshot"));
    }
}
