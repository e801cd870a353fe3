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
