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

/// The server's shared state: the state file read (runs it died in recorded as
/// interrupted), every series declared, the notification tasks started.
fn open(config: Config, stop: watch::Receiver<bool>) -> anyhow::Result<Arc<Server>> {
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
    Ok(server)
}

/// A stop on SIGTERM or SIGINT.
fn on_signal() -> std::io::Result<(watch::Sender<bool>, watch::Receiver<bool>)> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let t = tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = t.send(true);
    });
    Ok((tx, rx))
}

/// Runs the server until SIGTERM or SIGINT, then lets the running jobs finish
/// (or stops them after the grace).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (listen in the configuration)",
                config.listen
            )
        })?;
    let (stop_tx, stop) = on_signal()?;
    let server = open(config, stop.clone())?;
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
    let mut stopped = stop;
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            break;
        }
    }
    tracing::info!(
        "stopping: running jobs get {:?} to finish",
        server.config.shutdown_grace
    );
    drop(stop_tx);
    for t in tasks {
        let _ = t.await;
    }
    probe.abort();
    http.abort();
    Ok(())
}

/// Where a one-shot run's metrics go.
pub enum Publish {
    /// A Pushgateway's base URL: the run's series replace the group
    /// `job="ballast", schedule=NAME`.
    Pushgateway(url::Url),
    /// A file for the node exporter's textfile collector, replaced atomically.
    Textfile(std::path::PathBuf),
}

/// Runs one schedule's job once, as the server would (state, run record,
/// retention, notifications), and publishes its metrics: for a CronJob.
pub async fn once(
    mut config: Config,
    schedule: &str,
    publish: &[Publish],
) -> anyhow::Result<RunRecord> {
    let s = config
        .schedules
        .iter()
        .find(|s| s.name == schedule)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = config.schedules.iter().map(|s| s.name.as_str()).collect();
            anyhow::anyhow!(
                "no schedule `{schedule}` in the configuration (schedules: {})",
                names.join(", ")
            )
        })?;
    if s.timing.is_none() {
        anyhow::bail!(
            "schedule `{schedule}` is an etcd capture, which is kept running: run `ballast server` (or `ballast etcd watch`)"
        );
    }
    // Only this schedule's series, and only its repository's.
    config.schedules.retain(|x| x.name == schedule);
    config.repositories.retain(|r| r.name == s.repository.name);
    let (_stop_tx, stop) = on_signal()?;
    let server = open(config, stop)?;
    scheduler::one_run(&server, &s, None).await;
    let record = server.state.lock().unwrap().schedules[schedule]
        .last_run
        .clone()
        .expect("a run records itself");
    // The newest success as the repository knows it: a failed run in a pod with no
    // state volume must not push "never succeeded".
    probe::probe(&server, &s.repository).await;
    server
        .notifier
        .finish(std::time::Duration::from_secs(30))
        .await;
    let text = metrics::classic_text(&server.metrics.encode());
    for p in publish {
        match p {
            Publish::Textfile(path) => {
                let tmp = path.with_extension("ballast-tmp");
                if let Err(e) =
                    std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, path))
                {
                    eprintln!(
                        "warning: cannot write the metrics to {}: {e}",
                        path.display()
                    );
                }
            }
            Publish::Pushgateway(base) => {
                let url = format!(
                    "{}/metrics/job/ballast/schedule/{}",
                    base.as_str().trim_end_matches('/'),
                    url::form_urlencoded::byte_serialize(schedule.as_bytes()).collect::<String>()
                );
                let answer = reqwest::Client::new()
                    .put(&url)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(text.clone())
                    .timeout(std::time::Duration::from_secs(30))
                    .send()
                    .await;
                // The job's outcome stands: a push that fails is said, not made the
                // run's failure (a CronJob would run the job again).
                let host = base.host_str().unwrap_or_default();
                match answer {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => eprintln!(
                        "warning: the Pushgateway at {host} answered {} to the metrics",
                        r.status()
                    ),
                    Err(e) => eprintln!(
                        "warning: cannot push the metrics to the Pushgateway at {host}: {}",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "cannot connect"
                        }
                    ),
                }
            }
        }
    }
    Ok(record)
}
