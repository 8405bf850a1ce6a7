//! One schedule's loop. A cron schedule sleeps until its next time, runs its job
//! unless the previous run still runs (then the run is skipped, and recorded with
//! the reason), and applies its retention after a success. Times that passed while
//! the server was down are recorded as missed, and one run catches up, once. An
//! etcd capture is kept running instead: started again after it ends, with a
//! backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::config::Schedule;
use super::jobs::JobKind;
use super::metrics::{sched, seconds};
use super::runner::{Finished, OnLine, Stop};
use super::state::{Outcome, RunRecord};
use super::{run_id, Server};

/// Cron times counted one by one at most (a server down for years has missed
/// "at least" this many).
const COUNT_CAP: u64 = 10_000;
/// How long a sleep lasts at most before the wall clock is read again (a clock
/// set forward, a machine woken from suspend).
const NAP: Duration = Duration::from_secs(30);

pub async fn run(server: Arc<Server>, s: Schedule) {
    if s.timing.is_some() {
        cron_loop(server, s).await
    } else {
        keep_running(server, s).await
    }
}

/// Sleeps until `t` or the stop; false when stopping.
async fn sleep_until(server: &Server, t: Timestamp) -> bool {
    let mut stop = server.stop.clone();
    loop {
        if *stop.borrow_and_update() {
            return false;
        }
        let now = Timestamp::now();
        if now >= t {
            return true;
        }
        let left = Duration::try_from(t.duration_since(now)).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(left.min(NAP)) => {}
            _ = stop.changed() => {}
        }
    }
}

fn skip_reason(server: &Server, s: &Schedule, reason: &str, scheduled_for: Timestamp, why: &str) {
    server.metrics.skip(&s.name, s.job.kind.name(), reason);
    server.update(&s.name, |st| {
        *st.counts.entry(format!("skipped:{reason}")).or_default() += 1;
    });
    server.record(&RunRecord {
        id: run_id(),
        schedule: s.name.clone(),
        job: s.job.kind.name().to_string(),
        outcome: Outcome::Skipped,
        scheduled_for: Some(scheduled_for),
        started: Timestamp::now(),
        finished: None,
        reason: Some(why.to_string()),
        exit_code: None,
        snapshot_id: None,
        count: None,
    });
}

async fn cron_loop(server: Arc<Server>, s: Schedule) {
    let timing = s.timing.clone().expect("a cron schedule");
    let running = Arc::new(AtomicBool::new(false));
    let now = Timestamp::now();
    let handled = server
        .state
        .lock()
        .unwrap()
        .schedules
        .get(&s.name)
        .and_then(|st| st.handled_until);
    let mut handled = match handled {
        // A first start: nothing was due before it.
        None => {
            server.update(&s.name, |st| st.handled_until = Some(now));
            now
        }
        Some(h) => h,
    };
    let mut runs = Vec::new();
    let mut first = true;
    loop {
        let Some(next) = timing.next_after(handled) else {
            tracing::warn!("schedule {}: its cron expression has no next time", s.name);
            break;
        };
        server
            .metrics
            .next_run
            .get_or_create(&sched(&s))
            .set(seconds(next.max(Timestamp::now())));
        if !sleep_until(&server, next).await {
            break;
        }
        let now = Timestamp::now();
        let (due, last) = timing.due(handled, now, COUNT_CAP);
        let Some(last) = last else { continue };
        let missed = due - 1;
        // One write: a crash between the count and the mark would count twice.
        server.update(&s.name, |st| {
            st.handled_until = Some(last);
            if missed > 0 {
                *st.counts.entry("missed".into()).or_default() += missed;
            }
        });
        handled = last;
        if missed > 0 {
            server
                .metrics
                .missed
                .get_or_create(&sched(&s))
                .inc_by(missed);
            let why = if first {
                "were due while the server was not running"
            } else {
                "passed while the server could not run them (the machine was suspended or overloaded)"
            };
            server.record(&RunRecord {
                id: run_id(),
                schedule: s.name.clone(),
                job: s.job.kind.name().to_string(),
                outcome: Outcome::Missed,
                scheduled_for: Some(next),
                started: now,
                finished: None,
                reason: Some(format!(
                    "{missed} run(s) from {next} {why}; one run catches up now"
                )),
                exit_code: None,
                snapshot_id: None,
                count: Some(missed),
            });
        }
        first = false;
        if running.swap(true, Ordering::SeqCst) {
            skip_reason(
                &server,
                &s,
                "overlap",
                last,
                "the previous run of this schedule is still running",
            );
            continue;
        }
        let server2 = server.clone();
        let s2 = s.clone();
        let running2 = running.clone();
        runs.push(tokio::spawn(async move {
            one_run(&server2, &s2, Some(last)).await;
            running2.store(false, Ordering::SeqCst);
        }));
        runs.retain(|r| !r.is_finished());
    }
    for r in runs {
        let _ = r.await;
    }
}

/// Runs the job once and records it; after a success, its retention.
pub async fn one_run(server: &Server, s: &Schedule, scheduled_for: Option<Timestamp>) -> Outcome {
    run_with(server, s, scheduled_for, None).await
}

/// Runs the job once (its output lines to `on_line`) and records it.
async fn run_with(
    server: &Server,
    s: &Schedule,
    scheduled_for: Option<Timestamp>,
    on_line: Option<OnLine>,
) -> Outcome {
    let labels = sched(s);
    let job = s.job.kind.name();
    let started = Timestamp::now();
    let mut record = RunRecord {
        id: run_id(),
        schedule: s.name.clone(),
        job: job.to_string(),
        outcome: Outcome::Failed,
        scheduled_for,
        started,
        finished: None,
        reason: None,
        exit_code: None,
        snapshot_id: None,
        count: None,
    };
    // Written before it starts: a server that dies meanwhile finds it at its next
    // start and records the run as interrupted.
    server.update(&s.name, |st| {
        st.last_attempt = Some(started);
        st.running = Some(record.clone());
    });
    server.metrics.running.get_or_create(&labels).set(1);
    server
        .metrics
        .last_attempt
        .get_or_create(&labels)
        .set(seconds(started));
    let ran = server
        .runner
        .run_streaming(
            &s.repository,
            &s.job.argv(),
            s.timeout,
            server.stop.clone(),
            on_line,
        )
        .await;
    let finished = Timestamp::now();
    let (result, reason, done) = match ran {
        Ok(f) => {
            let (v, why) = match s.job.kind {
                JobKind::KubeDrill => kube_drill(&f),
                _ => (verdict(&f), reason_of(&f)),
            };
            (v, why, Some(f))
        }
        Err(e) => (
            Outcome::Failed,
            Some(format!(
                "cannot start {}: {e}",
                server.runner.program.display()
            )),
            None,
        ),
    };
    let (read, added) = done.as_ref().map(Finished::bytes).unwrap_or_default();
    let succeeded = matches!(result, Outcome::Succeeded | Outcome::Partial);
    record.outcome = result;
    record.finished = Some(finished);
    record.reason = reason;
    record.exit_code = done.as_ref().and_then(|f| f.exit_code);
    record.snapshot_id = done.as_ref().and_then(Finished::snapshot_id);
    // The state first, then the metrics: a counter is never ahead of what a
    // restart brings back.
    server.update(&s.name, |st| {
        *st.counts.entry(count_key("", result)).or_default() += 1;
        *st.counts.entry("bytes_read".into()).or_default() += read;
        *st.counts.entry("bytes_added".into()).or_default() += added;
        if succeeded {
            st.last_success = Some(finished);
        }
        if result == Outcome::Failed {
            st.last_failure = Some(finished);
        }
        st.running = None;
        st.last_run = Some(record.clone());
    });
    server.metrics.running.get_or_create(&labels).set(0);
    server
        .metrics
        .duration
        .get_or_create(&labels)
        .set(finished.duration_since(started).as_secs_f64());
    server.metrics.ended(&s.name, job, result);
    server
        .metrics
        .bytes_read
        .get_or_create(&labels)
        .inc_by(read);
    server
        .metrics
        .bytes_added
        .get_or_create(&labels)
        .inc_by(added);
    if succeeded {
        server
            .metrics
            .last_success
            .get_or_create(&labels)
            .set(seconds(finished));
    }
    if result == Outcome::Failed {
        server
            .metrics
            .last_failure
            .get_or_create(&labels)
            .set(seconds(finished));
    }
    server.record(&record);
    if succeeded && !server.stopping() {
        if let Some(r) = &s.retention {
            retention(server, s, r).await;
        }
    }
    result
}

/// The state's count a run's end adds to (what [`super::metrics::Metrics::declare`]
/// reads back).
fn count_key(prefix: &str, o: Outcome) -> String {
    match o {
        Outcome::Skipped => format!("{prefix}skipped:locked"),
        o => format!("{prefix}{}", o.name()),
    }
}

/// A Kubernetes drill's verdict from its report: an object the server would refuse,
/// or none tried at all, fails it; objects not tried (deferred for a namespace or CRD
/// the target lacks, or skipped as they exist) make it partial.
fn kube_drill(f: &Finished) -> (Outcome, Option<String>) {
    let n = |k: &str| {
        f.output
            .as_ref()
            .and_then(|o| o["counts"][k].as_u64())
            .unwrap_or(0)
    };
    let tried = n("created") + n("updated") + n("recreated") + n("unchanged");
    match (f.stopped, f.exit_code, f.output.is_some()) {
        (None, Some(0 | 3), true) if n("failed") + n("not_attempted") == 0 && tried == 0 => (
            Outcome::Failed,
            Some(format!(
                "no object was tried ({} deferred, {} skipped): drill into a cluster that has the backup's namespaces",
                n("deferred"),
                n("skipped")
            )),
        ),
        (None, Some(0 | 3), true) if n("failed") + n("not_attempted") == 0 => {
            if n("deferred") > 0 {
                (
                    Outcome::Partial,
                    Some(format!(
                        "{} objects deferred, not tried (their namespaces or CRDs do not exist in the target)",
                        n("deferred")
                    )),
                )
            } else if n("skipped") > 0 {
                (
                    Outcome::Partial,
                    Some(format!(
                        "{} objects exist in the target already and were not tried: drill into a cluster that does not hold them",
                        n("skipped")
                    )),
                )
            } else {
                (Outcome::Succeeded, None)
            }
        }
        (None, Some(_), true) if n("failed") > 0 => (
            Outcome::Failed,
            Some(format!(
                "{} objects would be refused: {}",
                n("failed"),
                f.error()
            )),
        ),
        _ => (Outcome::Failed, Some(f.error())),
    }
}

/// Exit 13: another prune, forget or check held the repository's lease.
const LOCKED: i32 = 13;

fn verdict(f: &Finished) -> Outcome {
    match (f.stopped, f.exit_code) {
        (None, Some(LOCKED)) => Outcome::Skipped,
        // Finished cleanly on the SIGTERM (a capture writes its last segment).
        (Some(Stop::Shutdown), Some(0)) => Outcome::Succeeded,
        (Some(_), _) => Outcome::Failed,
        (None, Some(0)) => Outcome::Succeeded,
        (None, Some(3)) => Outcome::Partial,
        _ => Outcome::Failed,
    }
}

fn reason_of(f: &Finished) -> Option<String> {
    match verdict(f) {
        Outcome::Succeeded => None,
        Outcome::Skipped => Some(format!(
            "locked: another prune, forget or check holds the repository ({})",
            f.error()
        )),
        Outcome::Partial => Some("saved, but incomplete: see the snapshot's warnings".into()),
        _ => Some(f.error()),
    }
}

/// `forget` by the schedule's retention, recorded as a run of job `forget`.
async fn retention(server: &Server, s: &Schedule, r: &super::config::Retention) {
    let started = Timestamp::now();
    let ran = server
        .runner
        .run(
            &s.repository,
            &s.job.forget_argv(r),
            s.timeout,
            server.stop.clone(),
        )
        .await;
    let (result, reason, code) = match &ran {
        Ok(f) => (verdict(f), reason_of(f), f.exit_code),
        Err(e) => (Outcome::Failed, Some(e.to_string()), None),
    };
    server.update(&s.name, |st| {
        *st.counts.entry(count_key("forget:", result)).or_default() += 1
    });
    server.metrics.ended(&s.name, "forget", result);
    server.record(&RunRecord {
        id: run_id(),
        schedule: s.name.clone(),
        job: "forget".into(),
        outcome: result,
        scheduled_for: None,
        started,
        finished: Some(Timestamp::now()),
        reason,
        exit_code: code,
        snapshot_id: None,
        count: None,
    });
}

/// What a capture's `--json` events set: for each stored segment, when it was
/// stored, how old its newest change was then (the lag; the oldest waited at most
/// the segment interval more), and its revision.
fn capture_events(server: &Arc<Server>, s: &Schedule) -> OnLine {
    let server = server.clone();
    let labels = sched(s);
    Arc::new(move |line: &str| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if v["event"] != "segment" {
            return;
        }
        let info = &v["info"];
        let now = Timestamp::now();
        let m = &server.metrics;
        m.capture_last_segment
            .get_or_create(&labels)
            .set(seconds(now));
        // From the segment's newest change: its start may be a progress mark after
        // a quiet spell, which is no change waiting.
        if let Some(newest) = info["end_unix_ms"].as_i64() {
            let lag = (now.as_millisecond() - newest).max(0) as f64 / 1000.0;
            m.capture_lag.get_or_create(&labels).set(lag);
        }
        if let Some(r) = info["end_revision"].as_i64() {
            m.capture_revision.get_or_create(&labels).set(r);
        }
    })
}

/// The backoff after a capture's `n`th end in a row: 1 s doubling, at most 5 min.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(8)).min(Duration::from_secs(300))
}

/// A capture that ran this long is healthy again: the backoff starts over.
const HEALTHY: Duration = Duration::from_secs(600);

async fn keep_running(server: Arc<Server>, s: Schedule) {
    let labels = sched(&s);
    let mut failures = 0;
    while !server.stopping() {
        let started = std::time::Instant::now();
        server.metrics.capture_up.get_or_create(&labels).set(1);
        let result = run_with(&server, &s, None, Some(capture_events(&server, &s))).await;
        server.metrics.capture_up.get_or_create(&labels).set(0);
        if server.stopping() {
            break;
        }
        if started.elapsed() >= HEALTHY {
            failures = 0;
        }
        let wait = backoff(failures);
        failures += 1;
        server.metrics.capture_restarts.get_or_create(&labels).inc();
        server.update(&s.name, |st| {
            *st.counts.entry("restarts".into()).or_default() += 1
        });
        tracing::warn!(
            "schedule {}: the capture ended ({}); starting it again in {wait:?}",
            s.name,
            result.name()
        );
        if !sleep_until(&server, Timestamp::now() + wait).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }

    #[test]
    fn exit_codes_are_outcomes() {
        let f = |code, stopped| Finished {
            exit_code: code,
            stopped,
            ..Default::default()
        };
        assert_eq!(verdict(&f(Some(0), None)), Outcome::Succeeded);
        assert_eq!(verdict(&f(Some(3), None)), Outcome::Partial);
        assert_eq!(verdict(&f(Some(1), None)), Outcome::Failed);
        assert_eq!(verdict(&f(None, None)), Outcome::Failed);
        assert_eq!(verdict(&f(Some(0), Some(Stop::Timeout))), Outcome::Failed);
        assert_eq!(
            verdict(&f(Some(0), Some(Stop::Shutdown))),
            Outcome::Succeeded
        );
        assert_eq!(verdict(&f(Some(1), Some(Stop::Shutdown))), Outcome::Failed);
    }
}
