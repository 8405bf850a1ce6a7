//! A bbolt file (etcd's database): the reader of whole files (status, point in
//! time) and the paged reader that finds a bucket's last key from a few pages.
#![no_main]

use ballast::etcd::bbolt::{paged, Bolt, BoltError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(db) = Bolt::open(data) {
        let _ = db.size();
        if let Ok(buckets) = db.buckets() {
            for b in buckets {
                let mut n = 0u64;
                let _ = db.for_each(b, &mut |_, _| n += 1);
            }
        }
    }
    let mut read = |offset: u64, len: usize| -> Result<Vec<u8>, BoltError> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    };
    let _ = paged::last_key(&mut read, b"key");
});
