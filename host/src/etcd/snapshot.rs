//! `ballast etcd snapshot`: the Maintenance snapshot stream goes straight into the
//! repository (no copy of the database on disk or in memory). etcd ends the stream
//! with the SHA-256 of the database; it is checked as the bytes pass, and a stream
//! that breaks or does not match is not recorded.

use std::io::Read;

use etcd_client::SnapshotStreaming;
use serde_json::json;

use super::connect::{choose, describe, survey, EtcdError, EtcdOptions, MemberStatus};
use super::status::TrailerHash;
use crate::repo::chunker::StreamKind;
use crate::repo::snapshot::{Labels, Snapshot, SnapshotId, Source};
use crate::repo::stream::{self, StreamBackup};
use crate::repo::Repository;
use crate::store::Store;

/// The snapshot stream as a `Read`, hashing everything but the last 32 bytes (the
/// trailer etcd appends) on the way.
struct SnapshotRead<'a> {
    stream: SnapshotStreaming,
    store: &'a Store,
    timeout: std::time::Duration,
    buf: Vec<u8>,
    pos: usize,
    hash: TrailerHash,
    bytes: u64,
    error: Option<String>,
}

impl Read for SnapshotRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let (timeout, stream) = (self.timeout, &mut self.stream);
            let next = self
                .store
                .block_on(async move { tokio::time::timeout(timeout, stream.message()).await });
            match next {
                Ok(Ok(Some(msg))) => {
                    self.buf = msg.blob().to_vec();
                    self.pos = 0;
                    self.hash.update(&self.buf);
                }
                Ok(Ok(None)) => return Ok(0),
                Ok(Err(e)) => {
                    let detail = describe(&e);
                    self.error = Some(detail.clone());
                    return Err(std::io::Error::other(detail));
                }
                Err(_) => {
                    let msg = format!("no data for {:?} (--command-timeout)", self.timeout);
                    self.error = Some(msg.clone());
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The source name of a cluster's snapshots and delta segments.
pub fn source_name(cluster_id: &str) -> String {
    format!("etcd cluster {cluster_id}")
}

/// The outcome of a snapshot: the record, and what the members said.
pub struct Taken {
    pub id: SnapshotId,
    /// The revision the database holds.
    pub revision: i64,
    pub snapshot: Snapshot,
    pub members: Vec<(String, Result<MemberStatus, String>)>,
    pub source: MemberStatus,
}

/// Takes a snapshot from the best member and records it in the repository.
pub fn take(
    repo: &Repository,
    opts: &EtcdOptions,
    labels: &Labels,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Taken, EtcdError> {
    let store = repo.store();
    let members = store.block_on(survey(opts));
    let source = choose(&members)?;
    let endpoint = source.endpoint.clone();
    let stream = store.block_on(async {
        let mut client = opts.connect(&endpoint).await?;
        client.snapshot().await.map_err(|e| EtcdError::Request {
            endpoint: endpoint.clone(),
            detail: describe(&e),
        })
    })?;
    // A snapshot of a large database takes a while to start and to stream; the
    // command timeout applies to each gap between messages, not to the whole stream.
    let mut reader = SnapshotRead {
        stream,
        store,
        timeout: opts.command_timeout.max(std::time::Duration::from_secs(30)),
        buf: vec![],
        pos: 0,
        hash: TrailerHash::default(),
        bytes: 0,
        error: None,
    };
    let spec = StreamBackup {
        name: "etcd.db".into(),
        chunking: StreamKind::Bbolt,
        source: Source {
            kind: "etcd".into(),
            // Named after the cluster, so that retention groups a cluster's
            // snapshots together whichever member served them.
            paths: vec![source_name(&source.cluster_id)],
            meta: Default::default(),
        },
        labels: labels.clone(),
    };
    let written = stream::write(repo, &mut reader, spec, on_progress);
    if let Some(detail) = reader.error.take() {
        return Err(EtcdError::StreamBroken {
            endpoint,
            bytes: reader.bytes,
            detail,
        });
    }
    let mut result = written?;
    if !reader.hash.matches() {
        return Err(EtcdError::Checksum { endpoint });
    }
    // The revision the database holds, read from the stored database itself (the
    // member's status, taken before the stream, can be older: etcd goes on while it
    // streams).
    let revision = stored_revision(repo, &result.snapshot).map_err(|e| {
        EtcdError::Restore(format!(
            "the snapshot from {endpoint} was stored, but its revision cannot be read from it: {e}; no snapshot was recorded"
        ))
    })?;
    let meta = &mut result.snapshot.source.meta;
    for (k, v) in [
        ("cluster_id", json!(source.cluster_id)),
        ("member_id", json!(source.member_id)),
        ("endpoint", json!(endpoint)),
        ("etcd_version", json!(source.version)),
        ("revision", json!(revision)),
        ("member_revision", json!(source.revision)),
        ("raft_index", json!(source.raft_index)),
        ("db_size", json!(result.bytes - 32)),
        ("sha256", json!(hex::encode(reader.hash.trailer()))),
    ] {
        meta.insert(k.into(), v);
    }
    let id = result.snapshot.save(repo)?;
    Ok(Taken {
        id,
        revision,
        snapshot: result.snapshot,
        members: members
            .into_iter()
            .map(|(e, r)| (e, r.map_err(|e| e.to_string())))
            .collect(),
        source,
    })
}

/// The revision of a database stored in the repository: the main revision of the last
/// key of its `key` bucket, read from a few of its pages.
fn stored_revision(repo: &Repository, snapshot: &Snapshot) -> Result<i64, String> {
    let mut db =
        stream::RandomAccess::open(repo, snapshot, Some("etcd.db")).map_err(|e| e.to_string())?;
    let mut read = |offset: u64, len: usize| {
        db.read_at(offset, len)
            .map_err(|e| super::bbolt::BoltError(e.to_string()))
    };
    let last = super::bbolt::paged::last_key(&mut read, super::mvcc::KEY_BUCKET)
        .map_err(|e| e.to_string())?;
    Ok(last
        .as_deref()
        .and_then(super::mvcc::main_revision)
        .unwrap_or(0))
}

/// Writes the database of an etcd snapshot (the bytes etcd sent, trailer included) to
/// a new file; returns the bytes written. An existing file is never replaced.
pub fn export(
    repo: &Repository,
    snapshot: &Snapshot,
    out: &std::path::Path,
) -> Result<u64, EtcdError> {
    let io = |e: std::io::Error| EtcdError::Repo(crate::repo::RepoError::io(out, e));
    require_etcd(snapshot)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io)?;
    let n = write_database(repo, snapshot, &mut file)?;
    file.sync_all().map_err(io)?;
    Ok(n)
}

/// Copies the database of an etcd snapshot into `out`; returns the bytes written.
pub fn write_database(
    repo: &Repository,
    snapshot: &Snapshot,
    out: &mut impl std::io::Write,
) -> Result<u64, EtcdError> {
    require_etcd(snapshot)?;
    let mut reader = stream::StreamReader::open(repo, snapshot, Some("etcd.db"))?;
    std::io::copy(&mut reader, out)
        .map_err(|e| EtcdError::Repo(crate::repo::RepoError::io("etcd.db", e)))
}

fn require_etcd(snapshot: &Snapshot) -> Result<(), EtcdError> {
    if snapshot.source.kind == "etcd" {
        return Ok(());
    }
    Err(EtcdError::Repo(crate::repo::RepoError::Invalid(format!(
        "this is a `{}` backup, not an etcd snapshot",
        snapshot.source.kind
    ))))
}
