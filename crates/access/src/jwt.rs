//! Placeholder until the JWT verifier lands (replaced by the `jwt` branch).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtConfig {
    pub jwks_url: String,
    pub issuer: String,
}

impl JwtConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
