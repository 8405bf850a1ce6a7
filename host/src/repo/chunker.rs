//! Content-defined chunking (FastCDC, 2020 variant) with sizes chosen per kind of
//! stream. Boundaries depend on content only, so an insertion shifts at most a chunk or
//! two and everything else deduplicates.

use std::io::Read;

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

/// The kind of stream being chunked; each has chunk sizes that suit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Files of a directory tree (volumes): large chunks keep the index small.
    Files,
    /// An etcd bbolt database: 4 KiB pages updated in place, so smaller chunks keep
    /// a changed page from dragging a megabyte along.
    Bbolt,
    /// Logical database dumps and resource exports: text that shifts on insertions.
    Dump,
}

/// Minimum, average and maximum chunk size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl StreamKind {
    pub fn sizes(self) -> ChunkSizes {
        match self {
            // 1 MiB average like restic; the cap is 4 MiB rather than 8: with FastCDC's
            // normalisation chunks above 4 MiB are rare outside runs of zeros, and the
            // chunking window (twice the cap) is memory every reader holds.
            StreamKind::Files => ChunkSizes {
                min: 512 * 1024,
                avg: 1024 * 1024,
                max: 4 * 1024 * 1024,
            },
            StreamKind::Bbolt => ChunkSizes {
                min: 16 * 1024,
                avg: 64 * 1024,
                max: 256 * 1024,
            },
            StreamKind::Dump => ChunkSizes {
                min: 128 * 1024,
                avg: 512 * 1024,
                max: 2 * 1024 * 1024,
            },
        }
    }
}

/// Chunking parameters for one kind of stream in one repository: sizes, FastCDC masks,
/// and gear tables seeded from the repository key, so that chunk boundaries (and with
/// them chunk sizes) differ between repositories and say less about content.
pub struct Params {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

/// `BALLAST_BBOLT_CHUNKS=MIN,AVG,MAX` (KiB) overrides the bbolt sizes, for the
/// benchmark that compares them (`tests/benchmarks/etcd.py`). Values outside
/// 4 KiB..4 MiB (so that no chunk can outgrow what packs and readers accept) are
/// ignored with a warning.
fn bbolt_override() -> Option<ChunkSizes> {
    let v = std::env::var("BALLAST_BBOLT_CHUNKS").ok()?;
    let n: Vec<u32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    let in_range = |k: u32| (4..=4096).contains(&k);
    match n[..] {
        [min, avg, max]
            if min < avg
                && avg < max
                && avg.is_power_of_two()
                && [min, avg, max].into_iter().all(in_range) =>
        {
            Some(ChunkSizes {
                min: min * 1024,
                avg: avg * 1024,
                max: max * 1024,
            })
        }
        _ => {
            tracing::warn!("ignoring BALLAST_BBOLT_CHUNKS={v:?}: give MIN,AVG,MAX in KiB, increasing, AVG a power of two, each 4..=4096");
            None
        }
    }
}

impl Params {
    pub fn new(kind: StreamKind, seed: u64) -> Params {
        let s = match kind {
            StreamKind::Bbolt => bbolt_override().unwrap_or(kind.sizes()),
            _ => kind.sizes(),
        };
        let bits = v2020::logarithm2(s.avg);
        let normalization = Normalization::Level1.bits();
        let (gear, gear_ls) = v2020::get_gear_with_seed(seed);
        Params {
            min: s.min as usize,
            avg: s.avg as usize,
            max: s.max as usize,
            mask_s: v2020::MASKS[(bits + normalization) as usize],
            mask_l: v2020::MASKS[(bits - normalization) as usize],
            gear,
            gear_ls,
        }
    }

    /// Length of the next chunk at the start of `data`.
    fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = v2020::cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }
}

/// Splits a reader into chunks. The window is one buffer of twice the maximum chunk
/// size, refilled when less than a maximum chunk is left; pass the buffer of the last
/// chunker back in ([`Chunker::into_buffer`]) to reuse it across files.
pub struct Chunker<'p, R> {
    reader: R,
    params: &'p Params,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'p, R: Read> Chunker<'p, R> {
    pub fn new(reader: R, params: &'p Params, mut buf: Vec<u8>) -> Self {
        if buf.len() < 2 * params.max {
            buf = vec![0; 2 * params.max];
        }
        Chunker {
            reader,
            params,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Chunker<'_, R> {
    /// The next chunk, borrowed from the window: a caller that only needs to hash a
    /// chunk it already has copies nothing.
    pub fn next_chunk(&mut self) -> Option<std::io::Result<&[u8]>> {
        if !self.eof && self.end - self.start < self.params.max {
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
        }
        if self.start == self.end {
            return None;
        }
        let n = self.params.cut(&self.buf[self.start..self.end]);
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Some(Ok(chunk))
    }
}

impl<R: Read> Iterator for Chunker<'_, R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().map(|r| r.map(<[u8]>::to_vec))
    }
}

/// Chunks a reader with a fresh buffer (tests, one-off streams).
pub fn chunks<R: Read>(reader: R, params: &Params) -> Chunker<'_, R> {
    Chunker::new(reader, params, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let data = pseudo_random(5_000_000, 7);
        let params = Params::new(StreamKind::Bbolt, 0);
        let parts: Vec<Vec<u8>> = chunks(&data[..], &params).map(|c| c.unwrap()).collect();
        assert_eq!(parts.concat(), data);
        let s = StreamKind::Bbolt.sizes();
        for p in &parts[..parts.len() - 1] {
            assert!(p.len() as u32 >= s.min && p.len() as u32 <= s.max);
        }
    }

    #[test]
    fn matches_the_crate_chunker_and_the_seed_moves_boundaries() {
        let data = pseudo_random(3_000_000, 11);
        let ours: Vec<usize> = chunks(&data[..], &Params::new(StreamKind::Bbolt, 0))
            .map(|c| c.unwrap().len())
            .collect();
        let s = StreamKind::Bbolt.sizes();
        let theirs: Vec<usize> =
            v2020::FastCDC::with_level(&data, s.min, s.avg, s.max, Normalization::Level1)
                .map(|c| c.length)
                .collect();
        assert_eq!(ours, theirs);
        let seeded: Vec<usize> = chunks(&data[..], &Params::new(StreamKind::Bbolt, 7))
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(ours, seeded);
    }

    /// A reader that hands out a few bytes at a time, like a slow pipe.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7919);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_give_the_same_chunks() {
        let data = pseudo_random(2_000_000, 13);
        let params = Params::new(StreamKind::Bbolt, 3);
        let a: Vec<Vec<u8>> = chunks(&data[..], &params).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = chunks(Trickle(&data), &params)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn an_insertion_only_disturbs_nearby_chunks() {
        let data = pseudo_random(4_000_000, 9);
        let mut edited = data.clone();
        edited.splice(2_000_000..2_000_000, b"inserted".iter().copied());
        let params = Params::new(StreamKind::Bbolt, 42);
        let a: std::collections::HashSet<Vec<u8>> =
            chunks(&data[..], &params).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = chunks(&edited[..], &params).map(|c| c.unwrap()).collect();
        let new = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(new <= 3, "{new} chunks changed out of {}", b.len());
    }
}
