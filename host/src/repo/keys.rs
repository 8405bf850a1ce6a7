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

/// Argon2id cost. The default follows OWASP's guidance for interactive logins with a
/// margin (64 MiB, 3 passes); tests may lower it through `BALLAST_KDF_MEMORY_KIB`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        let memory_kib = std::env::var("BALLAST_KDF_MEMORY_KIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|m| *m >= 8)
            .unwrap_or(64 * 1024);
        KdfParams {
            memory_kib,
            iterations: 3,
            parallelism: 1,
        }
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
        let salt = random_bytes::<32>();
        let kdf = KdfParams::default();
        let kek = derive_kek(secret, &salt, &kdf);
        KeyRecord {
            kind: secret.kind(),
            created: jiff::Timestamp::now(),
            host: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            label: label.to_string(),
            kdf,
            salt,
            wrapped: Cipher::new(&kek).seal(master.as_bytes()),
        }
    }

    /// Unwraps the master key, or `None` if the secret does not open this record.
    pub fn unwrap_with(&self, secret: &Secret) -> Option<MasterKey> {
        if self.kind != secret.kind() {
            return None;
        }
        let kek = derive_kek(secret, &self.salt, &self.kdf);
        let plain = Zeroizing::new(Cipher::new(&kek).open(&self.wrapped).ok()?);
        let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(MasterKey::from_bytes(bytes))
    }
}

fn derive_kek(secret: &Secret, salt: &[u8; 32], kdf: &KdfParams) -> Zeroizing<[u8; 32]> {
    let mut kek = Zeroizing::new([0u8; 32]);
    match secret {
        Secret::Password(pw) => {
            let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
                .expect("Argon2 parameters within range");
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(pw.as_bytes(), salt, &mut kek[..])
                .expect("Argon2id with a 32-byte salt and output");
        }
        Secret::KeyFile(bytes) => {
            *kek = *blake3::keyed_hash(bytes, salt).as_bytes();
        }
    }
    kek
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() {
        std::env::set_var("BALLAST_KDF_MEMORY_KIB", "64");
    }

    #[test]
    fn password_wraps_and_unwraps() {
        weak();
        let master = MasterKey::generate();
        let rec = KeyRecord::wrap(
            &master,
            &Secret::Password(Zeroizing::new("hunter2".into())),
            "ops",
        );
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("hunter2"));
        let rec: KeyRecord = serde_json::from_str(&json).unwrap();
        let got = rec
            .unwrap_with(&Secret::Password(Zeroizing::new("hunter2".into())))
            .unwrap();
        assert_eq!(got.as_bytes(), master.as_bytes());
        assert!(rec
            .unwrap_with(&Secret::Password(Zeroizing::new("hunter3".into())))
            .is_none());
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
            rec.unwrap_with(&read).unwrap().as_bytes(),
            master.as_bytes()
        );
        std::fs::write(&path, "nonsense").unwrap();
        assert!(Secret::read_key_file(&path)
            .unwrap_err()
            .contains("not a ballast key file"));
    }
}
