//! `ballast etcd watch`: continuous change capture. The whole keyspace is watched
//! (with previous values) from the revision after the newest one the repository
//! holds; changes are closed into a delta segment every `interval` or every `bytes`,
//! whichever comes first. A broken connection, a restarted etcd or a new leader
//! only pause it: it reconnects and resumes from the last change it received. When
//! the revision it needs has been compacted away, it takes a new full snapshot and
//! carries on from there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions, WatchStream};
use serde::Serialize;

use super::connect::{choose, describe, survey, EtcdError, EtcdOptions};
use super::delta::{self, Record, SegmentInfo};
use super::mvcc::{Change, KeyValue};
use super::pitr::Timeline;
use super::snapshot;
use crate::repo::chunker::StreamKind;
use crate::repo::snapshot::{SnapshotId, Source};
use crate::repo::stream::{self, StreamBackup};
use crate::repo::Repository;

/// How to capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Close a segment this long after its first change (the recovery point).
    pub interval: Duration,
    /// ... or once it holds this many bytes.
    pub bytes: usize,
    /// Stop once every change up to this revision is stored.
    pub until_revision: Option<i64>,
    /// Stop after this long.
    pub run_for: Option<Duration>,
    /// Take a full snapshot this often, so that chains stay short and retention can
    /// let old ones go (segments depend on the newest full snapshot).
    pub full_every: Option<Duration>,
    pub tags: Vec<String>,
}

/// What the capture reports as it goes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    FullSnapshot {
        id: SnapshotId,
        revision: i64,
        reason: String,
    },
    Watching {
        endpoint: String,
        from_revision: i64,
    },
    Segment {
        id: SnapshotId,
        info: SegmentInfo,
        bytes: u64,
    },
    Reconnecting {
        detail: String,
        resume_from: i64,
    },
}

/// The totals of a capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub segments: u64,
    pub changes: u64,
    pub full_snapshots: u64,
    pub last_revision: i64,
}

/// The segment being filled.
struct Pending {
    buf: Vec<u8>,
    changes: u64,
    start_revision: i64,
    end_revision: i64,
    start_ms: i64,
    end_ms: i64,
    opened: Option<Instant>,
}

impl Pending {
    fn new(start_revision: i64) -> Pending {
        Pending {
            buf: vec![],
            changes: 0,
            start_revision,
            end_revision: start_revision - 1,
            start_ms: 0,
            end_ms: 0,
            opened: None,
        }
    }
}

/// The state of one capture.
struct Capture<'a> {
    repo: &'a Repository,
    opts: &'a EtcdOptions,
    cap: &'a CaptureOptions,
    cluster_id: String,
    base: String,
    pending: Pending,
    summary: Summary,
    /// When the newest full snapshot was taken.
    last_full: Instant,
    report: &'a mut dyn FnMut(Progress),
}

impl Capture<'_> {
    /// Stores the pending changes as a segment (nothing when there are none).
    fn flush(&mut self) -> Result<(), EtcdError> {
        if self.pending.changes == 0 {
            return Ok(());
        }
        let p = std::mem::replace(&mut self.pending, Pending::new(0));
        let spec = StreamBackup {
            name: "changes".into(),
            chunking: StreamKind::Dump,
            source: Source {
                kind: delta::DELTA.into(),
                paths: vec![snapshot::source_name(&self.cluster_id)],
                meta: Default::default(),
            },
            tags: self.cap.tags.clone(),
        };
        let mut written = stream::write(self.repo, p.buf.as_slice(), spec, &mut |_| {})?;
        let info = SegmentInfo {
            cluster_id: self.cluster_id.clone(),
            start_revision: p.start_revision,
            end_revision: p.end_revision,
            start_unix_ms: p.start_ms,
            end_unix_ms: p.end_ms,
            changes: p.changes,
            depends_on: self.base.clone(),
        };
        info.store_in(&mut written.snapshot);
        let id = written.snapshot.save(self.repo)?;
        self.summary.segments += 1;
        self.summary.changes += p.changes;
        self.summary.last_revision = p.end_revision;
        self.pending = Pending::new(p.end_revision + 1);
        (self.report)(Progress::Segment {
            id,
            info,
            bytes: written.bytes,
        });
        Ok(())
    }

    /// Takes a full snapshot, which later segments depend on. After a compaction the
    /// capture goes on from its revision (`jump`); otherwise it goes on where it was,
    /// so that the chain from the previous snapshot has no gap.
    fn full_snapshot(&mut self, reason: String, jump: bool) -> Result<i64, EtcdError> {
        let taken = snapshot::take(self.repo, self.opts, self.cap.tags.clone(), &mut |_| {})?;
        self.base = taken.id.to_string();
        self.summary.full_snapshots += 1;
        self.last_full = Instant::now();
        if jump {
            self.summary.last_revision = taken.source.revision;
            self.pending = Pending::new(taken.source.revision + 1);
        }
        (self.report)(Progress::FullSnapshot {
            id: taken.id,
            revision: taken.source.revision,
            reason,
        });
        Ok(taken.source.revision)
    }

    fn full_due(&self) -> bool {
        self.cap
            .full_every
            .is_some_and(|every| self.last_full.elapsed() >= every)
    }

    /// Adds the changes of one watch response.
    fn take_in(&mut self, resp: &etcd_client::WatchResponse) {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut last = None;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let kv = KeyValue::from(kv);
            let prev = ev.prev_kv().map(KeyValue::from);
            last = Some(kv.mod_revision);
            let change = Change::new(ev.event_type() == EventType::Delete, &kv, prev.as_ref());
            delta::encode(&Record::Change(change), &mut self.pending.buf);
            self.pending.changes += 1;
        }
        if let Some(revision) = last {
            delta::encode(
                &Record::Mark {
                    revision,
                    unix_ms: now,
                },
                &mut self.pending.buf,
            );
            let p = &mut self.pending;
            if p.opened.is_none() {
                p.opened = Some(Instant::now());
                p.start_ms = now;
            }
            p.end_ms = now;
            p.end_revision = revision;
        }
    }

    fn due(&self) -> Option<Instant> {
        self.pending.opened.map(|t| t + self.cap.interval)
    }

    fn done(&self, started: Instant) -> bool {
        self.cap
            .until_revision
            .is_some_and(|r| self.pending.end_revision >= r && self.pending.changes == 0)
            || self.cap.run_for.is_some_and(|d| started.elapsed() >= d)
    }
}

/// How a watch stream ended.
enum Ended {
    Stopped,
    FullDue,
    Compacted(i64),
    Broken(String),
}

/// Runs a capture until `stop` is set (SIGINT/SIGTERM in the CLI), `until_revision`
/// is stored, or `run_for` has passed; what was received is stored before it returns.
pub fn capture(
    repo: &Repository,
    opts: &EtcdOptions,
    cap: &CaptureOptions,
    stop: Arc<AtomicBool>,
    report: &mut dyn FnMut(Progress),
) -> Result<Summary, EtcdError> {
    let store = repo.store();
    let started = Instant::now();
    let members = store.block_on(survey(opts));
    let source = choose(&members)?;
    let timeline = Timeline::load(repo, Some(&source.cluster_id))?;
    let mut c = Capture {
        repo,
        opts,
        cap,
        cluster_id: source.cluster_id.clone(),
        base: String::new(),
        pending: Pending::new(0),
        summary: Summary::default(),
        last_full: Instant::now(),
        report,
    };
    let mut resume = match (timeline.newest_full(), timeline.captured_through()) {
        (Some(full), Some(through)) => {
            c.base = full.id.to_string();
            let age = jiff::Timestamp::now().duration_since(full.snapshot.time);
            c.last_full = Instant::now()
                .checked_sub(age.unsigned_abs())
                .unwrap_or_else(Instant::now);
            c.pending = Pending::new(through + 1);
            c.summary.last_revision = through;
            through
        }
        _ => c.full_snapshot(
            format!(
                "the repository holds no full snapshot of cluster {}",
                source.cluster_id
            ),
            true,
        )?,
    };
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) && !c.done(started) {
        let watched = store.block_on(async {
            let members = survey(opts).await;
            let member = choose(&members)?;
            let mut client = opts.connect(&member.endpoint).await?;
            let options = WatchOptions::new()
                .with_all_keys()
                .with_prev_key()
                .with_progress_notify()
                .with_start_revision(resume + 1);
            let (watcher, stream) =
                client
                    .watch("", Some(options))
                    .await
                    .map_err(|e| EtcdError::Request {
                        endpoint: member.endpoint.clone(),
                        detail: describe(&e),
                    })?;
            Ok::<_, EtcdError>((member.endpoint, client, watcher, stream))
        });
        let (endpoint, _client, _watcher, mut stream) = match watched {
            Ok(w) => w,
            Err(e) => {
                (c.report)(Progress::Reconnecting {
                    detail: e.to_string(),
                    resume_from: resume + 1,
                });
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        (c.report)(Progress::Watching {
            endpoint,
            from_revision: resume + 1,
        });
        let ended = follow(&mut c, &mut stream, &stop, started)?;
        c.flush()?;
        resume = c.summary.last_revision.max(resume);
        match ended {
            Ended::Stopped => break,
            Ended::FullDue => {
                let every = c.cap.full_every.unwrap_or_default();
                c.full_snapshot(
                    format!(
                        "scheduled (--full-every {})",
                        humantime::format_duration(every)
                    ),
                    false,
                )?;
            }
            Ended::Compacted(at) => {
                resume = c.full_snapshot(
                    format!(
                        "revision {} was compacted away (etcd keeps history from {at}); \
                         a new full snapshot restarts the chain",
                        resume + 1
                    ),
                    true,
                )?;
            }
            Ended::Broken(detail) => {
                backoff = Duration::from_millis(200);
                (c.report)(Progress::Reconnecting {
                    detail,
                    resume_from: resume + 1,
                });
                std::thread::sleep(backoff);
            }
        }
    }
    c.flush()?;
    Ok(c.summary)
}

/// Follows one watch stream until it ends, closing segments as they fall due.
fn follow(
    c: &mut Capture,
    stream: &mut WatchStream,
    stop: &AtomicBool,
    started: Instant,
) -> Result<Ended, EtcdError> {
    let store = c.repo.store();
    loop {
        if stop.load(Ordering::SeqCst) || c.done(started) {
            return Ok(Ended::Stopped);
        }
        if c.full_due() {
            return Ok(Ended::FullDue);
        }
        // Wake up for the segment deadline, and at least every 250 ms to notice a stop.
        let wait = c
            .due()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(250))
            .min(Duration::from_millis(250));
        let next = store.block_on(async { tokio::time::timeout(wait, stream.message()).await });
        match next {
            Err(_) => {}
            Ok(Ok(Some(resp))) => {
                if resp.compact_revision() > 0 {
                    return Ok(Ended::Compacted(resp.compact_revision()));
                }
                if resp.canceled() {
                    return Ok(Ended::Broken(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    )));
                }
                c.take_in(&resp);
                if c.pending.buf.len() >= c.cap.bytes {
                    c.flush()?;
                }
                if c.cap
                    .until_revision
                    .is_some_and(|r| c.pending.end_revision >= r)
                {
                    c.flush()?;
                }
            }
            Ok(Ok(None)) => return Ok(Ended::Broken("etcd closed the watch".into())),
            Ok(Err(e)) => return Ok(Ended::Broken(describe(&e))),
        }
        if c.due().is_some_and(|d| Instant::now() >= d) {
            c.flush()?;
        }
    }
}
