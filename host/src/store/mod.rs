//! Storage locations: every repository lives in an object store reached through the
//! `object_store` crate. Plain paths and `file://` URLs (local disks, NFS mounts),
//! `s3://` (AWS and S3-compatibles such as MinIO, Garage, Ceph, Alibaba OSS), `gs://`,
//! `az://` and `memory://` are accepted.
//!
//! The repository code is synchronous and runs on ordinary threads; [`Store`] owns a
//! small tokio runtime and drives the async object store from those threads. Every
//! request is counted so that commands can report how many PUTs and GETs they made.

mod error;
mod local;
mod location;

pub use error::StoreError;
pub use location::{Location, StoreOptions};

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tokio::runtime::Runtime;

/// One object as listed: its key relative to the repository root, its size, and
/// when the store says it was last written (by the store's clock).
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<jiff::Timestamp>,
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
    /// The outcome of the consistency probe, once made.
    consistency: Arc<OnceLock<Result<(), String>>>,
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
            consistency: Arc::default(),
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

    fn io_err(&self, key: &str, e: std::io::Error) -> StoreError {
        StoreError::Other {
            location: self.location.to_string(),
            message: format!("{key}: {e}"),
        }
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

    /// Reads a byte range of an object: exactly those bytes, or an error (an object
    /// shorter than the range is damaged, never a short read callers slice into).
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let path = Path::from(key);
        let bytes = self
            .block_on(self.inner.get_range(&path, range.clone()))
            .map_err(|e| self.err(key, e))?;
        self.exact(key, &range, bytes)
    }

    /// Reads several ranges of one object; adjacent ranges may be merged into one request.
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, StoreError> {
        self.counters
            .get
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let path = Path::from(key);
        let parts = self
            .block_on(self.inner.get_ranges(&path, ranges))
            .map_err(|e| self.err(key, e))?;
        ranges
            .iter()
            .zip(parts)
            .map(|(r, b)| self.exact(key, r, b))
            .collect()
    }

    fn exact(&self, key: &str, range: &Range<u64>, bytes: Bytes) -> Result<Bytes, StoreError> {
        let wanted = range.end.saturating_sub(range.start);
        if bytes.len() as u64 != wanted {
            return Err(StoreError::Other {
                location: self.location.to_string(),
                message: format!(
                    "{key}: asked for bytes {}..{}, got {} bytes (is the object truncated?)",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
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

    /// Writes an object in one request, replacing any object of that name. On a
    /// local path the write is on disk (fsync) when this returns.
    pub fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        if let Location::Local(root) = &*self.location {
            return local::put(root, key, &data, false)
                .map(|_| ())
                .map_err(|e| self.io_err(key, e));
        }
        let path = Path::from(key);
        self.block_on(self.inner.put(&path, PutPayload::from_bytes(data)))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// Writes an object only if none of that name exists. Stores that cannot do this
    /// atomically (some S3-compatibles ignore `If-None-Match`) get a HEAD followed by
    /// a PUT. ballast writes this way objects named by a hash of their content (the
    /// window cannot lose data: a second writer writes the same bytes) and `config`
    /// at `repo init`: two `repo init`s at once on such a store may both succeed, the
    /// second's config and key winning; do not run two inits on one location.
    pub fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, StoreError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        if let Location::Local(root) = &*self.location {
            return local::put(root, key, &data, true).map_err(|e| self.io_err(key, e));
        }
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

    /// Checks, once per process, what the repository's lease and its records rely on:
    /// an object just written reads back and is listed, and an object just deleted is
    /// no longer listed (read-after-write and list-after-write consistency, which S3,
    /// GCS, Azure Blob and local file systems give). A store that does not is refused
    /// before anything depends on it.
    pub fn verify_consistency(&self) -> Result<(), StoreError> {
        let outcome = self.consistency.get_or_init(|| {
            let prefix = format!("probe/{}", hex::encode(rand::random::<[u8; 8]>()));
            let key = format!("{prefix}/object");
            let probe = || -> Result<(), String> {
                let body = Bytes::from(hex::encode(rand::random::<[u8; 16]>()));
                self.put(&key, body.clone()).map_err(|e| e.to_string())?;
                let read = self.get(&key).map_err(|e| e.to_string())?;
                if read != body {
                    return Err("an object just written read back with other content".into());
                }
                let listed = self.list(&prefix).map_err(|e| e.to_string())?;
                if !listed.iter().any(|o| o.key == key) {
                    return Err("an object just written was not listed".into());
                }
                self.delete(&key).map_err(|e| e.to_string())?;
                let listed = self.list(&prefix).map_err(|e| e.to_string())?;
                if listed.iter().any(|o| o.key == key) {
                    return Err("an object just deleted was still listed".into());
                }
                Ok(())
            };
            let outcome = probe();
            let _ = self.delete(&key);
            if let Location::Local(root) = &*self.location {
                // The probe's directories, now empty.
                let _ = std::fs::remove_dir(root.join(&prefix));
                let _ = std::fs::remove_dir(root.join("probe"));
            }
            outcome
        });
        outcome.clone().map_err(|detail| StoreError::Inconsistent {
            location: self.location.to_string(),
            detail,
        })
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
                modified: jiff::Timestamp::from_millisecond(m.last_modified.timestamp_millis())
                    .ok(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; deleting one that is already gone is not an error.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counters.delete.fetch_add(1, Ordering::Relaxed);
        if let Location::Local(root) = &*self.location {
            return local::delete(root, key).map_err(|e| self.io_err(key, e));
        }
        let path = Path::from(key);
        match self.block_on(self.inner.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions,
        PutResult,
    };

    /// A store that loses listings: what an eventually consistent store does right
    /// after a write. No such store runs here, so this stands in for one.
    #[derive(Debug)]
    struct ForgetfulListing(InMemory);

    impl std::fmt::Display for ForgetfulListing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("ForgetfulListing")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for ForgetfulListing {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.0.get_opts(location, options).await
        }
        async fn delete(&self, location: &Path) -> object_store::Result<()> {
            self.0.delete(location).await
        }
        fn list(
            &self,
            _prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            futures::stream::empty().boxed()
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.0.copy(from, to).await
        }
        async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.0.copy_if_not_exists(from, to).await
        }
    }

    fn store(inner: Arc<dyn ObjectStore>) -> Store {
        let mut s =
            Store::connect(&Location::Memory("probe-test".into()), &Default::default()).unwrap();
        s.inner = inner;
        s
    }

    #[test]
    fn a_store_that_does_not_list_what_it_just_wrote_is_refused() {
        let s = store(Arc::new(ForgetfulListing(InMemory::new())));
        let e = s.verify_consistency().unwrap_err().to_string();
        assert!(e.contains("was not listed"), "{e}");
        assert!(e.contains("read-after-write"), "{e}");
        // The probe object is cleaned up, and the outcome is remembered.
        assert!(s.verify_consistency().is_err());
        let good = store(Arc::new(InMemory::new()));
        good.verify_consistency().unwrap();
        assert!(good.list("probe").unwrap().is_empty());
    }
}
