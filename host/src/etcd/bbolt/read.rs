//! Reading bbolt files: meta pages, branch and leaf pages, inline buckets.
//!
//! The file may come from anywhere (a snapshot in a repository, a file a user names),
//! so nothing in it is trusted: every offset is checked against the page and the
//! file, sizes are computed without overflow, and a traversal visits each page at
//! most once, so a crafted file whose branches point at the same pages over and over
//! cannot make a walk explode.

use std::collections::HashSet;

use super::*;

/// The meta page that describes the current state of the file.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub page_size: usize,
    pub root: u64,
    /// High-water mark: pages in use, so the database is `pgid * page_size` bytes.
    pub pgid: u64,
    pub txid: u64,
}

pub(super) fn parse_meta(file: &[u8], offset: usize) -> Result<Meta, BoltError> {
    let page = file
        .get(offset..offset + PAGE_HEADER + 64)
        .ok_or_else(|| BoltError("the file is shorter than its meta pages".into()))?;
    if u16_at(page, 8)? & META == 0 {
        return err("a meta page is not marked as one");
    }
    let m = &page[PAGE_HEADER..];
    if u32_at(m, 0)? != MAGIC {
        return err("not a bbolt file (wrong magic)");
    }
    if u32_at(m, 4)? != 2 {
        return err(format!("unsupported bbolt version {}", u32_at(m, 4)?));
    }
    if fnv1a64(&m[..56]) != u64_at(m, 56)? {
        return err("a meta page fails its checksum");
    }
    Ok(Meta {
        page_size: u32_at(m, 8)? as usize,
        root: u64_at(m, 16)?,
        pgid: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// A bbolt file held in memory (or mapped), read page by page.
pub struct Bolt<'a> {
    file: &'a [u8],
    pub meta: Meta,
}

impl<'a> Bolt<'a> {
    pub fn open(file: &'a [u8]) -> Result<Bolt<'a>, BoltError> {
        let first = parse_meta(file, 0);
        let page_size = match &first {
            Ok(m) => m.page_size,
            // The second meta page sits one page in; try the usual sizes.
            Err(_) => [4096, 8192, 16384, 65536]
                .into_iter()
                .find(|&ps| parse_meta(file, ps).is_ok())
                .ok_or_else(|| first.clone().unwrap_err())?,
        };
        let second = parse_meta(file, page_size);
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if a.txid >= b.txid {
                    a
                } else {
                    b
                }
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => a,
            (Err(e), Err(_)) => return Err(e),
        };
        if meta.page_size < 512 || meta.page_size > 1 << 20 || !meta.page_size.is_power_of_two() {
            return err(format!("implausible page size {}", meta.page_size));
        }
        let needed = usize::try_from(meta.pgid)
            .ok()
            .and_then(|p| p.checked_mul(meta.page_size))
            .ok_or_else(|| BoltError(format!("implausible page count {}", meta.pgid)))?;
        if file.len() < needed {
            return err(format!(
                "the file is truncated: the database needs {needed} bytes ({} pages of {}), the file has {}",
                meta.pgid, meta.page_size, file.len()
            ));
        }
        Ok(Bolt { file, meta })
    }

    /// Size of the database in bytes (etcd's TOTAL SIZE).
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.meta.page_size as u64
    }

    fn page(&self, id: u64) -> Result<&'a [u8], BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return err(format!(
                "page {id} is out of range (the database has {} pages)",
                self.meta.pgid
            ));
        }
        // id < pgid, and pgid * page_size fits (checked in open).
        let start = id as usize * self.meta.page_size;
        let header = self
            .file
            .get(start..start + PAGE_HEADER)
            .ok_or_else(|| BoltError(format!("page {id} runs past the end of the file")))?;
        if u64_at(header, 0)? != id {
            return err(format!(
                "page {id} carries the id {}: the file is damaged",
                u64_at(header, 0)?
            ));
        }
        let overflow = u32_at(header, 12)? as usize;
        let end = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.meta.page_size))
            .and_then(|len| start.checked_add(len));
        end.and_then(|end| self.file.get(start..end))
            .ok_or_else(|| BoltError(format!("page {id} runs past the end of the file")))
    }

    /// Calls `visit(key, value, is_bucket)` for every entry of the B+tree rooted at
    /// `root` (a page id, or an inline page when `inline` is given), in key order.
    fn walk(
        &self,
        page: &'a [u8],
        visit: &mut dyn FnMut(&'a [u8], &'a [u8], bool) -> Result<(), BoltError>,
        depth: usize,
        seen: &mut HashSet<u64>,
    ) -> Result<(), BoltError> {
        if depth > 64 {
            return err(
                "the tree is deeper than any real database: a page refers back to its parent",
            );
        }
        let flags = u16_at(page, 8)?;
        let count = u16_at(page, 10)? as usize;
        let page_id = u64_at(page, 0)?;
        let mut previous: Option<&[u8]> = None;
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let (key, value, bucket) = if flags & LEAF != 0 {
                let (f, pos, ks, vs) = (
                    u32_at(page, at)?,
                    u32_at(page, at + 4)? as usize,
                    u32_at(page, at + 8)? as usize,
                    u32_at(page, at + 12)? as usize,
                );
                let k = page.get(at + pos..at + pos + ks).ok_or_else(|| {
                    BoltError(format!("page {page_id}: a key lies outside the page"))
                })?;
                let v = page.get(at + pos + ks..at + pos + ks + vs).ok_or_else(|| {
                    BoltError(format!("page {page_id}: a value lies outside the page"))
                })?;
                (k, v, f & BUCKET_LEAF != 0)
            } else if flags & BRANCH != 0 {
                let (pos, ks, child) = (
                    u32_at(page, at)? as usize,
                    u32_at(page, at + 4)? as usize,
                    u64_at(page, at + 8)?,
                );
                let k = page.get(at + pos..at + pos + ks).ok_or_else(|| {
                    BoltError(format!("page {page_id}: a key lies outside the page"))
                })?;
                if previous.is_some_and(|p| p > k) {
                    return err(format!("page {page_id}: keys out of order"));
                }
                previous = Some(k);
                // In a B+tree every page has one parent.
                if !seen.insert(child) {
                    return err(format!(
                        "page {child} is reached twice (from page {page_id}): the file is damaged"
                    ));
                }
                self.walk(self.page(child)?, visit, depth + 1, seen)?;
                continue;
            } else {
                return err(format!(
                    "page {page_id} is neither a branch nor a leaf (flags {flags:#x})"
                ));
            };
            if previous.is_some_and(|p| p >= key) {
                return err(format!("page {page_id}: keys out of order"));
            }
            previous = Some(key);
            visit(key, value, bucket)?;
        }
        Ok(())
    }

    /// Every top-level bucket name, in order.
    pub fn buckets(&self) -> Result<Vec<&'a [u8]>, BoltError> {
        let mut out = Vec::new();
        self.walk(
            self.page(self.meta.root)?,
            &mut |k, _, is_bucket| {
                if is_bucket {
                    out.push(k);
                }
                Ok(())
            },
            0,
            &mut HashSet::new(),
        )?;
        Ok(out)
    }

    /// Calls `visit(key, value)` for every entry of a top-level bucket, in key order.
    /// Nested buckets show as entries with an empty value (as bbolt's ForEach does).
    pub fn for_each(
        &self,
        bucket: &[u8],
        visit: &mut dyn FnMut(&'a [u8], &'a [u8]),
    ) -> Result<(), BoltError> {
        let mut header: Option<&'a [u8]> = None;
        self.walk(
            self.page(self.meta.root)?,
            &mut |k, v, is_bucket| {
                if is_bucket && k == bucket {
                    header = Some(v);
                }
                Ok(())
            },
            0,
            &mut HashSet::new(),
        )?;
        let v = header
            .ok_or_else(|| BoltError(format!("no bucket `{}`", String::from_utf8_lossy(bucket))))?;
        let root = u64_at(v, 0)?;
        let page = if root == 0 {
            v.get(16..)
                .ok_or_else(|| BoltError("a short inline bucket".into()))?
        } else {
            self.page(root)?
        };
        self.walk(
            page,
            &mut |k, v, is_bucket| {
                visit(k, if is_bucket { &[] } else { v });
                Ok(())
            },
            0,
            &mut HashSet::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    /// A file whose key bucket is a branch page pointing at the same leaf page many
    /// times: a DAG, not a tree. Nested, such pages make a walk exponential.
    fn shared_pages(fanout: u16) -> Vec<u8> {
        const PS: usize = 4096;
        let mut f = vec![0u8; PS * 5];
        let header = |f: &mut [u8], id: u64, flags: u16, count: u16| {
            let p = &mut f[id as usize * PS..];
            p[0..8].copy_from_slice(&id.to_le_bytes());
            p[8..10].copy_from_slice(&flags.to_le_bytes());
            p[10..12].copy_from_slice(&count.to_le_bytes());
        };
        for (id, txid) in [(0u64, 1u64), (1, 0)] {
            header(&mut f, id, META, 0);
            let m = &mut f[id as usize * PS + PAGE_HEADER..];
            m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            m[4..8].copy_from_slice(&2u32.to_le_bytes());
            m[8..12].copy_from_slice(&(PS as u32).to_le_bytes());
            m[16..24].copy_from_slice(&2u64.to_le_bytes()); // root bucket page
            m[40..48].copy_from_slice(&5u64.to_le_bytes()); // pages in use
            m[48..56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv1a64(&m[..56]);
            m[56..64].copy_from_slice(&sum.to_le_bytes());
        }
        // Page 2: the root bucket, holding bucket `key` rooted at page 3.
        header(&mut f, 2, LEAF, 1);
        let p = 2 * PS + PAGE_HEADER;
        f[p..p + 4].copy_from_slice(&BUCKET_LEAF.to_le_bytes());
        f[p + 4..p + 8].copy_from_slice(&(ELEMENT as u32).to_le_bytes());
        f[p + 8..p + 12].copy_from_slice(&3u32.to_le_bytes());
        f[p + 12..p + 16].copy_from_slice(&16u32.to_le_bytes());
        f[p + ELEMENT..p + ELEMENT + 3].copy_from_slice(b"key");
        f[p + ELEMENT + 3..p + ELEMENT + 11].copy_from_slice(&3u64.to_le_bytes());
        // Page 3: a branch whose every element points at page 4.
        header(&mut f, 3, BRANCH, fanout);
        for i in 0..fanout as usize {
            let e = 3 * PS + PAGE_HEADER + i * ELEMENT;
            let pos = (fanout as usize - i) * ELEMENT; // keys after the elements
            f[e..e + 4].copy_from_slice(&(pos as u32).to_le_bytes());
            f[e + 4..e + 8].copy_from_slice(&1u32.to_le_bytes());
            f[e + 8..e + 16].copy_from_slice(&4u64.to_le_bytes());
            f[e + pos] = b'k';
        }
        header(&mut f, 4, LEAF, 0);
        f
    }

    #[test]
    fn a_page_reached_twice_is_damage_not_a_longer_walk() {
        let f = shared_pages(100);
        let bolt = Bolt::open(&f).unwrap();
        let e = bolt.for_each(b"key", &mut |_, _| {}).unwrap_err();
        assert!(e.0.contains("page 4 is reached twice"), "{e}");
        // With one reference it is a valid (empty) bucket.
        let f = shared_pages(1);
        let bolt = Bolt::open(&f).unwrap();
        let mut n = 0;
        bolt.for_each(b"key", &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn garbage_and_short_files_are_refused() {
        assert!(Bolt::open(&[0u8; 100]).is_err());
        let e = Bolt::open(&vec![7u8; 16384]).err().unwrap();
        assert!(e.0.contains("magic") || e.0.contains("meta"), "{e}");
    }
}
