//! bbolt files (etcd's backend database), without etcd: a reader that walks buckets
//! and keys (status, point-in-time restore), and a writer that lays out a fresh,
//! compact file (restore with a bumped revision, point-in-time restore).
//!
//! Layout (bbolt 1.3, little-endian): every page starts with a 16-byte header
//! `id u64, flags u16, count u16, overflow u32`; pages 0 and 1 are meta pages
//! `magic, version, page_size, flags, root {pgid, sequence}, freelist, pgid, txid,
//! checksum (FNV-1a 64 of the meta before it)`; the valid meta with the higher txid
//! wins. Branch elements are `pos u32, ksize u32, pgid u64`; leaf elements are
//! `flags u32, pos u32, ksize u32, vsize u32` with `pos` relative to the element. A
//! leaf value flagged as a bucket is `{root pgid, sequence}`, followed by an inline
//! page when `root` is 0.

pub mod paged;
mod read;
mod write;

pub use read::{Bolt, Meta};
pub use write::{BucketWriter, Writer};

use std::fmt;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const BRANCH: u16 = 0x01;
pub(crate) const LEAF: u16 = 0x02;
pub(crate) const META: u16 = 0x04;
pub(crate) const FREELIST: u16 = 0x10;
pub(crate) const BUCKET_LEAF: u32 = 0x01;
pub(crate) const ELEMENT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoltError(pub String);

impl fmt::Display for BoltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoltError {}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(msg.into()))
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Result<u16, BoltError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| BoltError("read past the end of a page".into()))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, BoltError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| BoltError("read past the end of a page".into()))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Result<u64, BoltError> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| BoltError("read past the end of a page".into()))
}

pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
