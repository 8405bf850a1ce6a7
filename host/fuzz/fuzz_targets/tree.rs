//! A tree's plaintext: every name one path component, sorted and unique.
#![no_main]

use ballast::repo::tree::{self, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        for n in &t.nodes {
            assert!(tree::bad_name(&n.name).is_none());
            let _ = tree::path_of(&n.name);
        }
    }
});
