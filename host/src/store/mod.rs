//! Storage locations: every repository lives in an object store reached through the
//! `object_store` crate. Plain paths and `file://` URLs (local disks, NFS mounts),
//! `s3://` (AWS and S3-compatibles such as MinIO, Garage, Ceph, Alibaba OSS), `gs://`,
//! `az://` and `memory://` are accepted.
//!
//! The repository code is synchronous and runs on ordinary threads; [`Store`] owns a
//! small tokio runtime and drives the async object store from those threads. Every
//! request is counted so that commands can report how many PUTs and GETs they made.

mod error;
mod location;

pub use error::StoreError;
pub use location::{Location, StoreOptions};

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tokio::runtime::Runtime;

/// One object as listed: its key relative to the repository root, and its size.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// The outcome of a create-if-absent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
    AlreadyExisted,
}

/// Requests made so far, by kind.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
}

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
}

/// A repository's object store, with a synchronous API.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    runtime: Arc<Runtime>,
    location: Arc<Location>,
    counters: Arc<Counters>,
}

impl Store {
    /// Connects to a location. Nothing is read yet: a missing bucket or wrong
    /// credentials show up on the first request, as a [`StoreError`] that says so.
    pub fn connect(location: &Location, options: &StoreOptions) -> Result<Store, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ballast-io")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Other {
                location: location.to_string(),
                message: format!("cannot start the I/O runtime: {e}"),
            })?;
        let inner = location.build(options)?;
        Ok(Store {
            inner,
            runtime: Arc::new(runtime),
            location: Arc::new(location.clone()),
            counters: Arc::default(),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs a future to completion on the store's runtime. Must not be called from
    /// inside that runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn requests(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            put: c.put.load(Ordering::Relaxed),
            get: c.get.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> StoreError {
        StoreError::classify(&self.location, key, e)
    }

    pub fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        self.block_on(async {
            let r = self.inner.get(&path).await?;
            r.bytes().await
        })
        .map_err(|e| self.err(key, e))
    }

    /// Fetches several objects concurrently; results come back in the order asked.
    pub fn get_many(&self, keys: &[String], concurrency: usize) -> Vec<Result<Bytes, StoreError>> {
        self.counters
            .get
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let inner = &self.inner;
        self.block_on(async {
            futures::stream::iter(keys.iter().map(|key| async move {
                let path = Path::from(key.as_str());
                let r = async { inner.get(&path).await?.bytes().await }.await;
                r.map_err(|e| self.err(key, e))
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await
        })
    }

    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        self.block_on(self.inner.get_range(&path, range))
            .map_err(|e| self.err(key, e))
    }

    /// Reads several ranges of one object; adjacent ranges may be merged into one request.
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, StoreError> {
        self.counters
            .get
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let path = Path::from(key);
        self.block_on(self.inner.get_ranges(&path, ranges))
            .map_err(|e| self.err(key, e))
    }

    /// Size of an object, or `None` if it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        match self.block_on(self.inner.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Writes an object in one request, replacing any object of that name.
    pub fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        self.block_on(self.inner.put(&path, PutPayload::from_bytes(data)))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// Writes an object only if none of that name exists. Stores that cannot do this
    /// atomically fall back to a HEAD followed by a PUT; every object ballast writes this
    /// way is named by a hash of its content, so the window cannot lose data.
    pub fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, StoreError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.block_on(
            self.inner
                .put_opts(&path, PutPayload::from_bytes(data.clone()), opts),
        ) {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExisted),
            Err(object_store::Error::NotImplemented)
            | Err(object_store::Error::NotSupported { .. }) => {
                if self.head(key)?.is_some() {
                    return Ok(Created::AlreadyExisted);
                }
                self.put(key, data).map(|_| Created::Yes)
            }
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Lists every object under a prefix (a "folder" such as `data/`), recursively.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(prefix);
        let objects: Vec<object_store::ObjectMeta> = self
            .block_on(self.inner.list(Some(&path)).try_collect())
            .map_err(|e| self.err(prefix, e))?;
        let mut out: Vec<ObjectInfo> = objects
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; deleting one that is already gone is not an error.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counters.delete.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        match self.block_on(self.inner.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}
