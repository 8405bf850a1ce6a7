//! The plugin catalog (TOML).
#![no_main]

use ballast::plugins::catalog::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = Catalog::parse(text, "catalog.toml".into()) {
            for e in &c.plugins {
                let _ = c.find(&e.name);
                let _ = c.component(e);
            }
        }
    }
});
