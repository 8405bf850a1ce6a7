//! Blobs: the unit of deduplication. A blob is a chunk of a stream (data) or an
//! encoded directory listing (tree). Stored, a blob is compressed when that pays, then
//! sealed: `seal(tag || body)` where tag 0 means raw and tag 1 means
//! `raw_len (u32 LE) || zstd frame`.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::crypto::{Keys, Sealed};

super::id::define_id!(
    /// The identity of a blob: keyed BLAKE3 of its plaintext.
    BlobId
);

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Below this many bytes compression is not worth a try.
const MIN_COMPRESS: usize = 128;

thread_local! {
    static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> =
        RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd level 1"));
}

/// Compresses (when it pays) and seals a blob's plaintext, appending to `out`.
pub fn seal_into(keys: &Keys, plaintext: &[u8], out: &mut Vec<u8>) {
    let body = compress(plaintext);
    match body {
        Some(compressed) => {
            let mut framed = Vec::with_capacity(compressed.len() + 5);
            framed.push(ZSTD);
            framed.extend_from_slice(&(plaintext.len() as u32).to_le_bytes());
            framed.extend_from_slice(&compressed);
            keys.seal_into(Sealed::Blob, &framed, out);
        }
        None => {
            let mut framed = Vec::with_capacity(plaintext.len() + 1);
            framed.push(RAW);
            framed.extend_from_slice(plaintext);
            keys.seal_into(Sealed::Blob, &framed, out);
        }
    }
}

/// zstd level 1, or `None` when the data does not shrink by at least 3%. Large
/// chunks are sampled first so that random or already-compressed data costs one small
/// trial instead of a full pass.
fn compress(plaintext: &[u8]) -> Option<Vec<u8>> {
    if plaintext.len() < MIN_COMPRESS {
        return None;
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        const SAMPLE: usize = 16 * 1024;
        if plaintext.len() > 4 * SAMPLE {
            let mid = plaintext.len() / 2;
            let sample = &plaintext[mid - SAMPLE / 2..mid + SAMPLE / 2];
            let trial = c.compress(sample).ok()?;
            if trial.len() * 100 > sample.len() * 95 {
                return None;
            }
        }
        let out = c.compress(plaintext).ok()?;
        (out.len() * 100 <= plaintext.len() * 97).then_some(out)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is damaged: it fails authentication (a flipped or missing byte, or another repository's data)")]
    Authentication(String),
    #[error("blob {0} is damaged: {1}")]
    Format(String, String),
    #[error("blob {0} is damaged: its content does not hash to its id")]
    HashMismatch(String),
}

/// The largest plaintext a blob may claim: more than any chunk or tree ballast
/// writes (a blob lives in a pack of at most 128 MiB), and a bound on what a crafted
/// blob can make a reader allocate.
pub const MAX_PLAIN: usize = 512 * 1024 * 1024;

/// Opens a sealed blob, decompresses it and checks that it hashes to `id`. Each
/// thread keeps one [`Opener`]: a zstd context costs more to make than a small
/// blob costs to open (a restore of 30,000 Kubernetes objects spent a tenth of its
/// time making them).
pub fn open(keys: &Keys, id: &BlobId, sealed: &[u8]) -> Result<Vec<u8>, BlobError> {
    thread_local! {
        static OPENER: std::cell::RefCell<Opener> = std::cell::RefCell::new(Opener::default());
    }
    OPENER.with(|o| {
        let mut o = o.borrow_mut();
        let plain = o.open(keys, id, sealed).map(<[u8]>::to_vec);
        o.forget();
        plain
    })
}

/// Opens blobs one after another with buffers and a zstd context that are reused,
/// for loops that open many blobs (restore, check).
pub struct Opener {
    framed: Vec<u8>,
    out: Vec<u8>,
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Default for Opener {
    fn default() -> Self {
        Opener {
            framed: Vec::new(),
            out: Vec::new(),
            zstd: zstd::bulk::Decompressor::new().expect("a zstd context"),
        }
    }
}

impl Opener {
    /// Zeroes the plaintext it held, and gives back buffers a large blob grew past
    /// 1 MiB (a thread's opener lives as long as the thread: it keeps neither a
    /// copy of a secret nor much memory).
    fn forget(&mut self) {
        use zeroize::Zeroize;
        const KEEP: usize = 1 << 20;
        for b in [&mut self.framed, &mut self.out] {
            b.as_mut_slice().zeroize();
            b.clear();
            if b.capacity() > KEEP {
                b.shrink_to(KEEP);
            }
        }
    }

    /// Opens, decompresses and checks one blob; the plaintext lives until the next call.
    pub fn open(&mut self, keys: &Keys, id: &BlobId, sealed: &[u8]) -> Result<&[u8], BlobError> {
        keys.open_into(Sealed::Blob, sealed, &mut self.framed)
            .map_err(|_| BlobError::Authentication(id.to_string()))?;
        let plaintext: &[u8] = match self.framed.first() {
            Some(&RAW) => &self.framed[1..],
            Some(&ZSTD) if self.framed.len() >= 5 => {
                let raw_len = u32::from_le_bytes(self.framed[1..5].try_into().unwrap()) as usize;
                if raw_len > MAX_PLAIN {
                    return Err(BlobError::Format(
                        id.to_string(),
                        format!("it claims {raw_len} bytes, more than a blob holds"),
                    ));
                }
                self.out.clear();
                self.out.reserve(raw_len);
                self.zstd
                    .decompress_to_buffer(&self.framed[5..], &mut self.out)
                    .map_err(|e| BlobError::Format(id.to_string(), format!("zstd: {e}")))?;
                &self.out
            }
            _ => {
                return Err(BlobError::Format(
                    id.to_string(),
                    "unknown encoding tag".into(),
                ))
            }
        };
        if keys.blob_id(plaintext) != id.0 {
            return Err(BlobError::HashMismatch(id.to_string()));
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterKey;

    #[test]
    fn a_blob_claiming_more_than_a_blob_holds_is_refused_before_allocating() {
        let keys = MasterKey::generate().derive(true);
        let mut framed = vec![ZSTD];
        framed.extend_from_slice(&u32::MAX.to_le_bytes());
        framed.extend(zstd::bulk::compress(b"x", 1).unwrap());
        let sealed = keys.seal(Sealed::Blob, &framed);
        let err = open(&keys, &BlobId([0; 32]), &sealed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("claims 4294967295 bytes"), "{err}");
    }

    #[test]
    fn compressible_and_incompressible_round_trip() {
        let keys = MasterKey::generate().derive(true);
        let text: Vec<u8> = (0..200_000)
            .map(|i| b"apiVersion: v1\nkind: Pod\n"[i % 25])
            .collect();
        let random: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for data in [&text, &random, &b"tiny".to_vec()] {
            let id = BlobId(keys.blob_id(data));
            let mut sealed = Vec::new();
            seal_into(&keys, data, &mut sealed);
            assert_eq!(&open(&keys, &id, &sealed).unwrap(), data);
        }
        let mut sealed = Vec::new();
        seal_into(&keys, &text, &mut sealed);
        assert!(
            sealed.len() < text.len() / 10,
            "text should compress: {}",
            sealed.len()
        );
    }

    #[test]
    fn wrong_id_or_flipped_byte_is_refused() {
        let keys = MasterKey::generate().derive(true);
        let data = b"some data that matters".repeat(20);
        let id = BlobId(keys.blob_id(&data));
        let mut sealed = Vec::new();
        seal_into(&keys, &data, &mut sealed);
        let other = BlobId(keys.blob_id(b"other"));
        assert!(matches!(
            open(&keys, &other, &sealed),
            Err(BlobError::HashMismatch(_))
        ));
        sealed[15] ^= 0x40;
        assert!(matches!(
            open(&keys, &id, &sealed),
            Err(BlobError::Authentication(_))
        ));
    }
}
