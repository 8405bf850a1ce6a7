//! Keys and authenticated encryption.
//!
//! A repository has one 32-byte master key. Every working key is derived from it with
//! BLAKE3's key derivation under a fixed context string, so adding a purpose never
//! changes an existing key. Everything stored is sealed with AES-256-GCM under the data
//! key: `nonce (12) || ciphertext || tag (16)`, with a fresh random nonce each time.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Bytes that sealing adds to a plaintext.
pub const OVERHEAD: usize = NONCE_LEN + 16;

#[derive(Debug, thiserror::Error)]
#[error("authentication failed: the data is damaged or was sealed under another key")]
pub struct OpenError;

/// Fills a buffer with bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator failed");
    b
}

/// The secret every other key of a repository is derived from.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey(Zeroizing::new(random_bytes()))
    }

    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the working keys of a repository.
    pub fn derive(&self) -> Keys {
        let data = Zeroizing::new(blake3::derive_key(
            "ballast 2026-11 repository data encryption",
            &self.0[..],
        ));
        let chunk_id = Zeroizing::new(blake3::derive_key(
            "ballast 2026-11 chunk identifiers",
            &self.0[..],
        ));
        let seed = blake3::derive_key("ballast 2026-11 chunker gear seed", &self.0[..]);
        let chunker_seed = u64::from_le_bytes(seed[..8].try_into().unwrap());
        Keys {
            cipher: Cipher::new(&data),
            chunk_id,
            chunker_seed,
        }
    }
}

/// The keys a repository works with once opened.
pub struct Keys {
    pub cipher: Cipher,
    chunk_id: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl Keys {
    /// Seed for the chunker's gear tables.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The identifier of a blob: keyed BLAKE3 of its plaintext, so ids reveal nothing
    /// about content to someone without the key.
    pub fn blob_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.chunk_id, plaintext).as_bytes()
    }
}

/// AES-256-GCM with random nonces.
pub struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Cipher {
        Cipher {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES key")),
        }
    }

    /// Appends `nonce || ciphertext || tag` of `plaintext` to `out`.
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        out.reserve(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut out[start..],
            )
            .expect("AES-GCM sealing cannot fail for inputs under 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Checks and decrypts `nonce || ciphertext || tag`.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::new();
        self.open_into(sealed, &mut buf)?;
        Ok(buf)
    }

    /// Like [`open`](Cipher::open), into a buffer the caller reuses.
    pub fn open_into(&self, sealed: &[u8], buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| OpenError)?;
        buf.clear();
        buf.extend_from_slice(&sealed[NONCE_LEN..]);
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::empty(), buf)
            .map_err(|_| OpenError)?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let keys = MasterKey::generate().derive();
        let sealed = keys.cipher.seal(b"etcd snapshot bytes");
        assert_eq!(sealed.len(), 19 + OVERHEAD);
        assert_eq!(keys.cipher.open(&sealed).unwrap(), b"etcd snapshot bytes");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(keys.cipher.open(&bad).is_err());
        let other = MasterKey::generate().derive();
        assert!(other.cipher.open(&sealed).is_err());
        assert!(keys.cipher.open(&sealed[..10]).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate().derive();
        let b = MasterKey::generate().derive();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), *blake3::hash(b"x").as_bytes());
    }
}
