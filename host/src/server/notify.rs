//! Notifications: Slack, PagerDuty (Events API v2) and a generic webhook with a
//! stable JSON body (docs/server.md#notifications). A run's record is queued and
//! sent by one task per sink, retried with a backoff; a sink that is down never
//! delays or fails a backup, and a misconfigured one is an error at
//! `--check-config`. Webhook addresses and keys are secrets: they are read from
//! files and never logged (a failure names the sink, not its address).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::state::{Outcome, RunRecord};

/// A sink as written in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    pub slack: Option<SlackFile>,
    pub pagerduty: Option<PagerDutyFile>,
    pub webhook: Option<WebhookFile>,
    /// The outcomes it is told of; default failed, partial, missed and skipped.
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    /// A file holding the incoming-webhook URL (it is a secret).
    pub webhook_url_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyFile {
    /// A file holding the integration's routing key.
    pub routing_key_file: PathBuf,
    /// Default https://events.pagerduty.com/v2/enqueue.
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// The URL, or `url_file` when the URL holds a token.
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Slack { url: String },
    PagerDuty { url: String, routing_key: String },
    Webhook { url: String },
}

/// A sink, checked: its secret read, its address parsed.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub kind: Kind,
    pub on: Vec<Outcome>,
}

const DEFAULT_ON: [Outcome; 4] = [
    Outcome::Failed,
    Outcome::Partial,
    Outcome::Missed,
    Outcome::Skipped,
];

fn secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim().to_string();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line)
}

/// A URL that can be posted to; the message never repeats it (it may hold a token).
fn http_url(text: &str, what: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(text.to_string())
        }
        Ok(_) => Err(format!("{what} is not an http:// or https:// address")),
        Err(e) => Err(format!("{what} is not a URL ({e})")),
    }
}

impl Sink {
    pub fn load(name: &str, f: &SinkFile) -> Result<Sink, String> {
        let kinds = [
            f.slack.is_some(),
            f.pagerduty.is_some(),
            f.webhook.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("give exactly one of slack, pagerduty, webhook".into());
        }
        let kind = if let Some(s) = &f.slack {
            Kind::Slack {
                url: http_url(
                    &secret(&s.webhook_url_file)?,
                    "the Slack webhook URL in webhook_url_file",
                )?,
            }
        } else if let Some(p) = &f.pagerduty {
            Kind::PagerDuty {
                url: http_url(
                    p.url
                        .as_deref()
                        .unwrap_or("https://events.pagerduty.com/v2/enqueue"),
                    "url",
                )?,
                routing_key: secret(&p.routing_key_file)?,
            }
        } else {
            let w = f.webhook.as_ref().expect("one kind");
            let url = match (&w.url, &w.url_file) {
                (Some(u), None) => http_url(u, "url")?,
                (None, Some(p)) => http_url(&secret(p)?, "the URL in url_file")?,
                _ => return Err("a webhook takes url or url_file".into()),
            };
            Kind::Webhook { url }
        };
        let on = match &f.on {
            None => DEFAULT_ON.to_vec(),
            Some(list) => list
                .iter()
                .map(|o| {
                    Outcome::parse(o).ok_or_else(|| {
                        format!(
                            "on: no outcome `{o}` (succeeded, partial, failed, skipped, missed)"
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Sink {
            name: name.to_string(),
            kind,
            on,
        })
    }
}

/// The webhook body (version 1; its fields are documented and only ever added to).
pub fn body(r: &RunRecord, next_run: Option<jiff::Timestamp>) -> Value {
    json!({
        "version": 1,
        "server": crate::sysinfo::hostname(),
        "schedule": r.schedule,
        "job": r.job,
        "run_id": r.id,
        "phase": r.outcome.name(),
        "error": r.reason,
        "scheduled_for": r.scheduled_for,
        "started": r.started,
        "finished": r.finished,
        "exit_code": r.exit_code,
        "snapshot_id": r.snapshot_id,
        "missed": r.count,
        "next_run": next_run,
    })
}

fn summary(r: &RunRecord) -> String {
    let what = format!(
        "ballast: schedule {} ({}) {}",
        r.schedule,
        r.job,
        r.outcome.name()
    );
    match &r.reason {
        Some(why) => format!("{what}: {why}"),
        None => what,
    }
}

/// What one sink is sent for a record.
fn request(kind: &Kind, r: &RunRecord, next_run: Option<jiff::Timestamp>) -> (String, Value) {
    match kind {
        Kind::Slack { url } => (url.clone(), json!({ "text": summary(r) })),
        Kind::Webhook { url } => (url.clone(), body(r, next_run)),
        Kind::PagerDuty { url, routing_key } => {
            let action = if r.outcome == Outcome::Succeeded {
                "resolve"
            } else {
                "trigger"
            };
            let severity = if r.outcome == Outcome::Failed {
                "error"
            } else {
                "warning"
            };
            (
                url.clone(),
                json!({
                    "routing_key": routing_key,
                    "event_action": action,
                    // One incident per schedule: a success resolves it.
                    "dedup_key": format!("ballast/{}/{}", crate::sysinfo::hostname(), r.schedule),
                    "payload": {
                        "summary": summary(r),
                        "source": crate::sysinfo::hostname(),
                        "severity": severity,
                        "component": r.schedule,
                        "group": r.job,
                        "custom_details": body(r, next_run),
                    },
                }),
            )
        }
    }
}

/// One queued notification.
pub struct Message {
    pub record: RunRecord,
    pub next_run: Option<jiff::Timestamp>,
}

/// The handle the scheduler sends records to.
pub struct Notifier {
    queues: std::sync::Mutex<Vec<(Sink, mpsc::Sender<Arc<Message>>)>>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// Messages waiting per sink; more are dropped (and counted as failures).
const QUEUE: usize = 256;
/// Attempts per message: 1 s, 2 s, 4 s, 8 s between them.
const ATTEMPTS: u32 = 5;

pub trait Counts: Send + Sync + 'static {
    fn sent(&self, sink: &str);
    fn failed(&self, sink: &str);
}

impl Notifier {
    /// Starts one sending task per sink.
    pub fn start(sinks: &[Sink], counts: Arc<dyn Counts>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for sink in sinks {
            let (tx, mut rx) = mpsc::channel::<Arc<Message>>(QUEUE);
            let s = sink.clone();
            let client = client.clone();
            let counts = counts.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if deliver(&client, &s, &m).await {
                        counts.sent(&s.name);
                    } else {
                        counts.failed(&s.name);
                    }
                }
            }));
            queues.push((sink.clone(), tx));
        }
        Notifier {
            queues: std::sync::Mutex::new(queues),
            tasks: Arc::new(std::sync::Mutex::new(tasks)),
        }
    }

    /// Sends what is queued (each message with its retries, at most `limit` in
    /// all), then stops: the end of a one-shot run.
    pub async fn finish(&self, limit: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        self.queues.lock().unwrap().clear();
        let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
    }

    /// Queues a record for the sinks that asked for its outcome; never waits.
    pub fn send(&self, names: &[String], m: Message, counts: &dyn Counts) {
        let m = Arc::new(m);
        for (sink, tx) in self.queues.lock().unwrap().iter() {
            if !names.contains(&sink.name) || !sink.on.contains(&m.record.outcome) {
                continue;
            }
            if tx.try_send(m.clone()).is_err() {
                tracing::warn!(
                    "notification sink {}: its queue is full; a notification was dropped",
                    sink.name
                );
                counts.failed(&sink.name);
            }
        }
    }
}

async fn deliver(client: &reqwest::Client, s: &Sink, m: &Message) -> bool {
    let (url, body) = request(&s.kind, &m.record, m.next_run);
    let body = serde_json::to_vec(&body).expect("JSON");
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        match req.send().await {
            Ok(r) if r.status().is_success() => return true,
            // The URL may hold a token: the sink's name is said, not its address.
            Ok(r) => tracing::warn!(
                "notification sink {}: answered {} (attempt {}/{ATTEMPTS})",
                s.name,
                r.status(),
                attempt + 1
            ),
            Err(e) => tracing::warn!(
                "notification sink {}: {} (attempt {}/{ATTEMPTS})",
                s.name,
                if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                },
                attempt + 1
            ),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome) -> RunRecord {
        RunRecord {
            id: "r1".into(),
            schedule: "etcd".into(),
            job: "etcd-snapshot".into(),
            outcome,
            scheduled_for: None,
            started: "2026-12-08T03:00:00Z".parse().unwrap(),
            finished: None,
            reason: Some("error: cannot reach etcd".into()),
            exit_code: Some(1),
            snapshot_id: None,
            count: None,
        }
    }

    #[test]
    fn pagerduty_triggers_on_failure_and_resolves_on_success_by_schedule() {
        let k = Kind::PagerDuty {
            url: "http://127.0.0.1:1/".into(),
            routing_key: "key".into(),
        };
        let (_, fail) = request(&k, &record(Outcome::Failed), None);
        let (_, ok) = request(&k, &record(Outcome::Succeeded), None);
        assert_eq!(fail["event_action"], "trigger");
        assert_eq!(fail["payload"]["severity"], "error");
        assert_eq!(ok["event_action"], "resolve");
        assert_eq!(fail["dedup_key"], ok["dedup_key"]);
        assert_eq!(fail["routing_key"], "key");
    }

    #[test]
    fn a_sink_names_its_mistakes_and_never_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "ftp://hooks.example/T0KEN\n").unwrap();
        let sink = SinkFile {
            slack: Some(SlackFile {
                webhook_url_file: f.clone(),
            }),
            pagerduty: None,
            webhook: None,
            on: None,
        };
        let e = Sink::load("s", &sink).unwrap_err();
        assert!(e.contains("not an http"), "{e}");
        assert!(!e.contains("T0KEN"), "{e}");
        let none = SinkFile {
            slack: None,
            pagerduty: None,
            webhook: None,
            on: None,
        };
        assert!(Sink::load("s", &none).unwrap_err().contains("exactly one"));
        std::fs::write(&f, "https://hooks.example/T0KEN\n").unwrap();
        let on = SinkFile {
            on: Some(vec!["failed".into(), "exploded".into()]),
            ..sink
        };
        assert!(Sink::load("s", &on).unwrap_err().contains("exploded"));
    }
}
