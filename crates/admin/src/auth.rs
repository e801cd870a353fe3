//! The admin token: generated once if the operator gave none, stored only as a SHA-256 hash,
//! compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_SETTING: &str = "admin_token_sha256";

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn matches(presented: &str, stored: &[u8; 32]) -> bool {
    hash(presented).ct_eq(stored).into()
}

/// What start-up decided about the admin token.
pub enum TokenSetup {
    /// Set from `GATEWAY_ADMIN_TOKEN`.
    FromEnv([u8; 32]),
    /// Freshly generated on first start: the raw token is shown once and never stored.
    Generated { token: String, hash: [u8; 32] },
    /// Loaded from the store (generated on an earlier start).
    Stored([u8; 32]),
}

impl TokenSetup {
    pub fn hash(&self) -> [u8; 32] {
        match self {
            TokenSetup::FromEnv(h) | TokenSetup::Stored(h) => *h,
            TokenSetup::Generated { hash, .. } => *hash,
        }
    }
}

/// Shortest admin token accepted from the environment.
pub const MIN_TOKEN_LEN: usize = 16;

/// Tokens that appear in tutorials, default configs and breach lists.
const WELL_KNOWN: &[&str] = &[
    "admin",
    "administrator",
    "password",
    "passw0rd",
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "token",
    "test",
    "testing",
    "default",
    "letmein",
    "gateway",
    "master",
    "sk-1234",
    "sk-admin",
    "your-admin-token",
    "your_admin_token",
    "admin-token",
    "qwerty",
];

/// Why an operator-chosen admin token is refused, if it is.
pub fn weakness(token: &str) -> Option<&'static str> {
    let t = token.trim();
    if t.is_empty() {
        return Some("is set but empty: unset it to have a token generated, or set a strong one");
    }
    let lower = t.to_ascii_lowercase();
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c == '!');
    if WELL_KNOWN.iter().any(|w| lower == *w || stem == *w) {
        return Some("is a well-known default: set a random one (`openssl rand -hex 32`)");
    }
    if t.len() < MIN_TOKEN_LEN {
        return Some("is shorter than 16 characters: set a random one (`openssl rand -hex 32`)");
    }
    let mut chars = t.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first)
        || t.bytes().collect::<std::collections::BTreeSet<_>>().len() < 6
    {
        return Some("has too few distinct characters: set a random one (`openssl rand -hex 32`)");
    }
    None
}

/// Resolves the admin token: the env token wins; otherwise the stored hash; otherwise a new token
/// whose hash is stored only if no other instance stored one first.
pub async fn setup(
    store: &store::Store,
    env_token: Option<&str>,
) -> Result<TokenSetup, store::StoreError> {
    if let Some(t) = env_token.filter(|t| !t.is_empty()) {
        return Ok(TokenSetup::FromEnv(hash(t)));
    }
    loop {
        if let Some(h) = store.get_setting(TOKEN_SETTING).await? {
            let mut out = [0u8; 32];
            if hex::decode_to_slice(h.trim(), &mut out).is_ok() {
                return Ok(TokenSetup::Stored(out));
            }
            return Err(store::StoreError::Invalid(
                "stored admin token hash is malformed".into(),
            ));
        }
        let token = random_token();
        let h = hash(&token);
        if store
            .set_setting_if_absent(TOKEN_SETTING, &hex::encode(h))
            .await?
        {
            return Ok(TokenSetup::Generated { token, hash: h });
        }
    }
}

/// `gwa_` + 32 bytes from the OS random source, in hex.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("gwa_{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_admin_tokens_are_refused() {
        for weak in [
            "",
            "  ",
            "admin",
            "Admin123",
            "changeme",
            "password!",
            "sk-1234",
            "short-token",
            "aaaaaaaaaaaaaaaaaaaa",
            "abababababababababab",
        ] {
            assert!(weakness(weak).is_some(), "{weak:?} accepted");
        }
        for strong in [
            random_token().as_str(),
            "gwa_lc_x_0123456789abcdef",
            "correct-horse-battery-staple",
        ] {
            assert_eq!(weakness(strong), None, "{strong:?} refused");
        }
    }

    #[test]
    fn only_the_right_token_matches() {
        let h = hash("gwa_secret");
        assert!(matches("gwa_secret", &h));
        assert!(!matches("gwa_secreT", &h));
        assert!(!matches("", &h));
    }

    #[test]
    fn generated_tokens_differ() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(a.starts_with("gwa_") && a.len() == 68);
    }
}
