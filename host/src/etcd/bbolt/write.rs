//! Writing a fresh bbolt file, the way `bbolt compact` lays one out: every bucket's
//! entries go, in key order, into leaf pages filled to the page size, then the branch
//! pages above them; the root bucket comes last, then the meta pages are written
//! over the placeholders at the start. Nothing is held in memory but one page and
//! the first key of each page of the level being built; the file is written front to
//! back except for its first three pages.
//!
//! The result has an empty freelist (page 2), no inline buckets, and bucket
//! sequences of 0, which etcd does not use.

use std::io::{self, Seek, SeekFrom, Write};

use super::*;

const PAGE_SIZE: usize = 4096;

/// Writes a new bbolt file to `out`.
pub struct Writer<W: Write + Seek> {
    out: W,
    /// The next page id to write.
    next: u64,
    /// Top-level buckets written so far: name and root page.
    buckets: Vec<(Vec<u8>, u64)>,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a file; the first three pages (two meta pages and the freelist) are
    /// written by `finish`.
    pub fn create(mut out: W) -> io::Result<Writer<W>> {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&[0u8; 3 * PAGE_SIZE])?;
        Ok(Writer {
            out,
            next: 3,
            buckets: vec![],
        })
    }

    /// A new top-level bucket; its entries must be put in strictly increasing key
    /// order, and buckets must be added in increasing name order.
    pub fn bucket(&mut self, name: &[u8]) -> io::Result<BucketWriter<'_, W>> {
        if self
            .buckets
            .last()
            .is_some_and(|(last, _)| last.as_slice() >= name)
        {
            return Err(invalid("buckets out of order"));
        }
        Ok(BucketWriter {
            name: name.to_vec(),
            tree: Tree::new(LEAF),
            writer: self,
        })
    }

    /// Writes the root bucket, the freelist and the meta pages; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let mut root = Tree::new(LEAF);
        for (name, pgid) in std::mem::take(&mut self.buckets) {
            let mut header = [0u8; 16];
            header[..8].copy_from_slice(&pgid.to_le_bytes());
            root.push(&mut self.out, &mut self.next, BUCKET_LEAF, &name, &header)?;
        }
        let root = root.finish(&mut self.out, &mut self.next)?;
        let high_water = self.next;
        let mut page = vec![0u8; PAGE_SIZE];
        for (id, txid) in [(0u64, 2u64), (1, 1)] {
            page.fill(0);
            header(&mut page, id, META, 0, 0);
            let m = &mut page[PAGE_HEADER..];
            m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            m[4..8].copy_from_slice(&2u32.to_le_bytes());
            m[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
            m[16..24].copy_from_slice(&root.to_le_bytes());
            m[32..40].copy_from_slice(&2u64.to_le_bytes());
            m[40..48].copy_from_slice(&high_water.to_le_bytes());
            m[48..56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv1a64(&m[..56]);
            m[56..64].copy_from_slice(&sum.to_le_bytes());
            self.out.seek(SeekFrom::Start(id * PAGE_SIZE as u64))?;
            self.out.write_all(&page)?;
        }
        page.fill(0);
        header(&mut page, 2, FREELIST, 0, 0);
        self.out.write_all(&page)?;
        self.out
            .seek(SeekFrom::Start(high_water * PAGE_SIZE as u64))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Entries of one bucket, written as they come.
pub struct BucketWriter<'a, W: Write + Seek> {
    name: Vec<u8>,
    tree: Tree,
    writer: &'a mut Writer<W>,
}

impl<W: Write + Seek> BucketWriter<'_, W> {
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let w = &mut *self.writer;
        self.tree.push(&mut w.out, &mut w.next, 0, key, value)
    }

    /// Writes the rest of the bucket's pages.
    pub fn finish(self) -> io::Result<()> {
        let w = self.writer;
        let root = self.tree.finish(&mut w.out, &mut w.next)?;
        w.buckets.push((self.name, root));
        Ok(())
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn header(page: &mut [u8], id: u64, flags: u16, count: u16, overflow: u32) {
    page[0..8].copy_from_slice(&id.to_le_bytes());
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    page[10..12].copy_from_slice(&count.to_le_bytes());
    page[12..16].copy_from_slice(&overflow.to_le_bytes());
}

/// One B+tree being built bottom-up: the page being filled at the leaf level, and
/// for every level above, the (first key, page id) of each page written below it.
struct Tree {
    flags: u16,
    /// Entries of the page being filled: (element flags, key, value).
    pending: Vec<(u32, Vec<u8>, Vec<u8>)>,
    size: usize,
    /// First key and page id of every leaf written.
    children: Vec<(Vec<u8>, u64)>,
    last: Option<Vec<u8>>,
}

impl Tree {
    fn new(flags: u16) -> Tree {
        Tree {
            flags,
            pending: vec![],
            size: PAGE_HEADER,
            children: vec![],
            last: None,
        }
    }

    fn push(
        &mut self,
        out: &mut impl Write,
        next: &mut u64,
        element_flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> io::Result<()> {
        if self.last.as_deref().is_some_and(|l| l >= key) {
            return Err(invalid("keys out of order"));
        }
        self.last = Some(key.to_vec());
        let add = ELEMENT + key.len() + value.len();
        if !self.pending.is_empty() && self.size + add > PAGE_SIZE {
            self.flush(out, next)?;
        }
        self.pending
            .push((element_flags, key.to_vec(), value.to_vec()));
        self.size += add;
        Ok(())
    }

    /// Writes the pending entries as one leaf page (with overflow pages if needed).
    fn flush(&mut self, out: &mut impl Write, next: &mut u64) -> io::Result<()> {
        let entries = std::mem::take(&mut self.pending);
        let first = entries.first().map(|e| e.1.clone()).unwrap_or_default();
        let id = write_page(out, next, self.flags, &entries, |e| {
            (Some(e.0), &e.1, &e.2, 0)
        })?;
        self.children.push((first, id));
        self.size = PAGE_HEADER;
        Ok(())
    }

    /// Writes what is pending and the branch levels; returns the root page id. An
    /// empty tree is one empty leaf.
    fn finish(mut self, out: &mut impl Write, next: &mut u64) -> io::Result<u64> {
        if !self.pending.is_empty() || self.children.is_empty() {
            self.flush(out, next)?;
        }
        let mut level = self.children;
        while level.len() > 1 {
            let mut above = vec![];
            let mut group: Vec<(Vec<u8>, u64)> = vec![];
            let mut size = PAGE_HEADER;
            for child in level {
                let add = ELEMENT + child.0.len();
                if !group.is_empty() && size + add > PAGE_SIZE {
                    let first = group[0].0.clone();
                    above.push((first, write_branch(out, next, &group)?));
                    group.clear();
                    size = PAGE_HEADER;
                }
                size += add;
                group.push(child);
            }
            let first = group[0].0.clone();
            above.push((first, write_branch(out, next, &group)?));
            level = above;
        }
        Ok(level[0].1)
    }
}

fn write_branch(out: &mut impl Write, next: &mut u64, group: &[(Vec<u8>, u64)]) -> io::Result<u64> {
    write_page(out, next, BRANCH, group, |(k, id)| (None, k, &[][..], *id))
}

/// Lays out one page: header, elements, then keys and values; returns its id.
/// `parts` gives (leaf flags or None for a branch element, key, value, child id).
fn write_page<T>(
    out: &mut impl Write,
    next: &mut u64,
    flags: u16,
    items: &[T],
    parts: impl Fn(&T) -> (Option<u32>, &[u8], &[u8], u64),
) -> io::Result<u64> {
    let data: usize = items
        .iter()
        .map(|i| {
            let (_, k, v, _) = parts(i);
            k.len() + v.len()
        })
        .sum();
    let len = PAGE_HEADER + ELEMENT * items.len() + data;
    let pages = len.div_ceil(PAGE_SIZE).max(1);
    let count = u16::try_from(items.len()).map_err(|_| invalid("too many elements in a page"))?;
    let mut page = vec![0u8; pages * PAGE_SIZE];
    let id = *next;
    header(&mut page, id, flags, count, (pages - 1) as u32);
    let mut at = PAGE_HEADER + ELEMENT * items.len();
    for (i, item) in items.iter().enumerate() {
        let (leaf, k, v, child) = parts(item);
        let e = PAGE_HEADER + i * ELEMENT;
        let pos = (at - e) as u32;
        match leaf {
            Some(f) => {
                page[e..e + 4].copy_from_slice(&f.to_le_bytes());
                page[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                page[e + 8..e + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
                page[e + 12..e + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
            }
            None => {
                page[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                page[e + 4..e + 8].copy_from_slice(&(k.len() as u32).to_le_bytes());
                page[e + 8..e + 16].copy_from_slice(&child.to_le_bytes());
            }
        }
        page[at..at + k.len()].copy_from_slice(k);
        at += k.len();
        page[at..at + v.len()].copy_from_slice(v);
        at += v.len();
    }
    out.write_all(&page)?;
    *next += pages as u64;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(buckets: &[(&str, Vec<(Vec<u8>, Vec<u8>)>)]) -> Vec<u8> {
        let mut w = Writer::create(io::Cursor::new(Vec::new())).unwrap();
        for (name, entries) in buckets {
            let mut b = w.bucket(name.as_bytes()).unwrap();
            for (k, v) in entries {
                b.put(k, v).unwrap();
            }
            b.finish().unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn what_is_written_reads_back_in_order() {
        // Small entries (many leaves and two branch levels), large ones (overflow
        // pages), and an empty bucket.
        let small: Vec<_> = (0..60_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes()))
            .collect();
        let large: Vec<_> = (0..5u8)
            .map(|i| (vec![i], vec![i; 10_000 + i as usize]))
            .collect();
        let file = build(&[
            ("empty", vec![]),
            ("key", small.clone()),
            ("large", large.clone()),
        ]);
        let bolt = Bolt::open(&file).unwrap();
        assert_eq!(bolt.size(), file.len() as u64);
        assert_eq!(
            bolt.buckets().unwrap(),
            vec![&b"empty"[..], b"key", b"large"]
        );
        for (name, want) in [("empty", vec![]), ("key", small), ("large", large)] {
            let mut got = vec![];
            bolt.for_each(name.as_bytes(), &mut |k, v| {
                got.push((k.to_vec(), v.to_vec()))
            })
            .unwrap();
            assert_eq!(got, want, "bucket {name}");
        }
    }

    #[test]
    fn out_of_order_input_is_refused() {
        let mut w = Writer::create(io::Cursor::new(Vec::new())).unwrap();
        let mut b = w.bucket(b"b").unwrap();
        b.put(b"2", b"").unwrap();
        assert!(b.put(b"1", b"").is_err());
        assert!(b.put(b"2", b"").is_err());
        b.finish().unwrap();
        assert!(w.bucket(b"a").is_err());
    }
}
