//! Reading a handful of pages of a bbolt file that is not in memory: the last key of a
//! bucket, found by following the meta page to the bucket's root and the last child of
//! each branch down to a leaf (a few pages of an 8 GB database). Used to learn the
//! revision of a snapshot from the snapshot itself, right after it was streamed into
//! the repository.

use super::*;

/// Reads `len` bytes at `offset` of the file.
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> Result<Vec<u8>, BoltError> + 'a;

/// No page of a real database is this large (with its overflow).
const MAX_PAGE: usize = 64 << 20;

struct Paged<'a, 'b> {
    read: &'b mut ReadAt<'a>,
    page_size: usize,
    pgid: u64,
}

impl Paged<'_, '_> {
    fn page(&mut self, id: u64) -> Result<Vec<u8>, BoltError> {
        if id < 2 || id >= self.pgid {
            return err(format!("page {id} is out of range ({} pages)", self.pgid));
        }
        let start = id
            .checked_mul(self.page_size as u64)
            .ok_or_else(|| BoltError(format!("page {id} is out of range")))?;
        let header = (self.read)(start, PAGE_HEADER)?;
        if u64_at(&header, 0)? != id {
            return err(format!("page {id} carries another id: the file is damaged"));
        }
        let len = (u32_at(&header, 12)? as usize)
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .filter(|&len| len <= MAX_PAGE)
            .ok_or_else(|| BoltError(format!("page {id} claims an implausible size")))?;
        (self.read)(start, len)
    }
}

/// `(flags, key, value)` of leaf element `i`, or `(0, key, child)` of branch element `i`.
fn element(page: &[u8], i: usize) -> Result<(u32, &[u8], Element<'_>), BoltError> {
    let flags = u16_at(page, 8)?;
    let at = PAGE_HEADER + i * ELEMENT;
    let outside = || BoltError("an element lies outside its page".into());
    if flags & LEAF != 0 {
        let (f, pos, ks, vs) = (
            u32_at(page, at)?,
            u32_at(page, at + 4)? as usize,
            u32_at(page, at + 8)? as usize,
            u32_at(page, at + 12)? as usize,
        );
        let k0 = at.checked_add(pos).ok_or_else(outside)?;
        let key = page
            .get(k0..k0.checked_add(ks).ok_or_else(outside)?)
            .ok_or_else(outside)?;
        let v0 = k0 + ks;
        let value = page
            .get(v0..v0.checked_add(vs).ok_or_else(outside)?)
            .ok_or_else(outside)?;
        Ok((f, key, Element::Value(value)))
    } else if flags & BRANCH != 0 {
        let (pos, ks, child) = (
            u32_at(page, at)? as usize,
            u32_at(page, at + 4)? as usize,
            u64_at(page, at + 8)?,
        );
        let k0 = at.checked_add(pos).ok_or_else(outside)?;
        let key = page
            .get(k0..k0.checked_add(ks).ok_or_else(outside)?)
            .ok_or_else(outside)?;
        Ok((0, key, Element::Child(child)))
    } else {
        err(format!(
            "a page is neither a branch nor a leaf (flags {flags:#x})"
        ))
    }
}

enum Element<'a> {
    Value(&'a [u8]),
    Child(u64),
}

/// The last key of top-level bucket `bucket` (`None` if it is empty).
pub fn last_key(read: &mut ReadAt<'_>, bucket: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
    let first = read(0, 4096)?;
    let meta0 = super::read::parse_meta(&first, 0);
    let page_size = match &meta0 {
        Ok(m) => m.page_size,
        Err(_) => 4096,
    };
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return err(format!("implausible page size {page_size}"));
    }
    let second = read(page_size as u64, PAGE_HEADER + 64)?;
    let meta1 = super::read::parse_meta(&second, 0);
    let meta = match (meta0, meta1) {
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
    let mut p = Paged {
        read,
        page_size,
        pgid: meta.pgid,
    };
    // Find the bucket in the root bucket's tree.
    let mut page = p.page(meta.root)?;
    let mut header = None;
    for _ in 0..64 {
        let count = u16_at(&page, 10)? as usize;
        if u16_at(&page, 8)? & BRANCH != 0 {
            // The last child whose first key is not after the bucket's name.
            let mut child = None;
            for i in 0..count {
                let (_, key, e) = element(&page, i)?;
                if let Element::Child(c) = e {
                    if i == 0 || key <= bucket {
                        child = Some(c);
                    }
                }
            }
            let Some(c) = child else { break };
            page = p.page(c)?;
            continue;
        }
        for i in 0..count {
            if let (f, key, Element::Value(v)) = element(&page, i)? {
                if key == bucket && f & BUCKET_LEAF != 0 {
                    header = Some(v.to_vec());
                }
            }
        }
        break;
    }
    let header = header
        .ok_or_else(|| BoltError(format!("no bucket `{}`", String::from_utf8_lossy(bucket))))?;
    let root = u64_at(&header, 0)?;
    let mut page = if root == 0 {
        header
            .get(16..)
            .ok_or_else(|| BoltError("a short inline bucket".into()))?
            .to_vec()
    } else {
        p.page(root)?
    };
    // Down the last child of each branch to the last leaf.
    for _ in 0..64 {
        let count = u16_at(&page, 10)? as usize;
        if count == 0 {
            return Ok(None);
        }
        match element(&page, count - 1)? {
            (_, _, Element::Child(c)) => page = p.page(c)?,
            (_, key, Element::Value(_)) => return Ok(Some(key.to_vec())),
        }
    }
    err("the tree is deeper than any real database")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_key_read_page_by_page_matches_a_full_walk() {
        for n in [0u32, 1, 3, 5000] {
            let mut w = Writer::create(std::io::Cursor::new(vec![])).unwrap();
            let mut b = w.bucket(b"alpha").unwrap();
            b.put(b"a", b"1").unwrap();
            b.finish().unwrap();
            let mut b = w.bucket(b"key").unwrap();
            for i in 0..n {
                b.put(format!("{i:08}").as_bytes(), &vec![7u8; 100])
                    .unwrap();
            }
            b.finish().unwrap();
            let file = w.finish().unwrap().into_inner();
            let mut reads = 0;
            let mut read = |off: u64, len: usize| {
                reads += 1;
                file.get(off as usize..off as usize + len)
                    .map(|s| s.to_vec())
                    .ok_or_else(|| BoltError("past the end".into()))
            };
            let got = last_key(&mut read, b"key").unwrap();
            assert!(last_key(&mut read, b"nope").is_err());
            let mut want = None;
            Bolt::open(&file)
                .unwrap()
                .for_each(b"key", &mut |k, _| want = Some(k.to_vec()))
                .unwrap();
            assert_eq!(got, want, "{n} keys");
            assert!(reads < 24, "{n} keys: {reads} reads");
        }
    }
}
