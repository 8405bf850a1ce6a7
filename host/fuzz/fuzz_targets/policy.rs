//! The plugin policy (YAML): targets, grants, programs and their argument shapes.
#![no_main]

use ballast::plugins::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::parse(text, None);
    }
});
