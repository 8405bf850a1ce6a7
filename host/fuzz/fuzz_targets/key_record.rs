//! A key record (JSON, not sealed: it holds the wrapped master key). Its key
//! derivation parameters are checked before anything is derived; cheap ones are
//! tried with a password.
#![no_main]

use ballast::repo::keys::{KeyKind, KeyRecord, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<KeyRecord>(data) else {
        return;
    };
    let checked = record.kdf.check();
    let cheap = record.kdf.memory_kib <= 256 && record.kdf.iterations <= 2;
    if checked.is_ok() && cheap {
        let secret = Secret::Password("fuzz".to_string().into());
        let _ = record.unwrap_with(&secret);
    } else if checked.is_err() && matches!(record.kind, KeyKind::Password) {
        let secret = Secret::Password("fuzz".to_string().into());
        assert!(record.unwrap_with(&secret).is_err(), "refused, not tried");
    }
});
