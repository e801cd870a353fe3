//! Gateway keys: `<prefix><32 base62 characters>` (about 190 bits from the OS random source),
//! with `gw_live_` as the default prefix. The store keeps only the SHA-256 digest and a short
//! display prefix; the raw key exists once, in the response that created it.
//!
//! [`shape_ok`] rejects what cannot be a key (wrong prefix family, length, alphabet) before any
//! digest or lookup, so garbage in `Authorization` costs a few comparisons.

use rand::Rng;
use sha2::{Digest, Sha256};

/// The prefix of new keys unless the operator configures another one.
pub const DEFAULT_PREFIX: &str = "gw_live_";
/// Characters of randomness after the prefix.
pub const RANDOM_LEN: usize = 32;
/// Random characters kept in the display prefix (`gw_live_AbCd`).
const DISPLAY_RANDOM: usize = 4;
const MAX_PREFIX_LEN: usize = 24;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: the raw value (shown once), its digest and its display prefix.
pub struct NewKey {
    pub raw: String,
    pub hash: [u8; 32],
    pub display: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "key prefix must be 3-24 characters of a-z, 0-9 and '_', start with a letter and end with '_'"
)]
pub struct BadPrefix;

/// Checks an operator-chosen prefix (`gw_live_`, `gw_test_`, `acme_`).
pub fn validate_prefix(prefix: &str) -> Result<(), BadPrefix> {
    let b = prefix.as_bytes();
    let ok = (3..=MAX_PREFIX_LEN).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.last() == Some(&b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if ok { Ok(()) } else { Err(BadPrefix) }
}

/// Generates a key with `prefix` (already validated).
pub fn generate(prefix: &str) -> NewKey {
    let mut rng = rand::rngs::OsRng;
    let mut raw = String::with_capacity(prefix.len() + RANDOM_LEN);
    raw.push_str(prefix);
    for _ in 0..RANDOM_LEN {
        // 62 choices: `gen_range` is unbiased (rejection sampling inside).
        raw.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    let display = raw[..prefix.len() + DISPLAY_RANDOM].to_string();
    NewKey {
        hash: digest(&raw),
        raw,
        display,
    }
}

/// The SHA-256 digest the store indexes keys by.
pub fn digest(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

/// Whether `presented` can be a gateway key of any prefix: `[a-z0-9_]{3,24}` ending in `_`,
/// then exactly [`RANDOM_LEN`] base62 characters. Keys of an older prefix keep working.
pub fn shape_ok(presented: &str) -> bool {
    let b = presented.as_bytes();
    if b.len() < 3 + RANDOM_LEN || b.len() > MAX_PREFIX_LEN + RANDOM_LEN {
        return false;
    }
    let (prefix, random) = b.split_at(b.len() - RANDOM_LEN);
    prefix.last() == Some(&b'_')
        && prefix[0].is_ascii_lowercase()
        && prefix
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && random.iter().all(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_prefix_and_pass_the_shape_check() {
        let k = generate(DEFAULT_PREFIX);
        assert!(k.raw.starts_with("gw_live_"));
        assert_eq!(k.raw.len(), DEFAULT_PREFIX.len() + RANDOM_LEN);
        assert!(shape_ok(&k.raw));
        assert_eq!(k.hash, digest(&k.raw));
        assert_eq!(k.display.len(), DEFAULT_PREFIX.len() + 4);
        assert!(k.raw.starts_with(&k.display));
        assert!(!format!("{k:?}").contains(&k.raw));
    }

    #[test]
    fn keys_differ_and_use_the_whole_alphabet() {
        let keys: Vec<_> = (0..200).map(|_| generate("gw_test_").raw).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        let chars: std::collections::HashSet<char> =
            keys.iter().flat_map(|k| k[8..].chars()).collect();
        // 6,400 draws from 62 symbols: every one appears (missing one has p < 1e-40).
        assert_eq!(chars.len(), 62);
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["gw_live_", "gw_test_", "acme_", "a1_"] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "gw",
            "gw_live",
            "GW_",
            "_gw_",
            "gw-live_",
            "gw_live_far_too_long_prefix_",
        ] {
            assert_eq!(validate_prefix(bad), Err(BadPrefix), "{bad}");
        }
    }

    #[test]
    fn garbage_fails_the_shape_check() {
        let good = generate(DEFAULT_PREFIX).raw;
        assert!(shape_ok(&good));
        for bad in [
            "",
            "Bearer",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
            "gw_live_' OR 1=1 --abcdefghijklmnopqrstuv",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replace("gw_live_", "GW_LIVE_"),
            &format!("gw_live_{}\0", &good[9..]),
        ] {
            assert!(!shape_ok(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn shape_check_never_panics(s in "\\PC{0,80}") {
            let _ = shape_ok(&s);
        }
    }
}
