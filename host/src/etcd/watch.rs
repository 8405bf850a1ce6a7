//! `ballast etcd watch`: continuous change capture. The whole keyspace is watched
//! (with previous values) from the revision after the newest one the repository
//! holds; changes are closed into a delta segment every `interval` or every `bytes`,
//! whichever comes first. When the revision it needs has been compacted away, it takes
//! a new full snapshot and carries on from there.
//!
//! A watch must not stall silently: the recovery point would grow with nobody told.
//! The connection has HTTP/2 keep-alive; when nothing arrives for a heartbeat the
//! capture asks etcd for a progress notification and checks that its member still has
//! a leader; when nothing arrives for three heartbeats, or the member lost its leader,
//! it reconnects (to the best member, [`choose`]). Each progress notification is
//! kept as a mark in the segment in progress: even when nothing changes, the
//! segments say until when the capture was watching. The marks of a quiet stretch
//! are stored with the next segment, at the next change or when the capture stops:
//! until then a point in time inside the current quiet stretch is refused as after
//! the last captured change, and a capture killed with SIGKILL loses those marks
//! (the changes it stored are not affected).
//!
//! Every (re)connection, including the first of a process, starts with a gap: the
//! changes etcd replays from the resume point happened while nobody watched, at times
//! the capture cannot know. A `Gap` record says since when; the first progress
//! notification after the replay ends it. `--to-time` refuses a point inside a gap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions, WatchStream};
use serde::Serialize;

use super::connect::{choose, describe, same_cluster, survey, EtcdError, EtcdOptions};
use super::delta::{self, Record, SegmentInfo};
use super::mvcc::{Change, KeyValue};
use super::pitr::Timeline;
use super::snapshot;
use crate::repo::chunker::StreamKind;
use crate::repo::snapshot::{Labels, SnapshotId, Source};
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
    /// Ask for a progress notification when nothing arrived for this long, and
    /// reconnect after three times this without an answer.
    pub heartbeat: Duration,
    pub labels: Labels,
}

impl CaptureOptions {
    /// The default heartbeat: the segment interval, between 1 and 5 seconds.
    pub fn default_heartbeat(interval: Duration) -> Duration {
        interval.clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
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
    /// Time of its first and last record (change, mark or gap).
    start_ms: i64,
    end_ms: i64,
    /// When its first change arrived (a segment closes `interval` after it).
    opened: Option<Instant>,
    /// It starts inside a gap, open since then.
    gap_since_ms: Option<i64>,
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
            gap_since_ms: None,
        }
    }

    fn record(&mut self, r: &Record, at_ms: i64) {
        delta::encode(r, &mut self.buf);
        if self.start_ms == 0 {
            self.start_ms = at_ms;
        }
        self.end_ms = self.end_ms.max(at_ms);
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
    /// The last moment the capture knew it had every change (its last mark).
    confirmed_ms: i64,
    /// Since when it has not watched, until the next progress notification.
    gap: Option<i64>,
    report: &'a mut dyn FnMut(Progress),
}

impl Capture<'_> {
    /// Stores the pending changes as a segment (nothing when there are none: marks
    /// of a quiet time wait for the next change, with which they are stored).
    fn flush(&mut self) -> Result<(), EtcdError> {
        if self.pending.changes == 0 {
            return Ok(());
        }
        self.store_pending()
    }

    /// At the end of a capture: the pending segment even without changes, so that
    /// its marks say until when the capture watched (a later capture's gap starts
    /// there, not at the last change).
    fn flush_final(&mut self) -> Result<(), EtcdError> {
        if self.pending.changes == 0 && (self.pending.buf.is_empty() || self.gap.is_some()) {
            return Ok(());
        }
        self.store_pending()
    }

    fn store_pending(&mut self) -> Result<(), EtcdError> {
        let p = std::mem::replace(&mut self.pending, Pending::new(0));
        let spec = StreamBackup {
            name: "changes".into(),
            chunking: StreamKind::Dump,
            source: Source {
                kind: delta::DELTA.into(),
                paths: vec![snapshot::source_name(&self.cluster_id)],
                meta: Default::default(),
            },
            labels: self.cap.labels.clone(),
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
            gap_since_ms: p.gap_since_ms,
        };
        info.store_in(&mut written.snapshot);
        let id = written.snapshot.save(self.repo)?;
        self.summary.segments += 1;
        self.summary.changes += p.changes;
        self.summary.last_revision = p.end_revision;
        self.pending = Pending::new(p.end_revision + 1);
        // A gap still open goes on in the next segment.
        self.pending.gap_since_ms = self.gap;
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
        let taken = snapshot::take(self.repo, self.opts, &self.cap.labels, &mut |_| {})?;
        // Recorded, as a snapshot of whatever cluster it came from; but not as part of
        // this capture if that is another cluster.
        if taken.source.cluster_id != self.cluster_id {
            return Err(EtcdError::OtherCluster {
                endpoint: taken.source.endpoint.clone(),
                found: taken.source.cluster_id.clone(),
                expected: self.cluster_id.clone(),
            });
        }
        self.base = taken.id.to_string();
        self.summary.full_snapshots += 1;
        self.last_full = Instant::now();
        if jump {
            self.summary.last_revision = taken.revision;
            self.pending = Pending::new(taken.revision + 1);
            // The snapshot is exact at its revision: what follows is watched (after
            // the gap every connection starts with).
            self.confirmed_ms = taken.snapshot.time.as_millisecond();
        }
        (self.report)(Progress::FullSnapshot {
            id: taken.id,
            revision: taken.revision,
            reason,
        });
        Ok(taken.revision)
    }

    fn full_due(&self) -> bool {
        self.cap
            .full_every
            .is_some_and(|every| self.last_full.elapsed() >= every)
    }

    /// A new watch begins: what it replays happened while nobody watched.
    fn open_gap(&mut self, resume: i64) -> Result<(), EtcdError> {
        self.flush()?;
        let now = jiff::Timestamp::now().as_millisecond();
        let since = self.confirmed_ms.min(now);
        self.pending.record(
            &Record::Gap {
                since_ms: since,
                revision: resume,
            },
            since,
        );
        self.gap = Some(since);
        Ok(())
    }

    /// Adds one watch response: changes, and a mark; or, for a progress
    /// notification, a mark alone (which ends an open gap).
    fn take_in(&mut self, resp: &etcd_client::WatchResponse) {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut last = None;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let kv = KeyValue::from(kv);
            let prev = ev.prev_kv().map(KeyValue::from);
            last = Some(kv.mod_revision);
            let change = Change::new(ev.event_type() == EventType::Delete, &kv, prev.as_ref());
            self.pending.record(&Record::Change(change), now);
            self.pending.changes += 1;
            if self.pending.opened.is_none() {
                self.pending.opened = Some(Instant::now());
            }
        }
        if let Some(revision) = last {
            self.pending.end_revision = self.pending.end_revision.max(revision);
            // While etcd replays what was missed, these changes did not arrive as
            // they happened: no mark until it is caught up.
            if self.gap.is_none() {
                self.mark(revision, now);
            }
            return;
        }
        // A progress notification: etcd's revision when it answered. Only when every
        // change up to it has arrived here is the capture caught up: etcd before
        // 3.4.24 and 3.5.8 answers a progress request at once, ahead of the changes it
        // still has to send (etcd#15220), so a revision past the last change received
        // proves nothing. Every revision is a write, and the whole keyspace is
        // watched, so a quiet, caught-up watch sees the same revision in both.
        let progress = !resp.created() && !resp.canceled() && resp.compact_revision() == 0;
        if let (true, Some(header)) = (progress, resp.header()) {
            let revision = header.revision();
            if revision <= self.pending.end_revision {
                self.gap = None;
                self.mark(self.pending.end_revision, now);
            }
        }
    }

    fn mark(&mut self, revision: i64, now: i64) {
        self.pending.record(
            &Record::Mark {
                revision,
                unix_ms: now,
            },
            now,
        );
        self.confirmed_ms = now;
    }

    /// When the pending segment is due (never while a gap is open: its replay goes
    /// into as few segments as its size allows).
    fn due(&self) -> Option<Instant> {
        if self.gap.is_some() {
            return None;
        }
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
        confirmed_ms: timeline.covered_until_ms().unwrap_or(0),
        gap: None,
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
        let expected = c.cluster_id.clone();
        let watched = store.block_on(async {
            let members = survey(opts).await;
            let member = same_cluster(choose(&members)?, &expected)?;
            let mut client = opts.connect(&member.endpoint).await?;
            let options = WatchOptions::new()
                .with_all_keys()
                .with_prev_key()
                .with_progress_notify()
                .with_start_revision(resume + 1);
            let (mut watcher, stream) =
                client
                    .watch("", Some(options))
                    .await
                    .map_err(|e| EtcdError::Request {
                        endpoint: member.endpoint.clone(),
                        detail: describe(&e),
                    })?;
            // Its answer comes once the replay is done: the end of the gap.
            let _ = watcher.request_progress().await;
            Ok::<_, EtcdError>((member.endpoint, client, watcher, stream))
        });
        let (endpoint, mut client, mut watcher, mut stream) = match watched {
            Ok(w) => w,
            Err(e @ EtcdError::OtherCluster { .. }) => {
                c.flush()?;
                return Err(e);
            }
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
        c.open_gap(resume)?;
        (c.report)(Progress::Watching {
            endpoint: endpoint.clone(),
            from_revision: resume + 1,
        });
        let ended = follow(
            &mut c,
            &mut Watched {
                endpoint: &endpoint,
                client: &mut client,
                watcher: &mut watcher,
                stream: &mut stream,
            },
            &stop,
            started,
        )?;
        c.flush()?;
        resume = c.pending.end_revision.max(resume);
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
    c.flush_final()?;
    Ok(c.summary)
}

/// Before a capture stops: one more progress request, so that its last mark says it
/// watched until now (a later capture's gap starts there). Waits one heartbeat at
/// most; changes that arrive meanwhile are kept.
fn confirm(c: &mut Capture, w: &mut Watched) {
    let store = c.repo.store();
    let deadline = Instant::now() + c.cap.heartbeat;
    let before = c.confirmed_ms;
    let heartbeat = c.cap.heartbeat;
    let asked = store
        .block_on(async { tokio::time::timeout(heartbeat, w.watcher.request_progress()).await });
    if !matches!(asked, Ok(Ok(()))) {
        return;
    }
    while c.confirmed_ms == before {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match store.block_on(async { tokio::time::timeout(left, w.stream.message()).await }) {
            Ok(Ok(Some(resp))) if resp.compact_revision() == 0 && !resp.canceled() => {
                c.take_in(&resp)
            }
            _ => return,
        }
    }
}

/// The watch being followed, and the client to ask its member with.
struct Watched<'a> {
    endpoint: &'a str,
    client: &'a mut etcd_client::Client,
    watcher: &'a mut etcd_client::Watcher,
    stream: &'a mut WatchStream,
}

/// Follows one watch stream until it ends, closing segments as they fall due. When
/// nothing arrives for a heartbeat it asks for progress and checks the member's
/// leader; after three heartbeats of silence it gives up on the stream.
fn follow(
    c: &mut Capture,
    w: &mut Watched,
    stop: &AtomicBool,
    started: Instant,
) -> Result<Ended, EtcdError> {
    let store = c.repo.store();
    let heartbeat = c.cap.heartbeat;
    let mut last_message = Instant::now();
    let mut asked = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || c.done(started) {
            confirm(c, w);
            return Ok(Ended::Stopped);
        }
        if c.full_due() {
            return Ok(Ended::FullDue);
        }
        let silent = last_message.elapsed();
        if silent >= heartbeat * 3 {
            return Ok(Ended::Broken(format!(
                "no change and no progress notification from {} for {}",
                w.endpoint,
                humantime::format_duration(Duration::from_secs(silent.as_secs()))
            )));
        }
        if silent >= heartbeat && asked.elapsed() >= heartbeat {
            asked = Instant::now();
            let timeout = c.opts.command_timeout;
            let checked = store.block_on(async {
                let _ = tokio::time::timeout(timeout, w.watcher.request_progress()).await;
                tokio::time::timeout(timeout, w.client.status()).await
            });
            if let Ok(Ok(status)) = checked {
                if status.leader() == 0 {
                    return Ok(Ended::Broken(format!(
                        "the member at {} has no leader (partitioned from its cluster?)",
                        w.endpoint
                    )));
                }
            }
        }
        // Wake up for the segment deadline, the next heartbeat, and at least every
        // 250 ms to notice a stop.
        let wait = c
            .due()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(250))
            .min(Duration::from_millis(250));
        let next = store.block_on(async { tokio::time::timeout(wait, w.stream.message()).await });
        match next {
            Err(_) => {}
            Ok(Ok(Some(resp))) => {
                last_message = Instant::now();
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
