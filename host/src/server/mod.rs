//! `ballast server`: a long-running process that runs schedules of jobs, keeps etcd
//! captures running, and says on `/metrics` and in its run records why each run
//! did or did not happen.
//!
//! - [`config`]: the YAML file and its checks (`--check-config`);
//! - [`schedule`]: cron expressions in a time zone, and `-random` nicknames;
//! - [`jobs`]: what a schedule runs (a `ballast` command);
//! - [`runner`]: running one job as a child process, and stopping it;
//! - [`scheduler`]: a schedule's loop: missed runs caught up once, overlaps
//!   skipped, retention after success; a capture kept running;
//! - [`probe`]: the repositories listed on an interval (reachability, newest
//!   backup of each schedule);
//! - [`state`]: what survives a restart;
//! - [`notify`]: Slack, PagerDuty and webhook notifications, queued and retried;
//! - [`metrics`] and [`http`]: `/metrics`, `/healthz`, `/api/schedules`.
//!
//! Each job runs as a child process of the same binary: a job that crashes or
//! runs out of memory takes nothing else down, a stop is a signal the CLI already
//! handles, and a schedule's job is exactly the command an operator can run by
//! hand (ADR 0009).

pub mod config;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod state;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use config::Config;
use metrics::Metrics;
use runner::Runner;
use state::{RunRecord, State, StateDir};

/// What every task of the server shares.
pub struct Server {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub notifier: notify::Notifier,
    pub state: Mutex<State>,
    pub dir: StateDir,
    pub runner: Runner,
    /// Turns true on SIGTERM or SIGINT.
    pub stop: watch::Receiver<bool>,
}

impl Server {
    /// Changes one schedule's state and writes it down.
    pub fn update(&self, schedule: &str, f: impl FnOnce(&mut state::ScheduleState)) {
        let mut st = self.state.lock().unwrap();
        f(st.schedules.entry(schedule.to_string()).or_default());
        if let Err(e) = self.dir.save(&st) {
            self.metrics.state_write_failures.inc();
            tracing::error!("cannot write the server state in {:?}: {e}", self.dir);
        }
    }

    /// Appends a run record, logs it, and tells the schedule's sinks.
    pub fn record(&self, r: &RunRecord) {
        match &r.reason {
            Some(why) => tracing::info!(
                "schedule {}: {} {}: {why}",
                r.schedule,
                r.job,
                r.outcome.name()
            ),
            None => tracing::info!("schedule {}: {} {}", r.schedule, r.job, r.outcome.name()),
        }
        if let Err(e) = self.dir.record(r) {
            tracing::error!("cannot append to {:?}: {e}", self.dir.runs_path());
        }
        if let Some(s) = self.config.schedules.iter().find(|s| s.name == r.schedule) {
            self.notifier.send(
                &s.notify,
                notify::Message {
                    record: r.clone(),
                    next_run: self.next_run(s),
                },
                &*self.metrics,
            );
        }
    }

    /// The schedule's next cron time, once its loop has computed it.
    pub fn next_run(&self, s: &config::Schedule) -> Option<jiff::Timestamp> {
        let next = self
            .metrics
            .next_run
            .get_or_create(&metrics::sched(s))
            .get();
        (next > 0.0)
            .then(|| jiff::Timestamp::from_millisecond((next * 1000.0) as i64).ok())
            .flatten()
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// A new run id: the time and a random suffix.
pub fn run_id() -> String {
    use rand::Rng;
    format!(
        "{}-{:06x}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        rand::thread_rng().gen_range(0..0x100_0000)
    )
}

/// Runs the server until SIGTERM or SIGINT, then lets the running jobs finish
/// (or stops them after the grace).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = StateDir::open(&config.state_dir).with_context(|| {
        format!(
            "cannot use the state directory {} (state_dir in the configuration)",
            config.state_dir.display()
        )
    })?;
    let mut state = dir.load().map_err(anyhow::Error::msg)?;
    let now = jiff::Timestamp::now();
    let mut interrupted = Vec::new();
    for s in &config.schedules {
        let st = state.schedules.entry(s.name.clone()).or_default();
        st.since.get_or_insert(now);
        // A clock set forward and then back: what was handled "in the future" is
        // handled up to now, or the schedule would wait for the clock.
        if st.handled_until.is_some_and(|h| h > now) {
            st.handled_until = Some(now);
        }
        if let Some(mut r) = st.running.take() {
            r.outcome = state::Outcome::Failed;
            r.finished = Some(now);
            r.reason = Some(
                "interrupted: the server ended while it ran (a crash, a kill, an out-of-memory kill)"
                    .into(),
            );
            *st.counts.entry("failed".into()).or_default() += 1;
            st.last_run = Some(r.clone());
            interrupted.push(r);
        }
    }
    dir.save(&state)
        .with_context(|| format!("cannot write the state in {}", config.state_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (listen in the configuration)",
                config.listen
            )
        })?;
    let (stop_tx, stop) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    for s in &config.schedules {
        metrics.declare(s, &state.schedules[&s.name]);
    }
    for r in &config.repositories {
        metrics.declare_repository(&r.name);
    }
    for s in &config.sinks {
        metrics.declare_sink(&s.name);
    }
    let notifier = notify::Notifier::start(&config.sinks, metrics.clone());
    let server = Arc::new(Server {
        runner: Runner {
            program: std::env::current_exe().context("cannot find the ballast binary")?,
            grace: config.shutdown_grace,
        },
        config,
        metrics,
        notifier,
        state: Mutex::new(state),
        dir,
        stop,
    });
    for r in &interrupted {
        server.record(r);
    }
    tracing::info!(
        "ballast server: {} schedules, listening on {}",
        server.config.schedules.len(),
        listener.local_addr()?
    );
    let http = tokio::spawn(http::serve(server.clone(), listener));
    let probe = tokio::spawn(probe::run(server.clone()));
    let mut tasks = Vec::new();
    for s in server.config.schedules.clone() {
        tasks.push(tokio::spawn(scheduler::run(server.clone(), s)));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(
        "stopping: running jobs get {:?} to finish",
        server.config.shutdown_grace
    );
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    probe.abort();
    http.abort();
    Ok(())
}
