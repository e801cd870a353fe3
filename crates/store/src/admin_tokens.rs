//! Admin tokens: named credentials for the admin API, each with a role. As with gateway keys
//! only a SHA-256 digest and a display prefix are stored, and [`AdminTokenRecord`] does not
//! carry the digest at all: nothing the store returns about a token can be used to log in.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::columns::{
    is_sha256_hex, new_id, now_ms, require_name, require_one_of, require_sha256_hex,
};
use crate::{Store, StoreError};

/// The roles an admin token may have: `admin` may change things, `viewer` may only read.
pub const ADMIN_ROLES: &[&str] = &["admin", "viewer"];

#[derive(Debug, Clone, PartialEq)]
pub struct AdminTokenInput {
    /// Unique.
    pub name: String,
    /// One of [`ADMIN_ROLES`].
    pub role: String,
    /// SHA-256 of the token, 64 lowercase hex characters.
    pub hash: String,
    pub prefix: String,
}

impl AdminTokenInput {
    fn validate(&self) -> Result<(), StoreError> {
        require_name(&self.name, "admin token name")?;
        require_one_of(&self.role, ADMIN_ROLES, "admin token role")?;
        require_sha256_hex(&self.hash, "admin token hash")?;
        require_name(&self.prefix, "admin token prefix")
    }
}

/// A stored admin token, without its digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! token_columns {
    () => {
        "id, name, role, prefix, created_at, last_used_at, revoked_at"
    };
}

impl Store {
    /// Stores a new token; [`StoreError::Conflict`] if the name (or the digest) is taken.
    pub async fn create_admin_token(
        &self,
        input: &AdminTokenInput,
    ) -> Result<AdminTokenRecord, StoreError> {
        input.validate()?;
        let row = sqlx::query(concat!(
            "INSERT INTO admin_tokens (id, name, role, prefix, hash, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            token_columns!()
        ))
        .bind(new_id())
        .bind(&input.name)
        .bind(&input.role)
        .bind(&input.prefix)
        .bind(&input.hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "admin token {} already exists (or its hash is in use)",
                input.name
            )),
            other => other,
        })?;
        from_row(&row)
    }

    /// Every token, revoked ones included, by name.
    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM admin_tokens ORDER BY name ASC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The token whose digest is `hash_hex`, revoked ones included (check `revoked_at`).
    /// Anything that is not a digest is simply not found.
    pub async fn find_admin_token_by_hash(
        &self,
        hash_hex: &str,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        if !is_sha256_hex(hash_hex) {
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM admin_tokens WHERE hash = $1"
        ))
        .bind(hash_hex)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Revokes a token; `true` if it exists (now or already revoked: the first `revoked_at`
    /// stays), `false` if there is no such id.
    pub async fn revoke_admin_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records use at `at` (unix milliseconds); an earlier time than the stored one changes
    /// nothing, nor does an unknown id.
    pub async fn touch_admin_token(&self, id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE admin_tokens SET last_used_at = $2 \
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn from_row(row: &AnyRow) -> Result<AdminTokenRecord, StoreError> {
    Ok(AdminTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
