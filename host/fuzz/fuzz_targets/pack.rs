//! A pack as read from the store: footer, trailer length, trailer, entries. The
//! first byte chooses what the rest is: 0, a whole pack (the framing before
//! authentication); otherwise the trailer's plaintext, sealed and framed as a pack
//! (the decoding and bounds checks after it).
#![no_main]

use ballast::repo::crypto::Sealed;
use ballast::repo::pack::{self, PackId, FOOTER_LEN, MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = ballast_fuzz::keys();
    let id = PackId([0; 32]);
    if mode == 0 {
        let _ = pack::parse_whole(keys, &id, rest);
        let _ = pack::parse_footer(&id, rest);
        return;
    }
    // Some blob bytes, then the sealed trailer and the footer.
    let mut bytes = vec![0u8; usize::from(mode) * 64];
    let sealed = keys.seal(Sealed::PackTrailer, rest);
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    bytes.extend_from_slice(MAGIC);
    assert_eq!(FOOTER_LEN, 12);
    if let Ok(entries) = pack::parse_whole(keys, &id, &bytes) {
        let data_end = bytes.len() - FOOTER_LEN - sealed.len();
        for e in entries {
            assert!(e.offset as usize + e.length as usize <= data_end);
        }
    }
});
