//! Key records: the master key, wrapped once per way of opening the repository.
//!
//! `keys/<id>` holds a JSON record with the master key sealed under a key-encryption
//! key (KEK). For a password the KEK comes from Argon2id over the password and a random
//! salt; for a key file it comes from keyed BLAKE3 over the file's 32 secret bytes and
//! the salt. Adding, removing or changing a password rewrites one small record and
//! never touches data.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::{random_bytes, Cipher, MasterKey};

/// A secret that opens a repository.
pub enum Secret {
    Password(Zeroizing<String>),
    KeyFile(Zeroizing<[u8; 32]>),
}

/// Shows the kind of secret only, never its value.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::KeyFile(_) => f.write_str("Secret::KeyFile(<redacted>)"),
        }
    }
}

impl Secret {
    fn kind(&self) -> KeyKind {
        match self {
            Secret::Password(_) => KeyKind::Password,
            Secret::KeyFile(_) => KeyKind::KeyFile,
        }
    }

    /// Reads a key file written by `ballast key add --new-key-file`.
    pub fn read_key_file(path: &std::path::Path) -> Result<Secret, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?,
        );
        let hex_part = text.trim().strip_prefix(KEY_FILE_PREFIX).ok_or_else(|| {
            format!(
                "{} is not a ballast key file (it must start with `{KEY_FILE_PREFIX}`)",
                path.display()
            )
        })?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, &mut bytes[..]).map_err(|_| {
            format!(
                "{} is a damaged ballast key file (expected 64 hex digits)",
                path.display()
            )
        })?;
        Ok(Secret::KeyFile(bytes))
    }

    /// Makes a new key file secret and its text.
    pub fn new_key_file() -> (Secret, Zeroizing<String>) {
        let bytes = Zeroizing::new(random_bytes::<32>());
        let text = Zeroizing::new(format!("{KEY_FILE_PREFIX}{}\n", hex::encode(&bytes[..])));
        (Secret::KeyFile(bytes), text)
    }
}

const KEY_FILE_PREFIX: &str = "ballast-key-v1:";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    Password,
    KeyFile,
}

/// Argon2id cost. New records get OWASP's guidance for interactive logins with a
/// margin (64 MiB, 3 passes); nothing in the environment lowers it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// The most key derivation one opening of a repository spends over all its key
/// records (KiB times passes): one record at the limits, or about 85 at the default.
/// A repository someone filled with costly records cannot make every command hang.
pub const MAX_OPEN_COST: u64 = MAX_KDF_MEMORY_KIB as u64 * MAX_KDF_ITERATIONS as u64;

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// The most a key record may ask of the machine that opens it: anything costlier is
/// refused rather than tried, so that a record someone else wrote cannot make every
/// command hang or run out of memory.
pub const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;
pub const MAX_KDF_ITERATIONS: u32 = 16;
pub const MAX_KDF_PARALLELISM: u32 = 16;

impl KdfParams {
    /// Cheap parameters for unit tests of the library (never used by the binary).
    #[cfg(test)]
    pub(crate) const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// What deriving a key with these parameters costs, in KiB times passes.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// Whether these parameters are within the limits (a record outside them is
    /// refused before any key derivation is tried).
    pub fn check(&self) -> Result<(), String> {
        self.argon2().map(|_| ())
    }

    /// The Argon2 parameters, or why these cannot be used.
    fn argon2(&self) -> Result<Params, String> {
        let (m, t, p) = (self.memory_kib, self.iterations, self.parallelism);
        if !(1..=MAX_KDF_PARALLELISM).contains(&p) {
            return Err(format!(
                "parallelism {p} is outside 1..={MAX_KDF_PARALLELISM}"
            ));
        }
        if !(1..=MAX_KDF_ITERATIONS).contains(&t) {
            return Err(format!(
                "{t} iterations is outside 1..={MAX_KDF_ITERATIONS}"
            ));
        }
        if m < 8 * p || m > MAX_KDF_MEMORY_KIB {
            return Err(format!(
                "{m} KiB of memory is outside {}..={MAX_KDF_MEMORY_KIB} KiB",
                8 * p
            ));
        }
        Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())
    }
}

/// The stored form of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kind: KeyKind,
    pub created: jiff::Timestamp,
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub label: String,
    pub kdf: KdfParams,
    #[serde(with = "hex::serde")]
    pub salt: [u8; 32],
    /// The master key sealed under the KEK.
    #[serde(with = "hex::serde")]
    pub wrapped: Vec<u8>,
}

impl KeyRecord {
    /// Wraps the master key for a secret.
    pub fn wrap(master: &MasterKey, secret: &Secret, label: &str) -> KeyRecord {
        Self::wrap_with(master, secret, label, KdfParams::default())
    }

    pub(crate) fn wrap_with(
        master: &MasterKey,
        secret: &Secret,
        label: &str,
        kdf: KdfParams,
    ) -> KeyRecord {
        let salt = random_bytes::<32>();
        let kek = derive_kek(secret, &salt, &kdf).expect("the default parameters are in range");
        KeyRecord {
            kind: secret.kind(),
            created: jiff::Timestamp::now(),
            host: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            label: label.to_string(),
            kdf,
            salt,
            wrapped: Cipher::new(&kek).seal(b"", master.as_bytes()),
        }
    }

    /// Unwraps the master key: `Ok(None)` if the secret does not open this record,
    /// `Err` when the record asks for a key derivation outside the limits.
    pub fn unwrap_with(&self, secret: &Secret) -> Result<Option<MasterKey>, String> {
        if self.kind != secret.kind() {
            return Ok(None);
        }
        let kek = derive_kek(secret, &self.salt, &self.kdf)?;
        let Ok(plain) = Cipher::new(&kek).open(b"", &self.wrapped) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let Ok(bytes) = <[u8; 32]>::try_from(plain.as_slice()) else {
            return Ok(None);
        };
        Ok(Some(MasterKey::from_bytes(bytes)))
    }
}

fn derive_kek(
    secret: &Secret,
    salt: &[u8; 32],
    kdf: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut kek = Zeroizing::new([0u8; 32]);
    match secret {
        Secret::Password(pw) => {
            let params = kdf.argon2()?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(pw.as_bytes(), salt, &mut kek[..])
                .map_err(|e| e.to_string())?;
        }
        Secret::KeyFile(bytes) => {
            *kek = *blake3::keyed_hash(bytes, salt).as_bytes();
        }
    }
    Ok(kek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_wraps_and_unwraps() {
        let master = MasterKey::generate();
        let rec = KeyRecord::wrap_with(
            &master,
            &Secret::Password(Zeroizing::new("hunter2".into())),
            "ops",
            KdfParams::CHEAP,
        );
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("hunter2"));
        let rec: KeyRecord = serde_json::from_str(&json).unwrap();
        let got = rec
            .unwrap_with(&Secret::Password(Zeroizing::new("hunter2".into())))
            .unwrap()
            .unwrap();
        assert_eq!(got.as_bytes(), master.as_bytes());
        assert!(rec
            .unwrap_with(&Secret::Password(Zeroizing::new("hunter3".into())))
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_default_ignores_the_environment() {
        std::env::set_var("BALLAST_KDF_MEMORY_KIB", "8");
        assert_eq!(KdfParams::default().memory_kib, 64 * 1024);
    }

    #[test]
    fn key_derivations_outside_the_limits_are_refused_not_tried() {
        let master = MasterKey::generate();
        let pw = Secret::Password(Zeroizing::new("pw".into()));
        let mut rec = KeyRecord::wrap_with(&master, &pw, "", KdfParams::CHEAP);
        for (m, t, p, what) in [
            (u32::MAX, 3, 1, "memory"),
            (4, 3, 1, "memory"),
            (65536, 0, 1, "iterations"),
            (65536, u32::MAX, 1, "iterations"),
            (65536, 3, 0, "parallelism"),
            (65536, 3, 1 << 24, "parallelism"),
        ] {
            rec.kdf = KdfParams {
                memory_kib: m,
                iterations: t,
                parallelism: p,
            };
            let e = rec.unwrap_with(&pw).err().expect("refused");
            assert!(e.contains(what), "{m} {t} {p}: {e}");
        }
    }

    #[test]
    fn key_file_wraps_and_unwraps() {
        let master = MasterKey::generate();
        let (secret, text) = Secret::new_key_file();
        let rec = KeyRecord::wrap(&master, &secret, "");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, text.as_bytes()).unwrap();
        let read = Secret::read_key_file(&path).unwrap();
        assert_eq!(
            rec.unwrap_with(&read).unwrap().unwrap().as_bytes(),
            master.as_bytes()
        );
        std::fs::write(&path, "nonsense").unwrap();
        assert!(Secret::read_key_file(&path)
            .unwrap_err()
            .contains("not a ballast key file"));
    }
}
