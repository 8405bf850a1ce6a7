//! Snapshot records. A backup exists once, and only once, its record is written: it
//! is the last object a backup writes, with create-if-absent, named by the BLAKE3 of
//! its sealed content.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blob::BlobId;
use super::crypto::{Keys, Sealed};
use super::{RepoError, Repository, Result};

pub const PREFIX: &str = "snapshots/";

super::id::define_id!(
    /// The identity of a snapshot record.
    SnapshotId
);

/// What was backed up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    /// `path` for directory trees, `stream` for a generic stream; later kinds add
    /// `etcd`, `app`, `kube`.
    pub kind: String,
    /// The paths, or the stream's name.
    pub paths: Vec<String>,
    /// Kind-specific facts (an etcd revision, a plugin digest, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// What a backup is labelled with besides its source: tags, and the host name it is
/// recorded under (the machine's, unless given: a CronJob's pod has a new name every
/// run).
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub tags: Vec<String>,
    pub host: Option<String>,
}

impl Labels {
    pub fn tags(tags: Vec<String>) -> Labels {
        Labels { tags, host: None }
    }
}

/// Sizes and counts of one backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes of all files/streams in the snapshot.
    pub total_bytes: u64,
    /// Bytes actually read (files skipped by the parent shortcut are not read).
    pub bytes_read: u64,
    pub blobs_new: u64,
    /// Plaintext bytes of blobs the repository did not have.
    pub bytes_new: u64,
    /// What those blobs take in the repository after compression and sealing.
    pub bytes_stored: u64,
    pub packs_uploaded: u64,
    pub seconds: f64,
}

/// Something that went wrong for one file without failing the backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub time: jiff::Timestamp,
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: Source,
    pub root: BlobId,
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    pub summary: Summary,
    /// Files that vanished, changed while read, or could not be read.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

impl Snapshot {
    pub fn new(source: Source, root: BlobId) -> Snapshot {
        Snapshot {
            time: jiff::Timestamp::now(),
            host: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            tags: vec![],
            source,
            root,
            parent: None,
            summary: Summary::default(),
            warnings: vec![],
        }
    }

    /// Puts `labels` on the record.
    pub fn label(&mut self, labels: &Labels) {
        self.tags = labels.tags.clone();
        if let Some(h) = &labels.host {
            self.host = h.clone();
        }
    }

    /// Writes the record; from this moment the backup exists.
    pub fn save(&self, repo: &Repository) -> Result<SnapshotId> {
        let json = serde_json::to_vec(self).expect("serialising a snapshot");
        let sealed = repo.keys().seal(Sealed::Snapshot, &json);
        let id = SnapshotId(*blake3::hash(&sealed).as_bytes());
        repo.store().verify_consistency()?;
        repo.store().put_if_absent(&key(&id), Bytes::from(sealed))?;
        Ok(id)
    }
}

pub fn key(id: &SnapshotId) -> String {
    format!("{PREFIX}{id}")
}

/// Every readable snapshot, oldest first. A damaged record is skipped with a
/// warning (`repo check` reports it), so that one bad record does not stop listing,
/// retention or backups.
pub fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (good, damaged) = list_all(repo)?;
    for (key, e) in damaged {
        tracing::warn!("skipping snapshot record {key}: {e}");
    }
    Ok(good)
}

/// Every snapshot, oldest first, and the records that cannot be read.
pub fn list_all(
    repo: &Repository,
) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(String, RepoError)>)> {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    let mut keys = Vec::new();
    for o in repo.store().list(PREFIX)? {
        match check_size(&o.key, o.size) {
            Ok(()) => keys.push(o.key),
            Err(e) => damaged.push((o.key, e)),
        }
    }
    for (key, r) in keys.iter().zip(repo.store().get_many(&keys, 16)) {
        let bytes = match r {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue, // forgotten meanwhile
            Err(e) => return Err(e.into()),
        };
        let Some(id) = key
            .strip_prefix(PREFIX)
            .and_then(|h| h.parse::<SnapshotId>().ok())
        else {
            continue;
        };
        match decode(repo.keys(), key, &bytes) {
            Ok(s) => out.push((id, s)),
            Err(e) => damaged.push((key.clone(), e)),
        }
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok((out, damaged))
}

/// A record lists a backup's warnings, so it can grow, but never to this.
const MAX_RECORD: u64 = 64 * 1024 * 1024;

fn check_size(key: &str, size: u64) -> Result<()> {
    if size > MAX_RECORD {
        return Err(RepoError::Damaged {
            what: format!("snapshot record {key}"),
            detail: format!("it is {size} bytes, more than any record ballast writes; not read"),
        });
    }
    Ok(())
}

/// Opens and decodes a sealed snapshot record stored under `key`.
pub fn decode(keys: &Keys, key: &str, sealed: &[u8]) -> Result<Snapshot> {
    let damaged = |detail: String| RepoError::Damaged {
        what: format!("snapshot record {key}"),
        detail,
    };
    if key.strip_prefix(PREFIX) != Some(hex::encode(blake3::hash(sealed).as_bytes()).as_str()) {
        return Err(damaged("its content does not hash to its name".into()));
    }
    let json = keys
        .open(Sealed::Snapshot, sealed)
        .map_err(|_| damaged("it fails authentication".into()))?;
    serde_json::from_slice(&json).map_err(|e| damaged(e.to_string()))
}

/// Loads one snapshot by id, unique id prefix, or `latest`.
/// Like [`find`], with `latest` meaning the newest snapshot of `kind` (so that an
/// etcd command's `latest` is the newest full snapshot, not a delta segment).
pub fn find_of_kind(repo: &Repository, spec: &str, kind: &str) -> Result<(SnapshotId, Snapshot)> {
    if spec != "latest" {
        return find(repo, spec);
    }
    list(repo)?
        .into_iter()
        .rev()
        .find(|(_, s)| s.source.kind == kind)
        .ok_or_else(|| RepoError::NoSuchSnapshot(format!("latest (of kind {kind})")))
}

pub fn find(repo: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    if spec == "latest" {
        return list(repo)?
            .pop()
            .ok_or_else(|| RepoError::NoSuchSnapshot(spec.into()));
    }
    if spec.len() < 4 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!(
            "`{spec}` is not a snapshot id: give `latest` or at least 4 hex digits of an id from `ballast snapshots`"
        )));
    }
    let spec = spec.to_ascii_lowercase();
    // Objects under `snapshots/` whose names are not ids are not records (a record's
    // name is the hash of its content); they are passed over, as `list` does.
    let matches: Vec<(SnapshotId, u64)> = repo
        .store()
        .list(PREFIX)?
        .into_iter()
        .filter_map(|o| {
            let id: SnapshotId = o.key.strip_prefix(PREFIX)?.parse().ok()?;
            id.to_string().starts_with(&spec).then_some((id, o.size))
        })
        .collect();
    match matches.as_slice() {
        [(id, size)] => {
            let key = key(id);
            check_size(&key, *size)?;
            let bytes = repo.store().get(&key)?;
            Ok((*id, decode(repo.keys(), &key, &bytes)?))
        }
        [] => Err(RepoError::NoSuchSnapshot(spec)),
        many => Err(RepoError::AmbiguousSnapshot {
            prefix: spec,
            candidates: many
                .iter()
                .map(|(id, _)| id.to_string()[..12].to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
