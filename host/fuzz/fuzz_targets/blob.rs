//! A blob: its sealed bytes as stored (0 first), or its framed plaintext (encoding
//! tag, claimed length, zstd frame), sealed here so that decompression is reached.
#![no_main]

use ballast::repo::blob::{BlobId, Opener};
use ballast::repo::crypto::Sealed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = ballast_fuzz::keys();
    let mut opener = Opener::default();
    let sealed = if mode == 0 {
        rest.to_vec()
    } else {
        keys.seal(Sealed::Blob, rest)
    };
    let id = BlobId(keys.blob_id(b""));
    if let Ok(plain) = opener.open(keys, &id, &sealed) {
        assert!(plain.is_empty(), "only the empty blob hashes to this id");
    }
});
