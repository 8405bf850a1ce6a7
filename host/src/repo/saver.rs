//! The write path shared by every kind of backup: hash -> dedup -> compress -> seal
//! -> pack -> upload.
//!
//! Producers (file readers, a stream chunker) hash chunks and [`Saver::claim`] the
//! ones the repository does not have; claimed chunks go through a bounded channel to
//! encoder threads that compress, seal and append them to the open pack. The encoder
//! that fills a pack uploads it, one PUT, before taking more work: that is the
//! backpressure. Memory stays flat whatever the size of the backup: a few chunks
//! waiting, one open pack per blob kind, and at most one pack per encoder in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use super::blob::{self, BlobId, BlobKind};
use super::index::{self, IndexFile, IndexPack, KnownBlobs, Locations};
use super::pack::{self, FinishedPack, PackBuilder};
use super::{prune, RepoError, Repository, Result};

/// What the repository already holds, as far as a backup needs to know.
pub struct Known {
    pub blobs: KnownBlobs,
    /// Locations of tree blobs, to walk a parent snapshot.
    pub trees: Locations,
    /// Packs left unindexed by an interrupted backup, adopted by this one.
    pub adopted: Vec<IndexPack>,
}

/// Loads what a backup deduplicates against. Packs marked by prune are left out, so a
/// backup never comes to depend on a pack that is about to be deleted; packs that no
/// index lists (an interrupted backup's) are read from their trailers and adopted.
pub fn load_known(repo: &Repository) -> Result<Known> {
    let marked = prune::marked_packs(repo)?;
    let ((mut blobs, mut trees, indexed), _) = index::fold(
        repo,
        || {
            (
                KnownBlobs::default(),
                Locations::default(),
                std::collections::HashSet::new(),
            )
        },
        |(blobs, trees, indexed), _, file| {
            for p in &file.packs {
                indexed.insert(p.id);
                if marked.contains(&p.id) {
                    continue;
                }
                for e in &p.blobs {
                    blobs.insert(e.kind, &e.id);
                }
                trees.add_pack(p, &mut |kind, _| kind == BlobKind::Tree);
            }
        },
    )?;
    let mut adopted = Vec::new();
    for (id, size) in repo.list_packs()? {
        if indexed.contains(&id) || marked.contains(&id) {
            continue;
        }
        match repo.read_pack_trailer(&id, size) {
            Ok(p) => {
                for e in &p.blobs {
                    blobs.insert(e.kind, &e.id);
                }
                trees.add_pack(&p, &mut |kind, _| kind == BlobKind::Tree);
                adopted.push(p);
            }
            Err(e) => tracing::warn!("not reusing unindexed pack {}: {e}", id.short()),
        }
    }
    Ok(Known {
        blobs,
        trees,
        adopted,
    })
}

/// Counters of what a backup added.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SaveStats {
    pub blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_new: u64,
    /// Bytes of new blobs as stored (compressed and sealed).
    pub bytes_stored: u64,
    pub packs_uploaded: u64,
}

struct Job {
    kind: BlobKind,
    id: BlobId,
    data: Vec<u8>,
}

struct Shared {
    repo: Repository,
    known: Mutex<KnownBlobs>,
    data_pack: Mutex<PackBuilder>,
    tree_pack: Mutex<PackBuilder>,
    uploaded: Mutex<Vec<IndexPack>>,
    error: Mutex<Option<RepoError>>,
    failed: AtomicBool,
    blobs_new: AtomicU64,
    bytes_new: AtomicU64,
    bytes_stored: AtomicU64,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// The running write pipeline of one backup.
pub struct Saver {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    encoders: Vec<JoinHandle<()>>,
    adopted: Vec<IndexPack>,
}

/// Threads for compressing and sealing.
fn encoder_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

impl Saver {
    pub fn start(repo: &Repository, known: KnownBlobs, adopted: Vec<IndexPack>) -> Saver {
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            known: Mutex::new(known),
            data_pack: Mutex::default(),
            tree_pack: Mutex::default(),
            uploaded: Mutex::default(),
            error: Mutex::default(),
            failed: AtomicBool::new(false),
            blobs_new: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
        });
        let n = encoder_threads();
        let (job_tx, job_rx) = bounded::<Job>(n);
        let encoders = (0..n)
            .map(|i| {
                let (shared, rx) = (shared.clone(), job_rx.clone());
                std::thread::Builder::new()
                    .name(format!("ballast-encode-{i}"))
                    .spawn(move || encode_loop(&shared, rx))
                    .expect("spawning an encoder thread")
            })
            .collect();
        Saver {
            shared,
            jobs: Some(job_tx),
            encoders,
            adopted,
        }
    }

    pub fn repo(&self) -> &Repository {
        &self.shared.repo
    }

    /// Fails fast once any stage has failed.
    pub fn check(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::SeqCst) {
            Err(self.take_error())
        } else {
            Ok(())
        }
    }

    fn take_error(&self) -> RepoError {
        self.shared.error.lock().unwrap().take().unwrap_or_else(|| {
            RepoError::Invalid("the backup pipeline stopped after an earlier error".into())
        })
    }

    /// Registers a blob as present; `true` means it is new and must be [`submit`]ted.
    ///
    /// [`submit`]: Saver::submit
    pub fn claim(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.shared.known.lock().unwrap().insert(kind, id)
    }

    /// Hands a claimed blob to the encoders; blocks while they are busy.
    pub fn submit(&self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        self.check()?;
        let jobs = self.jobs.as_ref().expect("the saver is running");
        jobs.send(Job { kind, id, data })
            .map_err(|_| self.take_error())
    }

    /// Like [`save`](Saver::save) for borrowed data, copied only if it is new.
    pub fn save_slice(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.shared.repo.blob_id(data);
        if self.claim(kind, &id) {
            self.submit(kind, id, data.to_vec())?;
        }
        Ok(id)
    }

    /// Hashes, deduplicates and (if new) stores a blob; returns its id.
    pub fn save(&self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.shared.repo.blob_id(&data);
        if self.claim(kind, &id) {
            self.submit(kind, id, data)?;
        }
        Ok(id)
    }

    /// Flushes the open packs, waits for every upload and writes the index delta.
    /// After this returns `Ok`, every blob saved is durable and indexed.
    pub fn finish(mut self) -> Result<SaveStats> {
        drop(self.jobs.take());
        for h in self.encoders.drain(..) {
            h.join().expect("an encoder thread panicked");
        }
        if !self.shared.failed.load(Ordering::SeqCst) {
            for builder in [&self.shared.data_pack, &self.shared.tree_pack] {
                let b = std::mem::take(&mut *builder.lock().unwrap());
                if !b.is_empty() {
                    upload(&self.shared, b.finish(self.shared.repo.keys()));
                }
            }
        }
        self.check()?;
        let mut packs = std::mem::take(&mut *self.shared.uploaded.lock().unwrap());
        let packs_uploaded = packs.len() as u64;
        packs.append(&mut self.adopted);
        if !packs.is_empty() {
            index::write(
                &self.shared.repo,
                &IndexFile {
                    packs,
                    supersedes: vec![],
                },
            )?;
        }
        let s = &self.shared;
        Ok(SaveStats {
            blobs_new: s.blobs_new.load(Ordering::Relaxed),
            bytes_new: s.bytes_new.load(Ordering::Relaxed),
            bytes_stored: s.bytes_stored.load(Ordering::Relaxed),
            packs_uploaded,
        })
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        // An abandoned saver (an error elsewhere) stops its threads without writing an
        // index: the packs already uploaded stay unindexed until a later backup adopts
        // them or prune removes them.
        self.shared.failed.store(true, Ordering::SeqCst);
        drop(self.jobs.take());
        for h in self.encoders.drain(..) {
            let _ = h.join();
        }
    }
}

fn encode_loop(shared: &Shared, jobs: Receiver<Job>) {
    let keys = shared.repo.keys();
    let mut sealed = Vec::new();
    for job in jobs {
        if shared.failed.load(Ordering::Relaxed) {
            continue; // drain so that producers never block on a dead pipeline
        }
        sealed.clear();
        blob::seal_into(keys, &job.data, &mut sealed);
        shared.blobs_new.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_new
            .fetch_add(job.data.len() as u64, Ordering::Relaxed);
        shared
            .bytes_stored
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let builder = match job.kind {
            BlobKind::Data => &shared.data_pack,
            BlobKind::Tree => &shared.tree_pack,
        };
        let full = {
            // Cut the pack before it would pass the target size, so that one buffer
            // of the target size holds any pack without growing.
            let mut b = builder.lock().unwrap();
            let full = (!b.is_empty() && b.len() + sealed.len() > pack::TARGET_SIZE)
                .then(|| std::mem::take(&mut *b));
            b.add(job.kind, job.id, job.data.len(), |out| {
                out.extend_from_slice(&sealed)
            });
            full
        };
        if let Some(full) = full {
            upload(shared, full.finish(keys));
        }
    }
}

/// Uploads a finished pack (one PUT) and records it for the index delta.
fn upload(shared: &Shared, p: FinishedPack) {
    if shared.failed.load(Ordering::Relaxed) {
        return;
    }
    let size = p.bytes.len() as u64;
    match shared.repo.store().put(&pack::key(&p.id), p.bytes) {
        Ok(()) => shared.uploaded.lock().unwrap().push(IndexPack {
            id: p.id,
            size,
            blobs: p.entries,
        }),
        Err(e) => shared.fail(e.into()),
    }
}
