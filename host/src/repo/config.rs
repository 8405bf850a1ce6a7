//! The `config` object: marks a location as a ballast repository. It holds nothing
//! secret, so a location can be recognised (and a wrong password told apart from a
//! wrong path) before any key is tried.

use serde::{Deserialize, Serialize};

pub const KEY: &str = "config";
pub const FORMAT: &str = "ballast-repository";
/// The version new repositories get. 2: seals carry what they seal (ADR 0003).
pub const VERSION: u32 = 2;
/// The oldest version this ballast reads and writes.
pub const OLDEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    /// Random, to tell repositories apart (caches, metrics).
    pub id: String,
    pub created: jiff::Timestamp,
}

impl Config {
    /// Whether seals are typed ([`Sealed`](super::crypto::Sealed)): version 2 on.
    pub fn typed_seals(&self) -> bool {
        self.version >= 2
    }

    pub fn new() -> Config {
        Config {
            format: FORMAT.into(),
            version: VERSION,
            id: hex::encode(super::crypto::random_bytes::<16>()),
            created: jiff::Timestamp::now(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}
