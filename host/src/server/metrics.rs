//! The server's Prometheus metrics (the list, with what each alert rule reads, is
//! in `docs/server.md`). Every series of every configured schedule exists from the
//! start, at its remembered count or at zero, and the newest-success gauges are
//! set from the state file and then from the repository, so that a restart never
//! makes an alert fire or go quiet.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::config::Schedule;
use super::state::{Outcome, ScheduleState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Sched {
    pub schedule: String,
    /// The job's kind (not `job`, which Prometheus gives the scrape target).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedOutcome {
    pub schedule: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedReason {
    pub schedule: String,
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Repo {
    pub repository: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Why a due run did not run: the previous run still running; the repository's
/// lease held by another prune, forget or check (exit 13).
pub const SKIP_REASONS: [&str; 2] = ["overlap", "locked"];
/// The outcomes a run ends with.
pub const RUN_OUTCOMES: [Outcome; 3] = [Outcome::Succeeded, Outcome::Partial, Outcome::Failed];

pub struct Metrics {
    registry: Registry,
    pub runs: Family<SchedOutcome, Counter>,
    pub skipped: Family<SchedReason, Counter>,
    pub missed: Family<Sched, Counter>,
    pub last_success: Family<Sched, FGauge>,
    pub last_attempt: Family<Sched, FGauge>,
    pub last_failure: Family<Sched, FGauge>,
    pub since: Family<Sched, FGauge>,
    pub next_run: Family<Sched, FGauge>,
    pub expected_interval: Family<Sched, FGauge>,
    pub running: Family<Sched, Gauge>,
    pub duration: Family<Sched, FGauge>,
    pub bytes_read: Family<Sched, Counter>,
    pub bytes_added: Family<Sched, Counter>,
    pub capture_up: Family<Sched, Gauge>,
    pub capture_restarts: Family<Sched, Counter>,
    pub capture_last_segment: Family<Sched, FGauge>,
    pub capture_lag: Family<Sched, FGauge>,
    pub capture_revision: Family<Sched, Gauge>,
    pub capture_rpo: Family<Sched, FGauge>,
    pub repository_size: Family<Repo, Gauge>,
    pub repository_up: Family<Repo, Gauge>,
    pub repository_snapshots: Family<Repo, Gauge>,
    pub repository_last_probe: Family<Repo, FGauge>,
    pub notifications_sent: Family<SinkLabel, Counter>,
    pub notification_failures: Family<SinkLabel, Counter>,
    pub state_write_failures: Counter,
}

pub fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        macro_rules! family {
            ($name:literal, $help:literal) => {{
                let f = Family::default();
                registry.register($name, $help, f.clone());
                f
            }};
        }
        Metrics {
            runs: family!("ballast_schedule_runs", "Runs of a schedule by outcome (succeeded, partial, failed)"),
            skipped: family!("ballast_schedule_skipped_runs", "Runs due but not run, by reason (overlap: the previous run was still running; locked: another prune, forget or check held the repository)"),
            missed: family!("ballast_schedule_missed_runs", "Runs due while the server was down (one catch-up run follows)"),
            last_success: family!("ballast_schedule_last_success_timestamp_seconds", "When the newest successful (or partial) run of the schedule finished; 0 if none"),
            last_attempt: family!("ballast_schedule_last_attempt_timestamp_seconds", "When the newest run of the schedule started; 0 if none"),
            last_failure: family!("ballast_schedule_last_failure_timestamp_seconds", "When the newest failed run of the schedule finished; 0 if none"),
            since: family!("ballast_schedule_since_timestamp_seconds", "When the server first ran the schedule (what staleness counts from before a first success)"),
            next_run: family!("ballast_schedule_next_run_timestamp_seconds", "When the schedule runs next"),
            expected_interval: family!("ballast_schedule_expected_interval_seconds", "The longest time between two runs of the schedule's cron expression"),
            running: family!("ballast_schedule_running", "1 while a run of the schedule is running"),
            duration: family!("ballast_schedule_last_duration_seconds", "How long the newest run took"),
            bytes_read: family!("ballast_schedule_read_bytes", "Bytes the schedule's backups read"),
            bytes_added: family!("ballast_schedule_added_bytes", "Bytes the schedule's backups added to the repository (compressed, encrypted)"),
            capture_up: family!("ballast_capture_up", "1 while an etcd capture is running"),
            capture_restarts: family!("ballast_capture_restarts", "Times an etcd capture ended and was started again"),
            capture_last_segment: family!("ballast_capture_last_segment_timestamp_seconds", "When the capture last stored a segment (none while etcd is quiet); 0 before the first"),
            capture_lag: family!("ballast_capture_lag_seconds", "How old the newest change of the newest stored segment was when it was stored"),
            capture_revision: family!("ballast_capture_revision", "The newest etcd revision the capture has stored"),
            capture_rpo: family!("ballast_capture_rpo_seconds", "The schedule's recovery point objective: the most changes may wait before they are stored"),
            repository_size: family!("ballast_repository_size_bytes", "Bytes of packs in the repository at the newest listing"),
            repository_up: family!("ballast_repository_up", "1 if the newest listing of the repository succeeded"),
            repository_snapshots: family!("ballast_repository_snapshots", "Snapshots in the repository at the newest listing"),
            repository_last_probe: family!("ballast_repository_last_probe_timestamp_seconds", "When the repository was last listed"),
            notifications_sent: family!("ballast_notifications_sent", "Notifications a sink accepted"),
            notification_failures: family!("ballast_notification_failures", "Notifications a sink did not accept after every retry, or dropped from a full queue"),
            state_write_failures: {
                let c = Counter::default();
                registry.register("ballast_state_write_failures", "Times the state file could not be written (counts may go back after a restart)", c.clone());
                c
            },
            registry,
        }
    }

    /// Makes every series of a schedule exist, at the remembered counts.
    pub fn declare(&self, s: &Schedule, st: &ScheduleState) {
        let sched = sched(s);
        let job = s.job.kind.name();
        for o in RUN_OUTCOMES {
            let c = self.runs.get_or_create(&outcome(&s.name, job, o));
            c.inc_by(st.counts.get(o.name()).copied().unwrap_or(0));
        }
        if s.retention.is_some() {
            for o in RUN_OUTCOMES {
                let c = self.runs.get_or_create(&outcome(&s.name, "forget", o));
                c.inc_by(
                    st.counts
                        .get(&format!("forget:{}", o.name()))
                        .copied()
                        .unwrap_or(0),
                );
            }
        }
        for r in SKIP_REASONS {
            let c = self.skipped.get_or_create(&SchedReason {
                schedule: s.name.clone(),
                kind: job.to_string(),
                reason: r.to_string(),
            });
            c.inc_by(st.counts.get(&format!("skipped:{r}")).copied().unwrap_or(0));
        }
        if s.retention.is_some() {
            let c = self.skipped.get_or_create(&SchedReason {
                schedule: s.name.clone(),
                kind: "forget".into(),
                reason: "locked".into(),
            });
            c.inc_by(st.counts.get("forget:skipped:locked").copied().unwrap_or(0));
        }
        self.missed
            .get_or_create(&sched)
            .inc_by(st.counts.get("missed").copied().unwrap_or(0));
        self.last_success
            .get_or_create(&sched)
            .set(st.last_success.map(seconds).unwrap_or(0.0));
        self.last_attempt
            .get_or_create(&sched)
            .set(st.last_attempt.map(seconds).unwrap_or(0.0));
        self.last_failure
            .get_or_create(&sched)
            .set(st.last_failure.map(seconds).unwrap_or(0.0));
        self.since
            .get_or_create(&sched)
            .set(st.since.map(seconds).unwrap_or(0.0));
        self.running.get_or_create(&sched).set(0);
        let _ = self.duration.get_or_create(&sched);
        self.bytes_read
            .get_or_create(&sched)
            .inc_by(st.counts.get("bytes_read").copied().unwrap_or(0));
        self.bytes_added
            .get_or_create(&sched)
            .inc_by(st.counts.get("bytes_added").copied().unwrap_or(0));
        match &s.timing {
            Some(t) => {
                let now = Timestamp::now();
                self.expected_interval
                    .get_or_create(&sched)
                    .set(t.expected_interval(now).as_secs_f64());
                let _ = self.next_run.get_or_create(&sched);
            }
            None => {
                self.capture_up.get_or_create(&sched).set(0);
                let _ = self.capture_last_segment.get_or_create(&sched);
                let _ = self.capture_lag.get_or_create(&sched);
                let _ = self.capture_revision.get_or_create(&sched);
                self.capture_rpo
                    .get_or_create(&sched)
                    .set(s.rpo.unwrap_or_default().as_secs_f64());
                self.capture_restarts
                    .get_or_create(&sched)
                    .inc_by(st.counts.get("restarts").copied().unwrap_or(0));
            }
        }
    }

    pub fn declare_repository(&self, name: &str) {
        let r = Repo {
            repository: name.to_string(),
        };
        let _ = self.repository_up.get_or_create(&r);
        let _ = self.repository_size.get_or_create(&r);
        let _ = self.repository_snapshots.get_or_create(&r);
        let _ = self.repository_last_probe.get_or_create(&r);
    }

    /// Counts a run's end; one refused for the repository's lease counts as skipped
    /// (`locked`).
    pub fn ended(&self, schedule: &str, kind: &str, o: Outcome) {
        if o == Outcome::Skipped {
            self.skip(schedule, kind, "locked");
        } else {
            self.runs.get_or_create(&outcome(schedule, kind, o)).inc();
        }
    }

    pub fn skip(&self, schedule: &str, kind: &str, reason: &str) {
        self.skipped
            .get_or_create(&SchedReason {
                schedule: schedule.to_string(),
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn declare_sink(&self, name: &str) {
        let s = SinkLabel {
            sink: name.to_string(),
        };
        let _ = self.notifications_sent.get_or_create(&s);
        let _ = self.notification_failures.get_or_create(&s);
    }

    /// The Prometheus text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// The exposition in the classic text format (0.0.4) that a Pushgateway and the
/// node exporter's textfile collector read: counters named with their `_total`, no
/// `# EOF`.
pub fn classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in openmetrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::new();
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

pub fn sched(s: &Schedule) -> Sched {
    Sched {
        schedule: s.name.clone(),
        kind: s.job.kind.name().to_string(),
    }
}

pub fn outcome(schedule: &str, job: &str, o: Outcome) -> SchedOutcome {
    SchedOutcome {
        schedule: schedule.to_string(),
        kind: job.to_string(),
        outcome: o.name().to_string(),
    }
}

impl super::notify::Counts for Metrics {
    fn sent(&self, sink: &str) {
        self.notifications_sent
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }

    fn failed(&self, sink: &str) {
        self.notification_failures
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }
}
