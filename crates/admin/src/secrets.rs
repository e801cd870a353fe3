//! Encryption-key rotation for secrets at rest, without downtime.
//!
//! With the key in the data directory (`encryption.key`), one call does it all: a new key is
//! generated, written to the key file ahead of the old ones, and every stored secret is re-sealed
//! under it. With `GATEWAY_ENCRYPTION_KEY` the operator rolls out the new key first (as
//! `GATEWAY_ENCRYPTION_KEY`, the old one in `GATEWAY_ENCRYPTION_KEY_PREVIOUS`, so every instance
//! reads both), then calls this to re-seal everything under it, then drops the old key.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::json;

use crate::api::{Shared, audit};
use crate::error::AdminError;

#[derive(Debug, Serialize)]
pub struct Rotated {
    /// Fingerprint of the key everything is sealed with now (not the key).
    pub key_id: String,
    /// Secrets re-sealed by this call.
    pub resealed: usize,
    /// Keys still kept for opening; drop them once no instance runs with an older primary.
    pub previous_key_ids: Vec<String>,
    /// Whether a new key was generated and written to the data directory's key file.
    pub generated: bool,
}

pub async fn rotate_key(State(s): State<Shared>) -> Result<Json<Rotated>, AdminError> {
    let current = s.store.keyring();
    let (next, generated) = match &s.key_file_dir {
        Some(dir) => {
            let (new, new_hex) = store::Cipher::generate();
            let mut lines = vec![new_hex];
            let existing = store::load_or_create_key_file(dir).map_err(AdminError::from)?;
            lines.extend(existing);
            // The file first: a crash after this leaves a ring that still opens everything.
            store::write_rotated_key_file(dir, &lines).map_err(AdminError::from)?;
            (Some(current.rotated(new)), true)
        }
        None => (None, false),
    };
    let resealed = s.store.rotate_encryption(next).await?;
    let ring = s.store.keyring();
    let out = Rotated {
        key_id: ring.primary_id(),
        resealed,
        previous_key_ids: ring.previous_ids(),
        generated,
    };
    audit(
        &s,
        "secrets.rotate_key",
        &out.key_id,
        json!({"resealed": resealed, "from": current.primary_id(), "generated": generated}),
    )
    .await;
    Ok(Json(out))
}
