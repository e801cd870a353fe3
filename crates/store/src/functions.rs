//! Functions: an operator's HTTP endpoint (URL, signing secret, deadline, failure mode), keyed
//! by name, used by gateway APIs as a pre-hook, post-hook or function backend.
//!
//! The signing secret is sealed with `function:<name>` as associated data, so a ciphertext
//! copied onto another row does not open. [`FunctionRecord`] carries it opened, as a
//! [`Secret`], and is not serialisable; [`FunctionView`] is what listings show.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use wire::secret::Secret;

use crate::columns::now_ms;
use crate::{Keyring, Store, StoreError};

/// What the admin writes. `secret: None` on an update keeps the stored secret.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionInput {
    pub name: String,
    pub url: String,
    pub secret: Option<Secret>,
    pub deadline_ms: i64,
    /// `fail_open` or `fail_closed`.
    pub failure_mode: String,
}

/// A stored function with its secret opened. Deliberately not `Serialize`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRecord {
    pub name: String,
    pub url: String,
    pub secret: Secret,
    pub deadline_ms: i64,
    pub failure_mode: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A function as listings show it: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionView {
    pub name: String,
    pub url: String,
    pub has_secret: bool,
    pub deadline_ms: i64,
    pub failure_mode: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&FunctionRecord> for FunctionView {
    fn from(r: &FunctionRecord) -> Self {
        FunctionView {
            name: r.name.clone(),
            url: r.url.clone(),
            has_secret: !r.secret.is_empty(),
            deadline_ms: r.deadline_ms,
            failure_mode: r.failure_mode.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

fn aad(name: &str) -> String {
    format!("function:{name}")
}

impl FunctionInput {
    fn validate(&self) -> Result<(), StoreError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(StoreError::Invalid(
                "name: 1-64 letters, digits, '-' or '_'".into(),
            ));
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://"))
            || self.url.len() > 2000
        {
            return Err(StoreError::Invalid(
                "url: an http(s) URL of at most 2000 characters".into(),
            ));
        }
        if !(1..=30_000).contains(&self.deadline_ms) {
            return Err(StoreError::Invalid(
                "deadline_ms: between 1 and 30000".into(),
            ));
        }
        if !matches!(self.failure_mode.as_str(), "fail_open" | "fail_closed") {
            return Err(StoreError::Invalid(
                "failure_mode: fail_open or fail_closed".into(),
            ));
        }
        if self.secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
            return Err(StoreError::Invalid("secret: at least 16 characters".into()));
        }
        Ok(())
    }
}

impl Store {
    /// Creates or replaces a function. A new function needs a secret; an existing one keeps
    /// its secret when `secret` is `None`. Returns whether it was created.
    pub async fn put_function(&self, f: &FunctionInput) -> Result<bool, StoreError> {
        f.validate()?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT secret FROM functions WHERE name = $1")
            .bind(&f.name)
            .fetch_optional(&mut *tx)
            .await?;
        let sealed = match (&f.secret, &existing) {
            (Some(s), _) => self.keyring().seal(s.expose(), &aad(&f.name))?,
            (None, Some(row)) => row.try_get::<Vec<u8>, _>("secret")?,
            (None, None) => {
                return Err(StoreError::Invalid(
                    "secret: required for a new function".into(),
                ));
            }
        };
        if existing.is_some() {
            sqlx::query(
                "UPDATE functions SET url = $2, secret = $3, deadline_ms = $4, \
                 failure_mode = $5, updated_at = $6 WHERE name = $1",
            )
            .bind(&f.name)
            .bind(&f.url)
            .bind(sealed)
            .bind(f.deadline_ms)
            .bind(&f.failure_mode)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO functions (name, url, secret, deadline_ms, failure_mode, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&f.name)
            .bind(&f.url)
            .bind(sealed)
            .bind(f.deadline_ms)
            .bind(&f.failure_mode)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(existing.is_none())
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT name, url, secret, deadline_ms, failure_mode, created_at, updated_at \
             FROM functions WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.function_row(&r)).transpose()
    }

    pub async fn list_functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, url, secret, deadline_ms, failure_mode, created_at, updated_at \
             FROM functions ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.function_row(r)).collect()
    }

    pub async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM functions WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    fn function_row(&self, r: &AnyRow) -> Result<FunctionRecord, StoreError> {
        let name: String = r.try_get("name")?;
        let blob: Vec<u8> = r.try_get("secret")?;
        let secret = self.keyring().open(&blob, &aad(&name))?;
        Ok(FunctionRecord {
            url: r.try_get("url")?,
            secret,
            deadline_ms: r.try_get("deadline_ms")?,
            failure_mode: r.try_get("failure_mode")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            name,
        })
    }
}

/// Re-seals every function secret under `ring`'s primary key (part of key rotation).
pub(crate) async fn reseal(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ring: &Keyring,
) -> Result<usize, StoreError> {
    let rows = sqlx::query("SELECT name, secret FROM functions")
        .fetch_all(&mut **tx)
        .await?;
    let mut n = 0;
    for row in &rows {
        let name: String = row.try_get("name")?;
        let blob: Vec<u8> = row.try_get("secret")?;
        if ring.is_current(&blob) {
            continue;
        }
        let a = aad(&name);
        let fresh = ring.seal(ring.open(&blob, &a)?.expose(), &a)?;
        sqlx::query("UPDATE functions SET secret = $2 WHERE name = $1")
            .bind(&name)
            .bind(fresh)
            .execute(&mut **tx)
            .await?;
        n += 1;
    }
    Ok(n)
}
