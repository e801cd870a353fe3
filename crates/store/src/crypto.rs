//! Encryption at rest for secrets kept in the store (provider keys).
//!
//! AES-256-GCM with a random 96-bit nonce per seal; a blob is `nonce ‖ ciphertext ‖ tag`. Every
//! seal takes associated data naming the row the blob belongs to (`provider:<id>`), so a blob
//! copied onto another row fails authentication instead of decrypting as that row's key.
//! [`key_file`] keeps the 32-byte key in the data directory when none is configured.

pub mod key_file;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fmt;
use wire::secret::Secret;

use crate::StoreError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_HEX_LEN: usize = 64;

/// An AES-256-GCM key. Cheap to clone; `Debug` never prints the key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
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
        Ok(Cipher { aead })
    }

    /// A fresh random key and its hex form (the caller persists the hex; it is the secret).
    pub fn generate() -> (Cipher, String) {
        let key = Aes256Gcm::generate_key(OsRng);
        let key_hex = hex::encode(key);
        (
            Cipher {
                aead: Aes256Gcm::new(&key),
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
        f.write_str("Cipher(***)")
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
