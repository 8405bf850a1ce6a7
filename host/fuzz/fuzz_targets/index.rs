//! An index file: a zstd stream (0 first), or the postcard plaintext (compressed
//! here), sealed and decoded as a reader of the repository does.
#![no_main]

use ballast::repo::crypto::Sealed;
use ballast::repo::index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = ballast_fuzz::keys();
    let compressed = if mode == 0 {
        rest.to_vec()
    } else {
        zstd::bulk::compress(rest, 1).expect("zstd compresses anything")
    };
    let sealed = keys.seal(Sealed::Index, &compressed);
    let _ = index::decode(keys, "index/fuzz", &sealed);
});
