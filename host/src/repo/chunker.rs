//! Content-defined chunking (FastCDC, 2020 variant) with sizes chosen per kind of
//! stream. Boundaries depend on content only, so an insertion shifts at most a chunk or
//! two and everything else deduplicates.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
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
            StreamKind::Files => ChunkSizes { min: 512 * 1024, avg: 1024 * 1024, max: 8 * 1024 * 1024 },
            StreamKind::Bbolt => ChunkSizes { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 },
            StreamKind::Dump => ChunkSizes { min: 128 * 1024, avg: 512 * 1024, max: 2 * 1024 * 1024 },
        }
    }
}

/// Splits a reader into chunks; each item is the chunk's bytes.
pub fn chunks<R: Read>(reader: R, kind: StreamKind) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    let s = kind.sizes();
    StreamCDC::with_level(reader, s.min, s.avg, s.max, Normalization::Level1).map(|r| match r {
        Ok(chunk) => Ok(chunk.data),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
        Err(other) => Err(std::io::Error::other(other.to_string())),
    })
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
        let parts: Vec<Vec<u8>> = chunks(&data[..], StreamKind::Bbolt).map(|c| c.unwrap()).collect();
        assert_eq!(parts.concat(), data);
        let s = StreamKind::Bbolt.sizes();
        for p in &parts[..parts.len() - 1] {
            assert!(p.len() as u32 >= s.min && p.len() as u32 <= s.max);
        }
    }

    #[test]
    fn an_insertion_only_disturbs_nearby_chunks() {
        let data = pseudo_random(4_000_000, 9);
        let mut edited = data.clone();
        edited.splice(2_000_000..2_000_000, b"inserted".iter().copied());
        let a: std::collections::HashSet<Vec<u8>> = chunks(&data[..], StreamKind::Bbolt).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = chunks(&edited[..], StreamKind::Bbolt).map(|c| c.unwrap()).collect();
        let new = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(new <= 3, "{new} chunks changed out of {}", b.len());
    }
}
