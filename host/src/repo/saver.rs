//! The write path shared by every kind of backup: hash -> dedup -> compress -> seal
//! -> pack -> upload.
//!
//! Producers (file readers, a stream chunker) hash chunks and [`Saver::claim`] the
//! ones the repository does not have; claimed chunks go through a bounded channel to
//! encoder threads that compress, seal and append them to the open pack. The encoder
//! that fills a pack uploads it, one PUT, before taking more work: that is the
//! backpressure. Memory stays flat whatever the size of the backup: a few chunks
//! waiting, one open pack per blob kind, and at most one pack per encoder in flight.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use super::blob::{self, BlobId, BlobKind};
use super::index::{self, IndexFile, IndexPack, KnownBlobs, Locations};
use super::pack::{self, FinishedPack, PackBuilder, PackId};
use super::{marks, RepoError, Repository, Result};

/// What the repository already holds, as far as a backup needs to know.
pub struct Known {
    /// The blobs it may deduplicate against, with the packs that hold them.
    pub blobs: Dedup,
    /// Locations of tree blobs, to walk a parent snapshot.
    pub trees: Locations,
    /// Packs left unindexed by an interrupted backup, adopted by this one.
    pub adopted: Vec<IndexPack>,
}

/// Known blobs and the packs their numbers refer to.
#[derive(Default)]
pub struct Dedup {
    pub blobs: KnownBlobs,
    pub packs: Vec<PackId>,
}

/// Loads what a backup deduplicates against: the blobs of packs that are listed in
/// `data/` (an index entry whose pack is gone is ignored, so a backup never depends
/// on it) and not marked by prune (so a backup never comes to depend on a pack that
/// is about to be deleted). Packs that no index lists (an interrupted backup's) are
/// read from their trailers and adopted.
pub fn load_known(repo: &Repository) -> Result<Known> {
    let marked = marks::marked_packs(repo)?;
    let listed: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let usable = |id: &PackId| listed.contains_key(id) && !marked.contains(id);
    let ((mut dedup, mut trees, indexed), _) = index::fold(
        repo,
        || (Dedup::default(), Locations::default(), HashSet::new()),
        |(dedup, trees, indexed), _, file| {
            for p in &file.packs {
                indexed.insert(p.id);
                if !usable(&p.id) {
                    continue;
                }
                dedup.add(p);
                trees.add_pack(p, &mut |kind, _| kind == BlobKind::Tree);
            }
        },
    )?;
    let mut adopted = Vec::new();
    for (id, &size) in &listed {
        if indexed.contains(id) || marked.contains(id) {
            continue;
        }
        match repo.read_pack_trailer(id, size) {
            Ok(p) => {
                dedup.add(&p);
                trees.add_pack(&p, &mut |kind, _| kind == BlobKind::Tree);
                adopted.push(p);
            }
            Err(e) => tracing::warn!("not reusing unindexed pack {}: {e}", id.short()),
        }
    }
    Ok(Known {
        blobs: dedup,
        trees,
        adopted,
    })
}

impl Dedup {
    fn add(&mut self, p: &IndexPack) {
        let n = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        self.packs.push(p.id);
        for e in &p.blobs {
            self.blobs.insert(e.kind, &e.id, n);
        }
    }
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

/// The known blobs, and the packs this backup came to depend on by deduplicating.
struct Claims {
    dedup: Dedup,
    depends: HashSet<u32>,
}

struct Shared {
    repo: Repository,
    known: Mutex<Claims>,
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
    pub fn start(repo: &Repository, known: Dedup, adopted: Vec<IndexPack>) -> Saver {
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            known: Mutex::new(Claims {
                dedup: known,
                depends: HashSet::new(),
            }),
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
    /// A blob the repository already holds makes the backup depend on its pack.
    ///
    /// [`submit`]: Saver::submit
    pub fn claim(&self, kind: BlobKind, id: &BlobId) -> bool {
        let mut k = self.shared.known.lock().unwrap();
        if k.dedup.blobs.insert(kind, id, KnownBlobs::NEW) {
            return true;
        }
        let pack = k.dedup.blobs.get(kind, id).expect("just found");
        if pack != KnownBlobs::NEW {
            k.depends.insert(pack);
        }
        false
    }

    /// Whether the repository holds every one of `ids` in a pack a backup may depend
    /// on (listed, not marked), registering the dependency; for reusing a parent's
    /// content without reading the file.
    pub fn holds_all(&self, kind: BlobKind, ids: &[BlobId]) -> bool {
        let mut k = self.shared.known.lock().unwrap();
        let mut packs = Vec::with_capacity(ids.len());
        for id in ids {
            match k.dedup.blobs.get(kind, id) {
                Some(p) => packs.push(p),
                None => return false,
            }
        }
        k.depends
            .extend(packs.into_iter().filter(|&p| p != KnownBlobs::NEW));
        true
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
        // Checked before the index is written, so that a backup that is not to be
        // recorded leaves no index entry for a pack that may be gone: its packs stay
        // unindexed, for a later backup to adopt or a prune to remove.
        self.check_dependencies(&packs)?;
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

impl Saver {
    /// Every pack this backup's snapshot will depend on must still be there, unmarked,
    /// when its record is about to be written: the packs it deduplicated against, the
    /// packs it uploaded itself and the interrupted backups' packs it adopted. A pack
    /// marked while the backup ran (its last snapshot was forgotten and pruned, or,
    /// for a backup that ran longer than the grace period, the backup's own unindexed
    /// pack) may be deleted by a prune after the grace period, before or after this
    /// record appears: the backup is not recorded then.
    fn check_dependencies(&self, own: &[IndexPack]) -> Result<()> {
        let known = self.shared.known.lock().unwrap();
        if known.depends.is_empty() && own.is_empty() {
            return Ok(());
        }
        let repo = &self.shared.repo;
        let marked = marks::marked_packs(repo)?;
        let listed: HashSet<PackId> = repo.list_packs()?.into_iter().map(|(id, _)| id).collect();
        let gone: Vec<String> = known
            .depends
            .iter()
            .map(|&n| known.dedup.packs[n as usize])
            .chain(own.iter().map(|p| p.id))
            .filter(|id| marked.contains(id) || !listed.contains(id))
            .map(|id| id.short())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        Err(RepoError::Invalid(format!(
            "this backup depends on {} packs that a prune marked for deletion or deleted \
             while it ran (first: {}); it was not recorded, since its snapshot would depend on \
             them. Run it again (it stores that data anew); a backup that runs longer than \
             prune's grace period (--grace) cannot be recorded while prunes run",
            gone.len(),
            gone[0]
        )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::snapshot::Source;
    use crate::repo::stream::{self, StreamBackup};

    fn spec() -> StreamBackup {
        StreamBackup {
            name: "data".into(),
            chunking: crate::repo::chunker::StreamKind::Dump,
            source: Source {
                kind: "stream".into(),
                paths: vec!["data".into()],
                meta: Default::default(),
            },
            labels: Default::default(),
        }
    }

    /// A backup that deduplicated against a pack, which a prune marked while the
    /// backup ran, must not be recorded; one that did not depend on it is.
    #[test]
    fn a_backup_that_depends_on_a_pack_marked_meanwhile_is_not_recorded() {
        let repo = Repository::in_memory_for_tests();
        let data = vec![7u8; 100_000];
        stream::backup(&repo, data.as_slice(), spec()).unwrap();
        let packs: Vec<PackId> = repo
            .list_packs()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();

        // A second backup of the same data starts: everything deduplicates.
        let known = load_known(&repo).unwrap();
        let saver = Saver::start(&repo, known.blobs, known.adopted);
        saver.save(BlobKind::Data, data.clone()).unwrap();
        // Meanwhile the first snapshot is forgotten and a prune marks its packs.
        marks::write(&repo, packs.clone()).unwrap();
        let e = saver.finish().err().expect("not recorded");
        assert!(
            e.to_string().contains("marked for deletion or deleted"),
            "{e}"
        );

        // A backup that starts now does not deduplicate against the marked packs: it
        // stores the data anew and is recorded.
        let known = load_known(&repo).unwrap();
        let saver = Saver::start(&repo, known.blobs, known.adopted);
        saver.save(BlobKind::Data, data.clone()).unwrap();
        let stats = saver.finish().unwrap();
        assert_eq!(stats.blobs_new, 1);
    }

    /// An index entry whose pack is not in `data/` (deleted by a prune that raced
    /// another) is ignored: the backup uploads the blob again.
    #[test]
    fn index_entries_of_missing_packs_are_not_deduplicated_against() {
        let repo = Repository::in_memory_for_tests();
        let data = vec![9u8; 50_000];
        stream::backup(&repo, data.as_slice(), spec()).unwrap();
        for (id, _) in repo.list_packs().unwrap() {
            repo.store().delete(&pack::key(&id)).unwrap();
        }
        let known = load_known(&repo).unwrap();
        assert!(known.blobs.blobs.is_empty());
        let saver = Saver::start(&repo, known.blobs, known.adopted);
        saver.save(BlobKind::Data, data).unwrap();
        assert_eq!(saver.finish().unwrap().blobs_new, 1);
    }
}
