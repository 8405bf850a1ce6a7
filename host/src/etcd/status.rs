//! `ballast etcd status`: the four numbers `etcdctl snapshot status` prints (HASH,
//! REVISION, TOTAL KEYS, TOTAL SIZE), computed the same way from the bbolt file:
//! CRC-32C over every top-level bucket name and every key and value in key order, the
//! main revision of the last key in the `key` bucket, the count of entries, and the
//! database size from its meta page. A snapshot saved from the etcd API ends with the
//! SHA-256 of the database (its length is then 32 bytes past a multiple of 512); it is
//! verified when present.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bbolt::{Bolt, BoltError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_keys: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    /// Whether the file carried etcd's SHA-256 trailer (and it matched).
    #[serde(rename = "sha256Verified")]
    pub sha256_verified: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a usable etcd snapshot: {source}")]
    Bolt { path: String, source: BoltError },
    #[error("{path}: the SHA-256 at the end of the snapshot does not match its content: the file is damaged (a changed or missing byte)")]
    ChecksumMismatch { path: String },
}

/// The SHA-256 of a stream that ends with it (a snapshot as etcd sends it): every
/// byte but the last 32 is hashed as it passes, and the last 32 are kept to compare.
#[derive(Clone, Default)]
pub struct TrailerHash {
    sha: Sha256,
    tail: Vec<u8>,
}

impl TrailerHash {
    pub fn update(&mut self, block: &[u8]) {
        self.tail.extend_from_slice(block);
        if self.tail.len() > 32 {
            let n = self.tail.len() - 32;
            self.sha.update(&self.tail[..n]);
            self.tail.drain(..n);
        }
    }

    /// Whether the stream so far ended with the SHA-256 of what came before.
    pub fn matches(&self) -> bool {
        self.tail.len() == 32 && self.sha.clone().finalize().as_slice() == self.tail.as_slice()
    }

    /// The trailer seen (the last 32 bytes).
    pub fn trailer(&self) -> &[u8] {
        &self.tail
    }
}

/// Whether a file of `len` bytes ends with etcd's SHA-256 trailer.
pub fn has_checksum(len: u64) -> bool {
    len % 512 == 32
}

/// Status of a snapshot file, read through a memory map (no copy of the database).
pub fn of_file(path: &Path) -> Result<Status, StatusError> {
    let shown = path.display().to_string();
    let io = |source| StatusError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and private to this call; a file truncated under
    // us could fault, which is the same risk every reader of a mapped file takes.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    of_bytes(&map).map_err(|e| match e {
        Inner::Bolt(source) => StatusError::Bolt {
            path: shown.clone(),
            source,
        },
        Inner::Checksum => StatusError::ChecksumMismatch {
            path: shown.clone(),
        },
    })
}

enum Inner {
    Bolt(BoltError),
    Checksum,
}

fn of_bytes(data: &[u8]) -> Result<Status, Inner> {
    let (db, verified) = if has_checksum(data.len() as u64) {
        let (db, sum) = data.split_at(data.len() - 32);
        if Sha256::digest(db).as_slice() != sum {
            return Err(Inner::Checksum);
        }
        (db, true)
    } else {
        (data, false)
    };
    let bolt = Bolt::open(db).map_err(Inner::Bolt)?;
    let mut hash = 0u32;
    let mut revision = 0i64;
    let mut total_keys = 0u64;
    for bucket in bolt.buckets().map_err(Inner::Bolt)? {
        hash = crc32c::crc32c_append(hash, bucket);
        let is_key = bucket == b"key";
        bolt.for_each(bucket, &mut |k, v| {
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, v);
            if is_key && k.len() >= 8 {
                revision = i64::from_be_bytes(k[..8].try_into().unwrap());
            }
            total_keys += 1;
        })
        .map_err(Inner::Bolt)?;
    }
    Ok(Status {
        hash,
        revision,
        total_keys,
        total_size: bolt.size(),
        sha256_verified: verified,
    })
}
