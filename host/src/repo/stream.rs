//! The generic streaming writer and reader: one stream in, one stream out. etcd
//! snapshots, database dumps and resource exports all go through here; a stream is
//! stored as a tree with one file node, so `ls`, `restore` and `check` work on it.

use std::io::Read;

use crossbeam_channel::bounded;

use super::blob::{self, BlobId, BlobKind};
use super::chunker::{self, StreamKind};
use super::index::Locations;
use super::pack;
use super::saver::{load_known, Saver};
use super::snapshot::{Labels, Snapshot, SnapshotId, Source};
use super::tree::{Node, NodeKind, Tree};
use super::{RepoError, Repository, Result};

/// What to record about a stream backup.
pub struct StreamBackup {
    /// The file name the stream gets inside the snapshot (`etcd.db`, `dump.sql`).
    pub name: String,
    pub chunking: StreamKind,
    pub source: Source,
    pub labels: Labels,
}

/// The outcome of a stream backup before its record is written.
pub struct StreamResult {
    pub snapshot: Snapshot,
    pub bytes: u64,
}

/// Reads `reader` to its end into the repository. The caller decides whether the
/// stream was good (a checksum, say) and only then calls [`Snapshot::save`]: a stream
/// that broke leaves packs but no snapshot. `on_progress` receives bytes read so far.
pub fn write<R: Read>(
    repo: &Repository,
    reader: R,
    spec: StreamBackup,
    on_progress: &mut dyn FnMut(u64),
) -> Result<StreamResult> {
    let started = std::time::Instant::now();
    let known = load_known(repo)?;
    let saver = Saver::start(repo, known.blobs, known.adopted);
    let mut content = Vec::new();
    let mut total = 0u64;
    let params = chunker::Params::new(spec.chunking, repo.keys().chunker_seed());
    for chunk in chunker::chunks(reader, &params) {
        let chunk = chunk.map_err(|e| RepoError::io(&spec.name, e))?;
        total += chunk.len() as u64;
        content.push(saver.save(BlobKind::Data, chunk)?);
        on_progress(total);
    }
    let mut node = Node::new(spec.name.into_bytes(), NodeKind::File);
    node.mode = 0o100600;
    node.size = total;
    node.mtime_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    node.content = content;
    let root = Tree { nodes: vec![node] }.save(&saver)?;
    let stats = saver.finish()?;
    let mut snapshot = Snapshot::new(spec.source, root);
    snapshot.label(&spec.labels);
    let s = &mut snapshot.summary;
    s.files = 1;
    s.total_bytes = total;
    s.bytes_read = total;
    s.blobs_new = stats.blobs_new;
    s.bytes_new = stats.bytes_new;
    s.bytes_stored = stats.bytes_stored;
    s.packs_uploaded = stats.packs_uploaded;
    s.seconds = started.elapsed().as_secs_f64();
    Ok(StreamResult {
        snapshot,
        bytes: total,
    })
}

/// Writes a stream and records the snapshot in one go.
pub fn backup<R: Read>(
    repo: &Repository,
    reader: R,
    spec: StreamBackup,
) -> Result<(SnapshotId, Snapshot)> {
    let r = write(repo, reader, spec, &mut |_| {})?;
    let id = r.snapshot.save(repo)?;
    Ok((id, r.snapshot))
}

/// A stream stored in a snapshot, read back in order. Blobs are fetched ahead by a
/// background thread with ranged reads that cover runs of neighbouring blobs.
pub struct StreamReader {
    chunks: crossbeam_channel::Receiver<Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    pub size: u64,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl StreamReader {
    /// Opens the single file of a stream snapshot (or the file named `name`).
    pub fn open(
        repo: &Repository,
        snapshot: &Snapshot,
        name: Option<&str>,
    ) -> Result<StreamReader> {
        StreamReader::open_chain(repo, &[snapshot], name)
    }

    /// Reads the streams of several snapshots one after the other, as one stream
    /// (the index is read once, whatever their number).
    pub fn open_chain(
        repo: &Repository,
        snapshots: &[&Snapshot],
        name: Option<&str>,
    ) -> Result<StreamReader> {
        let trees = Locations::load(repo, |kind, _| kind == BlobKind::Tree)?;
        let mut content = vec![];
        let mut size = 0;
        for snapshot in snapshots {
            let node = stream_node(repo, &trees, snapshot, name)?;
            content.extend_from_slice(&node.content);
            size += node.size;
        }
        let wanted: std::collections::HashSet<BlobId> = content.iter().copied().collect();
        let locations = Locations::load(repo, |kind, id| {
            kind == BlobKind::Data && wanted.contains(id)
        })?;
        let (tx, rx) = bounded(8);
        let repo = repo.clone();
        let worker = std::thread::Builder::new()
            .name("ballast-stream-read".into())
            .spawn(move || {
                if let Err(e) = fetch_in_order(&repo, &locations, &content, &tx) {
                    let _ = tx.send(Err(e));
                }
            })
            .expect("spawning the stream reader");
        Ok(StreamReader {
            chunks: rx,
            current: vec![],
            pos: 0,
            size,
            worker: Some(worker),
        })
    }
}

/// The file node of a stream snapshot (or the file named `name`).
fn stream_node(
    repo: &Repository,
    trees: &Locations,
    snapshot: &Snapshot,
    name: Option<&str>,
) -> Result<Node> {
    let tree = Tree::load(repo, trees, &snapshot.root)?;
    match name {
        Some(n) => tree.find(n.as_bytes()),
        None if tree.nodes.len() == 1 && tree.nodes[0].kind == NodeKind::File => tree.nodes.first(),
        None => None,
    }
    .cloned()
    .ok_or_else(|| {
        RepoError::Invalid(
            "the snapshot does not hold a single stream; name the file to read".into(),
        )
    })
}

/// A stream stored in a snapshot, read at any offset, one blob at a time: for the
/// few pages of a database file a command needs, without reading the rest.
pub struct RandomAccess {
    repo: Repository,
    locations: Locations,
    /// Each blob with its offset in the stream.
    blobs: Vec<(u64, BlobId)>,
    pub size: u64,
    /// The last blob read.
    cached: Option<(usize, Vec<u8>)>,
}

impl RandomAccess {
    pub fn open(repo: &Repository, snapshot: &Snapshot, name: Option<&str>) -> Result<Self> {
        let trees = Locations::load(repo, |kind, _| kind == BlobKind::Tree)?;
        let node = stream_node(repo, &trees, snapshot, name)?;
        let wanted: std::collections::HashSet<BlobId> = node.content.iter().copied().collect();
        let locations = Locations::load(repo, |kind, id| {
            kind == BlobKind::Data && wanted.contains(id)
        })?;
        let mut blobs = Vec::with_capacity(node.content.len());
        let mut at = 0u64;
        for id in &node.content {
            let l = locations.get(id).ok_or_else(|| RepoError::BlobNotIndexed {
                blob: id.to_string(),
            })?;
            blobs.push((at, *id));
            at += l.raw_len as u64;
        }
        Ok(RandomAccess {
            repo: repo.clone(),
            locations,
            blobs,
            size: at,
            cached: None,
        })
    }

    /// `len` bytes at `offset`: exactly, or an error past the end.
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                RepoError::Invalid(format!(
                    "bytes {offset}..+{len} lie past the end of the stream ({} bytes)",
                    self.size
                ))
            })?;
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while pos < end {
            let i = self.blobs.partition_point(|(start, _)| *start <= pos) - 1;
            if self.cached.as_ref().map(|c| c.0) != Some(i) {
                let data = self.repo.read_blob(&self.locations, &self.blobs[i].1)?;
                self.cached = Some((i, data));
            }
            let (start, data) = (self.blobs[i].0, &self.cached.as_ref().expect("just read").1);
            let from = (pos - start) as usize;
            let take = data.len().saturating_sub(from).min((end - pos) as usize);
            if take == 0 {
                return Err(RepoError::Invalid(
                    "a blob of the stream is shorter than its index says".into(),
                ));
            }
            out.extend_from_slice(&data[from..from + take]);
            pos += take as u64;
        }
        Ok(out)
    }
}

/// Largest span fetched in one ranged read.
const MAX_SPAN: u64 = 16 * 1024 * 1024;

fn fetch_in_order(
    repo: &Repository,
    locations: &Locations,
    content: &[BlobId],
    tx: &crossbeam_channel::Sender<Result<Vec<u8>>>,
) -> Result<()> {
    let mut i = 0;
    while i < content.len() {
        // Gather a run of blobs that lie back to back in one pack.
        let first = locations
            .get(&content[i])
            .ok_or_else(|| RepoError::BlobNotIndexed {
                blob: content[i].to_string(),
            })?;
        let start = first.offset as u64;
        let mut end = start + first.length as u64;
        let mut j = i + 1;
        while j < content.len() {
            match locations.get(&content[j]) {
                Some(l)
                    if l.pack == first.pack && l.offset as u64 == end && end - start < MAX_SPAN =>
                {
                    end += l.length as u64;
                    j += 1;
                }
                _ => break,
            }
        }
        let span = repo
            .store()
            .get_range(&pack::key(&locations.pack(first.pack)), start..end)?;
        for id in &content[i..j] {
            let l = locations.get(id).expect("located above");
            let off = (l.offset as u64 - start) as usize;
            let plain = blob::open(repo.keys(), id, &span[off..off + l.length as usize])?;
            if tx.send(Ok(plain)).is_err() {
                return Ok(()); // the reader was dropped
            }
        }
        i = j;
    }
    Ok(())
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // Unblock the fetcher, then wait for it.
        let (_, dead) = bounded(0);
        self.chunks = dead;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        Repository::in_memory_for_tests()
    }

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'k'
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn spec(name: &str) -> StreamBackup {
        StreamBackup {
            name: name.into(),
            chunking: StreamKind::Bbolt,
            source: Source {
                kind: "stream".into(),
                paths: vec![name.into()],
                meta: Default::default(),
            },
            labels: Labels::default(),
        }
    }

    #[test]
    fn a_stream_reads_back_byte_for_byte_and_edits_deduplicate() {
        let repo = repo();
        let original = data(6_000_000, 3);
        let (_, first) = backup(&repo, &original[..], spec("etcd.db")).unwrap();
        assert_eq!(first.summary.total_bytes, original.len() as u64);
        let mut back = Vec::new();
        StreamReader::open(&repo, &first, None)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, original);

        // Change 4 KiB in the middle: only a chunk or two is new.
        let mut edited = original.clone();
        edited[3_000_000..3_004_096].fill(0xEE);
        let (_, second) = backup(&repo, &edited[..], spec("etcd.db")).unwrap();
        assert!(second.summary.bytes_new < 600_000, "{:?}", second.summary);
        let mut back = Vec::new();
        StreamReader::open(&repo, &second, Some("etcd.db"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, edited);
    }

    #[test]
    fn a_stored_stream_reads_back_at_any_offset() {
        let repo = repo();
        let d = data(3_000_000, 9);
        let (_, snap) = backup(&repo, d.as_slice(), spec("db")).unwrap();
        let mut r = RandomAccess::open(&repo, &snap, None).unwrap();
        assert_eq!(r.size, d.len() as u64);
        for (off, len) in [
            (0u64, 4096usize),
            (4096, 16),
            (1_000_000, 700_000),
            (2_999_990, 10),
            (0, 3_000_000),
        ] {
            assert_eq!(
                r.read_at(off, len).unwrap(),
                &d[off as usize..off as usize + len],
                "{off}+{len}"
            );
        }
        assert!(r.read_at(2_999_990, 11).is_err());
    }

    #[test]
    fn an_empty_stream_is_a_valid_snapshot() {
        let repo = repo();
        let (_, snap) = backup(&repo, &b""[..], spec("empty")).unwrap();
        let mut back = Vec::new();
        StreamReader::open(&repo, &snap, None)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
