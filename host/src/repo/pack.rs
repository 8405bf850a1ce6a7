//! Packs: many sealed blobs in one object, uploaded with a single PUT.
//!
//! ```text
//! blob 1 | blob 2 | ... | blob n | sealed trailer | trailer length (u32 LE) | "BLSTPK01"
//! ```
//!
//! The trailer lists every blob (kind, id, offset, length, raw length), sealed like a
//! blob, so the index can always be rebuilt from the packs alone. A pack is named
//! `data/<first two hex digits>/<BLAKE3 of the whole object>`, so `check --read-data`
//! can tell a damaged pack from its name.

use serde::{Deserialize, Serialize};

use super::blob::{BlobId, BlobKind};
use super::crypto::{Keys, Sealed};

super::id::define_id!(
    /// The identity of a pack: BLAKE3 of the pack object's bytes.
    PackId
);

pub const MAGIC: &[u8; 8] = b"BLSTPK01";
/// Fixed bytes at the end of a pack: trailer length and magic.
pub const FOOTER_LEN: usize = 12;

/// Packs are cut before they grow past this size (one PUT each).
pub const TARGET_SIZE: usize = 32 * 1024 * 1024;

/// No pack ballast writes comes near this size (the target plus one largest chunk
/// and its trailer); an object under `data/` larger than this is refused as damaged
/// rather than read into memory.
pub const MAX_SIZE: u64 = 128 * 1024 * 1024;

/// Where one blob sits inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// The object key of a pack.
pub fn key(id: &PackId) -> String {
    let h = id.to_string();
    format!("data/{}/{}", &h[..2], h)
}

/// Parses a pack key back into its id.
pub fn id_from_key(key: &str) -> Option<PackId> {
    key.rsplit('/').next()?.parse().ok()
}

/// Collects sealed blobs until the pack is full.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: bytes::Bytes,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a blob; `seal` writes the sealed bytes to the end of the buffer.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        raw_len: usize,
        seal: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.buf.capacity() == 0 && kind == BlobKind::Data {
            // One allocation for the whole pack and its trailer (growth by doubling
            // would reserve 64 MiB). Callers cut packs before they pass the target.
            self.buf.reserve_exact(TARGET_SIZE + 1024 * 1024);
        }
        let offset = self.buf.len();
        seal(&mut self.buf);
        let fits = |n: usize| u32::try_from(n).expect("packs are cut far below 4 GiB");
        self.entries.push(PackEntry {
            kind,
            id,
            offset: fits(offset),
            length: fits(self.buf.len() - offset),
            raw_len: fits(raw_len),
        });
    }

    /// Appends the sealed trailer and footer.
    pub fn finish(self, keys: &Keys) -> FinishedPack {
        let PackBuilder { mut buf, entries } = self;
        let trailer = postcard::to_stdvec(&entries).expect("serialising pack entries");
        let before = buf.len();
        keys.seal_into(Sealed::PackTrailer, &trailer, &mut buf);
        let trailer_len = u32::try_from(buf.len() - before).expect("a trailer far below 4 GiB");
        buf.extend_from_slice(&trailer_len.to_le_bytes());
        buf.extend_from_slice(MAGIC);
        let id = PackId(*blake3::hash(&buf).as_bytes());
        FinishedPack {
            id,
            bytes: bytes::Bytes::from(buf),
            entries,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack {pack} is damaged: {what}")]
    Damaged { pack: String, what: String },
}

/// Reads the trailer length from a pack's footer.
pub fn parse_footer(pack: &PackId, footer: &[u8]) -> Result<usize, PackError> {
    let damaged = |what: &str| PackError::Damaged {
        pack: pack.to_string(),
        what: what.into(),
    };
    if footer.len() < FOOTER_LEN || &footer[footer.len() - 8..] != MAGIC {
        return Err(damaged("the footer is missing (truncated pack?)"));
    }
    let n = footer.len();
    let len = u32::from_le_bytes(footer[n - 12..n - 8].try_into().expect("4 bytes"));
    usize::try_from(len).map_err(|_| damaged("its trailer length does not fit in memory"))
}

/// Opens a sealed trailer and checks that its entries fit in a pack of `pack_size`.
pub fn parse_trailer(
    keys: &Keys,
    pack: &PackId,
    sealed: &[u8],
    pack_size: u64,
) -> Result<Vec<PackEntry>, PackError> {
    let damaged = |what: String| PackError::Damaged {
        pack: pack.to_string(),
        what,
    };
    let plain = keys
        .open(Sealed::PackTrailer, sealed)
        .map_err(|_| damaged("its trailer fails authentication".into()))?;
    let entries: Vec<PackEntry> = postcard::from_bytes(&plain)
        .map_err(|e| damaged(format!("its trailer cannot be decoded: {e}")))?;
    let data_end = pack_size.saturating_sub((sealed.len() + FOOTER_LEN) as u64);
    for e in &entries {
        if e.offset as u64 + e.length as u64 > data_end {
            return Err(damaged(format!(
                "blob {} lies beyond the end of the data",
                e.id.short()
            )));
        }
    }
    Ok(entries)
}

/// Parses a whole pack held in memory: footer, trailer, entries.
pub fn parse_whole(keys: &Keys, pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    let trailer_len = parse_footer(pack, bytes)?;
    let end = bytes.len() - FOOTER_LEN;
    let start = end
        .checked_sub(trailer_len)
        .ok_or_else(|| PackError::Damaged {
            pack: pack.to_string(),
            what: "the trailer length exceeds the pack (truncated pack?)".into(),
        })?;
    parse_trailer(keys, pack, &bytes[start..end], bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{blob, crypto::MasterKey};

    #[test]
    fn build_and_parse() {
        let keys = MasterKey::generate().derive(true);
        let mut b = PackBuilder::default();
        let mut ids = vec![];
        for i in 0..10u8 {
            let data = vec![i; 1000 + i as usize];
            let id = BlobId(keys.blob_id(&data));
            ids.push((id, data.clone()));
            b.add(BlobKind::Data, id, data.len(), |out| {
                blob::seal_into(&keys, &data, out)
            });
        }
        let p = b.finish(&keys);
        assert_eq!(p.id.0, *blake3::hash(&p.bytes).as_bytes());
        let entries = parse_whole(&keys, &p.id, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        for (e, (id, data)) in entries.iter().zip(&ids) {
            let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&blob::open(&keys, id, sealed).unwrap(), data);
        }
        let truncated = &p.bytes[..p.bytes.len() - 100];
        assert!(parse_whole(&keys, &p.id, truncated).is_err());
    }

    #[test]
    fn pack_keys_round_trip() {
        let id = PackId([0xab; 32]);
        let k = key(&id);
        assert!(k.starts_with("data/ab/abab"));
        assert_eq!(id_from_key(&k), Some(id));
    }
}
