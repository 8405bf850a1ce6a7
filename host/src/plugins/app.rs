//! Application backups in the repository: a plugin's dump streams into a snapshot
//! (`backup app`), and back out into the plugin (`restore app`, `verify app`).
//!
//! The repository side runs on its own thread and the plugin's on the runtime, joined
//! by a channel of a few chunks: memory stays flat whatever the size of the dump.
//! The snapshot record is written only when every hook succeeded; a failed dump
//! leaves packs that nothing references (`repo prune` removes them).

use std::io::Read;

use serde_json::json;
use tokio::sync::mpsc;

use super::host::streams::{Chunks, Sink, Source};
use super::job::{Job, JobContext, JobOptions, Sequence};
use super::policy::Grants;
use super::runtime::{Loaded, Runtime};
use super::PluginError;
use crate::repo::chunker::StreamKind;
use crate::repo::snapshot::{Labels, Snapshot, SnapshotId, Source as SnapshotSource};
use crate::repo::stream::{self, StreamBackup, StreamReader};
use crate::repo::Repository;

/// Chunks in flight between the plugin and the repository.
const IN_FLIGHT: usize = 8;

/// The kind of snapshot an application backup records.
pub const KIND: &str = "app";

/// A finished job, successful or not.
pub struct Outcome {
    pub sequence: Sequence,
    pub context: std::sync::Arc<JobContext>,
    /// Set when the backup was recorded.
    pub saved: Option<(SnapshotId, Snapshot)>,
}

/// Quiesce, dump into the repository, unquiesce. The record names the plugin, its
/// digest and the target, and keeps the plugin's notes.
pub fn backup(
    rt: &Runtime,
    repo: &Repository,
    plugin: &Loaded,
    grants: Grants,
    target: &str,
    opts: &JobOptions,
    labels: Labels,
) -> Result<Outcome, PluginError> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let spec = StreamBackup {
        name: format!("{}.dump", plugin.info.name),
        chunking: StreamKind::Dump,
        source: SnapshotSource {
            kind: KIND.into(),
            paths: vec![target.to_string()],
            meta: Default::default(),
        },
        labels,
    };
    let (run, written) = std::thread::scope(|s| {
        let writer =
            s.spawn(move || stream::write(repo, ChannelReader::new(rx), spec, &mut |_| {}));
        let run = rt.tokio.block_on(async move {
            let mut job = Job::new(plugin, grants, opts)?;
            let sequence = job.around(target, Some(Sink { tx })).await;
            Ok::<_, PluginError>((sequence, job.finish()))
        });
        (run, writer.join().expect("the repository writer panicked"))
    });
    let (sequence, context) = run?;
    // A repository that failed (no space, a store error) makes the plugin's next
    // write fail with a vague message; the repository's own error says what happened.
    let written = match written {
        Err(e) if sequence.error().is_some() => return Err(e.into()),
        w => w,
    };
    if sequence.error().is_some() {
        return Ok(Outcome {
            sequence,
            context,
            saved: None,
        });
    }
    let mut result = written?;
    let meta = &mut result.snapshot.source.meta;
    for (k, v) in [
        ("plugin", json!(plugin.info.name)),
        ("plugin_version", json!(plugin.info.version)),
        ("plugin_sha256", json!(plugin.sha256)),
        ("wit", json!(plugin.wit.to_string())),
        ("target", json!(target)),
        ("notes", json!(context.journal.notes())),
    ] {
        meta.insert(k.into(), v);
    }
    let id = result.snapshot.save(repo)?;
    Ok(Outcome {
        sequence,
        context,
        saved: Some((id, result.snapshot)),
    })
}

/// The plugin recorded in an application snapshot.
pub fn recorded_plugin(snapshot: &Snapshot) -> Result<(String, String), PluginError> {
    if snapshot.source.kind != KIND {
        return Err(PluginError::Hook(format!(
            "this is a `{}` backup, not an application backup (backup app)",
            snapshot.source.kind
        )));
    }
    let get = |k: &str| {
        snapshot
            .source
            .meta
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    Ok((get("plugin"), get("plugin_sha256")))
}

/// Feeds the dump of `snapshot` to the plugin's `restore` (with a target) or
/// `verify` (without).
pub fn replay(
    rt: &Runtime,
    repo: &Repository,
    snapshot: &Snapshot,
    plugin: &Loaded,
    grants: Grants,
    target: Option<&str>,
    opts: &JobOptions,
) -> Result<(super::job::HookResult, std::sync::Arc<JobContext>), PluginError> {
    recorded_plugin(snapshot)?;
    let reader = StreamReader::open(repo, snapshot, None)?;
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    std::thread::scope(|s| {
        s.spawn(move || pump(reader, tx));
        rt.tokio.block_on(async move {
            let mut job = Job::new(plugin, grants, opts)?;
            let source = Source {
                chunks: Chunks::new(rx),
            };
            let result = job.replay(target, source).await;
            Ok((result, job.finish()))
        })
    })
}

/// Sends a stored dump down the channel until the plugin stops reading.
fn pump(mut reader: StreamReader, tx: mpsc::Sender<Result<super::host::streams::Piece, String>>) {
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let chunk = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                Ok((buf, None))
            }
            Err(e) => Err(e.to_string()),
        };
        let failed = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

/// The receiving end of a sink as a `Read`, for the repository's stream writer.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: vec![],
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
