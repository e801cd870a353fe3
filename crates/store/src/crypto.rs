//! Encryption at rest for secrets kept in the store (provider keys).
//!
//! AES-256-GCM with a random 96-bit nonce per seal; a blob is `nonce ‖ ciphertext ‖ tag`. Every
//! seal takes associated data naming the row the blob belongs to (`provider:<id>`), so a blob
//! copied onto another row fails authentication instead of decrypting as that row's key.
//! [`key_file`] keeps the 32-byte key in the data directory when none is configured.
//!
//! A [`Keyring`] is what the store holds: the primary key seals, every key it knows opens.
//! Blobs it seals name their key (`0x01 ‖ key id ‖ nonce ‖ ciphertext ‖ tag`, the id being the
//! first four bytes of the key's SHA-256), so rotating the key is: make the new key primary with
//! the old one kept for opening, re-seal every row ([`crate::Store::rotate_encryption`]), then
//! drop the old key. Blobs written before key ids existed are opened by trying each key.

pub mod key_file;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::fmt;
use wire::secret::Secret;

use crate::StoreError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_HEX_LEN: usize = 64;
/// First byte of a blob that names its key.
const TAGGED: u8 = 0x01;
const KEY_ID_LEN: usize = 4;

/// An AES-256-GCM key. Cheap to clone; `Debug` never prints the key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
    id: [u8; KEY_ID_LEN],
}

fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let d = Sha256::digest(key);
    [d[0], d[1], d[2], d[3]]
}

impl Cipher {
    /// Parses a 32-byte key written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(key_hex: &str) -> Result<Cipher, StoreError> {
        let key_hex = key_hex.trim();
        if key_hex.len() != KEY_HEX_LEN {
            return Err(StoreError::Crypto(
                "encryption key must be 64 hex digits (32 bytes)",
            ));
        }
        let bytes = hex::decode(key_hex)
            .map_err(|_| StoreError::Crypto("encryption key is not valid hex"))?;
        let aead = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| StoreError::Crypto("encryption key must be 32 bytes"))?;
        Ok(Cipher {
            aead,
            id: key_id(&bytes),
        })
    }

    /// The key's public fingerprint (8 hex digits): safe to log, names the key in blobs.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// A fresh random key and its hex form (the caller persists the hex; it is the secret).
    pub fn generate() -> (Cipher, String) {
        let key = Aes256Gcm::generate_key(OsRng);
        let key_hex = hex::encode(key);
        (
            Cipher {
                aead: Aes256Gcm::new(&key),
                id: key_id(&key),
            },
            key_hex,
        )
    }

    /// Encrypts `plaintext` bound to `aad` (the row it will be stored on).
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<Vec<u8>, StoreError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: aad.as_bytes(),
        };
        let sealed = self
            .aead
            .encrypt(&nonce, payload)
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// Decrypts a blob from [`Cipher::seal`]; fails unless `aad` is the one it was sealed with.
    pub fn open(&self, blob: &[u8], aad: &str) -> Result<Secret, StoreError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Crypto("ciphertext too short"));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: aad.as_bytes(),
        };
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| {
                StoreError::Crypto("decryption failed: wrong key, tampered, or moved ciphertext")
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| StoreError::Crypto("decrypted secret is not UTF-8"))
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cipher({})", self.id())
    }
}

/// The keys the store knows: the primary seals, all of them open.
#[derive(Clone, Debug)]
pub struct Keyring {
    primary: Cipher,
    previous: Vec<Cipher>,
}

impl From<Cipher> for Keyring {
    fn from(primary: Cipher) -> Keyring {
        Keyring {
            primary,
            previous: Vec::new(),
        }
    }
}

impl Keyring {
    pub fn new(primary: Cipher, previous: Vec<Cipher>) -> Keyring {
        let previous = previous
            .into_iter()
            .filter(|c| c.id != primary.id)
            .collect();
        Keyring { primary, previous }
    }

    /// `new` as primary, every key of this ring kept for opening.
    pub fn rotated(&self, new: Cipher) -> Keyring {
        let mut previous = vec![self.primary.clone()];
        previous.extend(self.previous.iter().cloned());
        Keyring::new(new, previous)
    }

    pub fn primary_id(&self) -> String {
        self.primary.id()
    }

    pub fn previous_ids(&self) -> Vec<String> {
        self.previous.iter().map(Cipher::id).collect()
    }

    /// Seals under the primary key, naming it in the blob.
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<Vec<u8>, StoreError> {
        let sealed = self.primary.seal(plaintext, aad)?;
        let mut blob = Vec::with_capacity(1 + KEY_ID_LEN + sealed.len());
        blob.push(TAGGED);
        blob.extend_from_slice(&self.primary.id);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    fn all(&self) -> impl Iterator<Item = &Cipher> {
        std::iter::once(&self.primary).chain(self.previous.iter())
    }

    /// Opens a blob sealed under any key of the ring (bound to `aad`).
    pub fn open(&self, blob: &[u8], aad: &str) -> Result<Secret, StoreError> {
        if let Some(id) = tagged_id(blob)
            && let Some(c) = self.all().find(|c| c.id == id)
        {
            return c.open(&blob[1 + KEY_ID_LEN..], aad);
        }
        // Untagged (written before key ids), or tagged with a key this ring lacks: the random
        // nonce may start with the tag byte, so each key gets a try on the whole blob.
        for c in self.all() {
            if let Ok(s) = c.open(blob, aad) {
                return Ok(s);
            }
        }
        if tagged_id(blob).is_some() {
            return Err(StoreError::Crypto(
                "sealed under an encryption key this instance does not have: add it to GATEWAY_ENCRYPTION_KEY_PREVIOUS",
            ));
        }
        Err(StoreError::Crypto(
            "decryption failed: wrong key, tampered, or moved ciphertext",
        ))
    }

    /// Whether `blob` is sealed under the primary key already.
    pub fn is_current(&self, blob: &[u8]) -> bool {
        tagged_id(blob) == Some(self.primary.id)
    }
}

fn tagged_id(blob: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    match blob {
        [TAGGED, a, b, c, d, rest @ ..] if rest.len() >= NONCE_LEN + TAG_LEN => {
            Some([*a, *b, *c, *d])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), StoreError>;

    #[test]
    fn seal_then_open_round_trips() -> TestResult {
        let (cipher, _) = Cipher::generate();
        let blob = cipher.seal("sk-live-123", "provider:a")?;
        assert_eq!(blob.len(), NONCE_LEN + "sk-live-123".len() + TAG_LEN);
        assert_eq!(cipher.open(&blob, "provider:a")?.expose(), "sk-live-123");
        Ok(())
    }

    #[test]
    fn nonces_are_fresh_per_seal() -> TestResult {
        let (cipher, _) = Cipher::generate();
        assert_ne!(cipher.seal("k", "x")?, cipher.seal("k", "x")?);
        Ok(())
    }

    #[test]
    fn other_aad_tamper_or_key_fails() -> TestResult {
        let (cipher, _) = Cipher::generate();
        let (other, _) = Cipher::generate();
        let mut blob = cipher.seal("secret", "provider:a")?;
        assert!(matches!(
            cipher.open(&blob, "provider:b"),
            Err(StoreError::Crypto(_))
        ));
        assert!(matches!(
            other.open(&blob, "provider:a"),
            Err(StoreError::Crypto(_))
        ));
        assert!(matches!(
            cipher.open(&blob[..10], "provider:a"),
            Err(StoreError::Crypto(_))
        ));
        if let Some(last) = blob.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            cipher.open(&blob, "provider:a"),
            Err(StoreError::Crypto(_))
        ));
        Ok(())
    }

    #[test]
    fn hex_key_round_trips_and_bad_keys_are_refused() -> TestResult {
        let (cipher, key_hex) = Cipher::generate();
        assert_eq!(key_hex.len(), KEY_HEX_LEN);
        let again = Cipher::from_hex(&format!(" {key_hex}\n"))?;
        let blob = cipher.seal("v", "aad")?;
        assert_eq!(again.open(&blob, "aad")?.expose(), "v");
        assert!(Cipher::from_hex("abcd").is_err());
        assert!(Cipher::from_hex(&"zz".repeat(32)).is_err());
        Ok(())
    }

    #[test]
    fn a_rotated_ring_opens_old_blobs_and_seals_under_the_new_key() -> TestResult {
        let (old, _) = Cipher::generate();
        let (new, _) = Cipher::generate();
        let ring = Keyring::from(old.clone());
        let tagged_old = ring.seal("k1", "provider:a")?;
        let legacy = old.seal("k0", "provider:a")?;
        assert!(ring.is_current(&tagged_old));
        let next = ring.rotated(new.clone());
        assert_eq!(next.primary_id(), new.id());
        assert_eq!(next.previous_ids(), vec![old.id()]);
        assert!(!next.is_current(&tagged_old));
        assert_eq!(next.open(&tagged_old, "provider:a")?.expose(), "k1");
        assert_eq!(next.open(&legacy, "provider:a")?.expose(), "k0");
        let fresh = next.seal("k2", "provider:a")?;
        assert!(next.is_current(&fresh));
        // Bound to its row whichever key sealed it.
        assert!(next.open(&fresh, "provider:b").is_err());
        assert!(next.open(&tagged_old, "provider:b").is_err());
        // Without the old key, its blobs do not open, and the error says what to do.
        let Err(e) = Keyring::from(new).open(&tagged_old, "provider:a") else {
            return Err(StoreError::Invalid("opened without the key".into()));
        };
        assert!(
            e.to_string().contains("GATEWAY_ENCRYPTION_KEY_PREVIOUS"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn debug_and_errors_never_print_the_key() -> TestResult {
        let (cipher, key_hex) = Cipher::generate();
        assert!(!format!("{cipher:?}").contains(&key_hex));
        let Err(err) = Cipher::from_hex(&key_hex[..60]) else {
            return Err(StoreError::Invalid("a short key was accepted".into()));
        };
        assert!(!err.to_string().contains(&key_hex[..60]));
        Ok(())
    }
}
