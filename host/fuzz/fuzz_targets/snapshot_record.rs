//! A snapshot record: JSON, sealed and stored under the name its content hashes to.
#![no_main]

use ballast::repo::crypto::Sealed;
use ballast::repo::snapshot::{self, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = ballast_fuzz::keys();
    let sealed = keys.seal(Sealed::Snapshot, data);
    let key = format!("{PREFIX}{}", hex::encode(blake3::hash(&sealed).as_bytes()));
    if let Ok(s) = snapshot::decode(keys, &key, &sealed) {
        // What listings do with every record.
        let _ = s.time;
        let _ = ballast::etcd::delta::SegmentInfo::of(&s);
    }
    // A record under another name is refused before it is opened.
    assert!(snapshot::decode(keys, "snapshots/00", &sealed).is_err());
});
