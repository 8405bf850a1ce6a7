//! What the fuzz targets share: a fixed repository key, so that a target can seal
//! the bytes it is given and reach the decoders behind authentication (whoever holds
//! a repository's key can write any plaintext, so those decoders face hostile input
//! too).

use ballast::repo::crypto::{Keys, MasterKey};

/// The keys of a format-2 repository with a fixed master key.
pub fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| MasterKey::from_bytes([7; 32]).derive(true))
}
