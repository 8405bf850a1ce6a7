//! Keys and authenticated encryption.
//!
//! A repository has one 32-byte master key. Every working key is derived from it with
//! BLAKE3's key derivation under a fixed context string, so adding a purpose never
//! changes an existing key. Everything stored is sealed with AES-256-GCM under the data
//! key: `nonce (12) || ciphertext || tag (16)`, with a fresh random nonce each time.
//!
//! From format version 2 on, what an object is ([`Sealed`]) is bound into its seal as
//! associated data: an index file copied under `snapshots/`, or a pack trailer
//! presented as a blob, fails authentication instead of being decoded as something it
//! is not (ADR 0003). Version 1 repositories are sealed without it.

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

    /// Derives the working keys of a repository; `typed` for format version 2 and
    /// later (see [`Sealed`]).
    pub fn derive(&self, typed: bool) -> Keys {
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
            typed,
            chunk_id,
            chunker_seed,
        }
    }
}

/// What a sealed object is, bound into its seal in format version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A chunk of data or a tree, inside a pack.
    Blob,
    /// The list of blobs at the end of a pack.
    PackTrailer,
    /// An index file.
    Index,
    /// A snapshot record.
    Snapshot,
    /// A prune mark.
    Mark,
    /// The lease of an exclusive operation.
    Lease,
}

impl Sealed {
    fn aad(self) -> &'static [u8] {
        match self {
            Sealed::Blob => b"ballast/v2/blob",
            Sealed::PackTrailer => b"ballast/v2/pack-trailer",
            Sealed::Index => b"ballast/v2/index",
            Sealed::Snapshot => b"ballast/v2/snapshot",
            Sealed::Mark => b"ballast/v2/prune-mark",
            Sealed::Lease => b"ballast/v2/lease",
        }
    }
}

/// The keys a repository works with once opened.
pub struct Keys {
    cipher: Cipher,
    /// Whether seals carry what they are (format version 2 and later).
    typed: bool,
    chunk_id: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl Keys {
    fn aad(&self, kind: Sealed) -> &'static [u8] {
        if self.typed {
            kind.aad()
        } else {
            b""
        }
    }

    /// Seals `plaintext` as an object of `kind`.
    pub fn seal(&self, kind: Sealed, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.cipher.seal_into(self.aad(kind), plaintext, &mut out);
        out
    }

    /// Appends the seal of `plaintext` as an object of `kind` to `out`.
    pub fn seal_into(&self, kind: Sealed, plaintext: &[u8], out: &mut Vec<u8>) {
        self.cipher.seal_into(self.aad(kind), plaintext, out)
    }

    /// Opens an object of `kind`.
    pub fn open(&self, kind: Sealed, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::new();
        self.cipher.open_into(self.aad(kind), sealed, &mut buf)?;
        Ok(buf)
    }

    /// Like [`open`](Keys::open), into a buffer the caller reuses.
    pub fn open_into(
        &self,
        kind: Sealed,
        sealed: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        self.cipher.open_into(self.aad(kind), sealed, buf)
    }

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

    /// Appends `nonce || ciphertext || tag` of `plaintext` to `out`, with `aad` as
    /// associated data.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        out.reserve(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM sealing cannot fail for inputs under 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Checks and decrypts `nonce || ciphertext || tag`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::new();
        self.open_into(aad, sealed, &mut buf)?;
        Ok(buf)
    }

    /// Like [`open`](Cipher::open), into a buffer the caller reuses.
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| OpenError)?;
        buf.clear();
        buf.extend_from_slice(&sealed[NONCE_LEN..]);
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), buf)
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
        let keys = MasterKey::generate().derive(true);
        let sealed = keys.seal(Sealed::Blob, b"etcd snapshot bytes");
        assert_eq!(sealed.len(), 19 + OVERHEAD);
        assert_eq!(
            keys.open(Sealed::Blob, &sealed).unwrap(),
            b"etcd snapshot bytes"
        );
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(keys.open(Sealed::Blob, &bad).is_err());
        let other = MasterKey::generate().derive(true);
        assert!(other.open(Sealed::Blob, &sealed).is_err());
        assert!(keys.open(Sealed::Blob, &sealed[..10]).is_err());
    }

    #[test]
    fn a_seal_opens_only_as_what_it_was_sealed_as() {
        let master = MasterKey::generate();
        let typed = master.derive(true);
        let sealed = typed.seal(Sealed::Index, b"an index");
        assert!(typed.open(Sealed::Index, &sealed).is_ok());
        for other in [
            Sealed::Snapshot,
            Sealed::Blob,
            Sealed::Mark,
            Sealed::PackTrailer,
        ] {
            assert!(typed.open(other, &sealed).is_err(), "{other:?}");
        }
        // Version 1: no type in the seal, so any kind opens (and nothing typed does).
        let untyped = master.derive(false);
        let old = untyped.seal(Sealed::Index, b"an index");
        assert!(untyped.open(Sealed::Snapshot, &old).is_ok());
        assert!(typed.open(Sealed::Index, &old).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate().derive(true);
        let b = MasterKey::generate().derive(true);
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), *blake3::hash(b"x").as_bytes());
    }
}
