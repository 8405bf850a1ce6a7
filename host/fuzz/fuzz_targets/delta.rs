//! The content of etcd delta segments: length-prefixed records, read back to back.
#![no_main]

use ballast::etcd::delta::Records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for r in Records::new(data).take(100_000) {
        if let Ok(ballast::etcd::delta::Record::Change(c)) = r {
            let _ = c.key_value();
        }
    }
});
