//! Gateway keys: the credentials consumers call the gateway with. Only a SHA-256 digest of the
//! key is stored (64 lowercase hex characters, unique and indexed), with a short display
//! prefix; the caller hashes what a client presents and looks the digest up with
//! [`Store::find_key_by_hash`].
//!
//! [`KeyRecord`] carries the digest and is what the auth path caches; [`KeyView`] is the
//! serialisable shape without it, and [`Store::list_keys`] returns views only.
//!
//! Cache invalidation across instances: every change that must reach an auth cache (revoke,
//! rotate, the consumer deleted or updated) moves the key's `updated_at`; use
//! ([`Store::touch_keys`]) does not. Instances poll [`Store::keys_changed_since`], which reads
//! an index on `updated_at`. `updated_at` is the writer's clock when it wrote, not the commit
//! time, so a poller should ask from its previous poll's start minus a margin (a second is
//! plenty) and tolerate seeing a key twice.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::columns::{
    is_sha256_hex, json_column, json_text, new_id, now_ms, require_name, require_sha256_hex,
};
use crate::{Backend, Store, StoreError};

/// What the admin (or a rotation) writes for a new key. The key itself never reaches the store.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInput {
    /// The owning consumer, which must exist; `None` for a key of the gateway's own.
    pub consumer_id: Option<String>,
    pub label: String,
    /// SHA-256 of the key, 64 lowercase hex characters.
    pub hash: String,
    /// The first characters of the key, shown so a person can tell keys apart.
    pub prefix: String,
    /// `{"apis": [...], "models": [...]}`: an object of string arrays; an empty or missing
    /// list allows everything.
    pub scopes: Value,
    /// Unix milliseconds after which the key stops working.
    pub expires_at: Option<i64>,
    /// Requests per minute, greater than zero; `None` for no key-level limit.
    pub rpm: Option<i64>,
}

impl KeyInput {
    /// A key with every scope, no expiry and no rate limit.
    pub fn new(
        consumer_id: Option<String>,
        label: impl Into<String>,
        hash: impl Into<String>,
        prefix: impl Into<String>,
    ) -> KeyInput {
        KeyInput {
            consumer_id,
            label: label.into(),
            hash: hash.into(),
            prefix: prefix.into(),
            scopes: Value::Object(serde_json::Map::new()),
            expires_at: None,
            rpm: None,
        }
    }

    /// The successor of `old` for [`Store::rotate_key`]: same consumer, label, scopes, expiry
    /// and rate limit, new digest and prefix.
    pub fn rotated_from(
        old: &KeyRecord,
        hash: impl Into<String>,
        prefix: impl Into<String>,
    ) -> KeyInput {
        KeyInput {
            consumer_id: old.consumer_id.clone(),
            label: old.label.clone(),
            hash: hash.into(),
            prefix: prefix.into(),
            scopes: old.scopes.clone(),
            expires_at: old.expires_at,
            rpm: old.rpm,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        require_name(&self.label, "key label")?;
        require_sha256_hex(&self.hash, "key hash")?;
        require_name(&self.prefix, "key prefix")?;
        validate_scopes(&self.scopes)?;
        if self.rpm.is_some_and(|rpm| rpm <= 0 || rpm > 60_000_000) {
            return Err(StoreError::Invalid(
                "key rpm must be between 1 and 60000000".into(),
            ));
        }
        Ok(())
    }
}

fn validate_scopes(scopes: &Value) -> Result<(), StoreError> {
    let Some(object) = scopes.as_object() else {
        return Err(StoreError::Invalid(
            "key scopes must be a JSON object".into(),
        ));
    };
    for (name, list) in object {
        let strings = list
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string));
        if !strings {
            return Err(StoreError::Invalid(format!(
                "key scopes.{name} must be an array of strings"
            )));
        }
    }
    Ok(())
}

/// A stored key with its digest. Deliberately not `Serialize`: use [`KeyView`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub consumer_id: Option<String>,
    pub label: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Value,
    pub expires_at: Option<i64>,
    pub rpm: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    /// Neither revoked nor expired at `now` (unix milliseconds). Says nothing about the
    /// consumer's status or the scopes.
    pub fn is_usable_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A key as the admin API shows it: everything but the digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyView {
    pub id: String,
    pub consumer_id: Option<String>,
    pub label: String,
    pub prefix: String,
    pub scopes: Value,
    pub expires_at: Option<i64>,
    pub rpm: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<&KeyRecord> for KeyView {
    fn from(r: &KeyRecord) -> KeyView {
        KeyView {
            id: r.id.clone(),
            consumer_id: r.consumer_id.clone(),
            label: r.label.clone(),
            prefix: r.prefix.clone(),
            scopes: r.scopes.clone(),
            expires_at: r.expires_at,
            rpm: r.rpm,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

macro_rules! key_columns {
    () => {
        "id, consumer_id, label, prefix, hash, scopes, expires_at, rpm, created_at, updated_at, \
         last_used_at, revoked_at"
    };
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!("SELECT ", key_columns!(), " FROM gateway_keys ", $rest)
    };
}

impl Store {
    /// Issues a key; [`StoreError::NotFound`] if its consumer does not exist,
    /// [`StoreError::Conflict`] if the digest is already stored.
    pub async fn create_key(&self, input: &KeyInput) -> Result<KeyRecord, StoreError> {
        input.validate()?;
        let mut tx = self.begin_write().await?;
        if let Some(consumer_id) = &input.consumer_id {
            lock_consumer(&mut tx, self.backend(), consumer_id).await?;
        }
        let record = insert(&mut tx, input, now_ms()).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(select_keys!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The key whose digest is `hash_hex`, revoked and expired ones included (check
    /// [`KeyRecord::is_usable_at`]). Anything that is not a digest is simply not found.
    pub async fn find_key_by_hash(&self, hash_hex: &str) -> Result<Option<KeyRecord>, StoreError> {
        if !is_sha256_hex(hash_hex) {
            return Ok(None);
        }
        let row = sqlx::query(select_keys!("WHERE hash = $1"))
            .bind(hash_hex)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every key, or one consumer's, in order of creation; views only, so a listing can never
    /// carry a digest.
    pub async fn list_keys(&self, consumer_id: Option<&str>) -> Result<Vec<KeyView>, StoreError> {
        let rows = match consumer_id {
            Some(consumer_id) => {
                sqlx::query(select_keys!("WHERE consumer_id = $1 ORDER BY id ASC"))
                    .bind(consumer_id)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(select_keys!("ORDER BY id ASC"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| from_row(row).map(|r| KeyView::from(&r)))
            .collect()
    }

    /// Revokes a key and returns it; `None` if there is no such id. Revoking again changes
    /// nothing: the first `revoked_at` (and the `updated_at` it set) stay.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE gateway_keys SET revoked_at = $2, updated_at = $2 ",
            "WHERE id = $1 AND revoked_at IS NULL RETURNING ",
            key_columns!()
        ))
        .bind(id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => from_row(&row).map(Some),
            None => self.get_key(id).await,
        }
    }

    /// Replaces key `id` with `new` in one write transaction and returns `(new, old)`.
    ///
    /// The caller decides what the new key carries ([`KeyInput::rotated_from`] copies the old
    /// key's label, scopes, expiry and rate limit); its consumer must be the old key's
    /// ([`StoreError::Invalid`] otherwise). The old key keeps working for `grace_ms` more: its
    /// `expires_at` becomes the earlier of its own and now + `grace_ms` (0 ends it now).
    /// [`StoreError::NotFound`] if there is no such key, [`StoreError::Invalid`] if it is
    /// revoked.
    pub async fn rotate_key(
        &self,
        id: &str,
        new: &KeyInput,
        grace_ms: i64,
    ) -> Result<(KeyRecord, KeyRecord), StoreError> {
        new.validate()?;
        if grace_ms < 0 {
            return Err(StoreError::Invalid(
                "rotation grace must not be negative".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let old = sqlx::query(select_keys!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        if old.consumer_id != new.consumer_id {
            return Err(StoreError::Invalid(
                "a rotated key must keep its consumer".into(),
            ));
        }
        if let Some(consumer_id) = &old.consumer_id {
            lock_consumer(&mut tx, self.backend(), consumer_id).await?;
        }
        let now = now_ms();
        let until = now.saturating_add(grace_ms);
        // The `revoked_at IS NULL` test is repeated here, under the row lock, so a revoke that
        // committed after our read still wins.
        let ended = sqlx::query(concat!(
            "UPDATE gateway_keys SET updated_at = $3, expires_at = CASE ",
            "WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END ",
            "WHERE id = $1 AND revoked_at IS NULL RETURNING ",
            key_columns!()
        ))
        .bind(id)
        .bind(until)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(ended) = ended else {
            return Err(StoreError::Invalid(format!(
                "key {id} is revoked and cannot be rotated"
            )));
        };
        let ended = from_row(&ended)?;
        let fresh = insert(&mut tx, new, now).await?;
        tx.commit().await?;
        Ok((fresh, ended))
    }

    /// Records use: each key's `last_used_at` becomes the later of the stored and the given
    /// time. `updated_at` does not move, so use never shows in [`Store::keys_changed_since`].
    /// Unknown ids are ignored. Keys are written in id order, so concurrent batches from
    /// several instances cannot deadlock on PostgreSQL.
    pub async fn touch_keys(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&(String, i64)> = uses.iter().collect();
        sorted.sort();
        let mut tx = self.begin_write().await?;
        for (id, at) in sorted {
            sqlx::query(
                "UPDATE gateway_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keys whose `updated_at` is at or after `since_ms`, oldest change first: what auth caches
    /// must drop or refresh. Reads the `gateway_keys_updated_at` index.
    pub async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(select_keys!(
            "WHERE updated_at >= $1 ORDER BY updated_at ASC, id ASC"
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}

/// Checks that a consumer exists before a key is issued for it, and on PostgreSQL holds a share
/// lock on its row until the transaction ends. A concurrent [`Store::delete_consumer`] then
/// either deleted first (we see no row: `NotFound`) or waits for our commit and revokes the key
/// we issued. SQLite needs no lock: `begin_write` already serialises writers.
async fn lock_consumer(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    consumer_id: &str,
) -> Result<(), StoreError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT id FROM consumers WHERE id = $1",
        Backend::Postgres => "SELECT id FROM consumers WHERE id = $1 FOR SHARE",
    };
    let found: Option<String> = sqlx::query_scalar(sql)
        .bind(consumer_id)
        .fetch_optional(&mut **tx)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("consumer {consumer_id}"))),
    }
}

async fn insert(
    tx: &mut Transaction<'static, Any>,
    input: &KeyInput,
    now: i64,
) -> Result<KeyRecord, StoreError> {
    let row = sqlx::query(concat!(
        "INSERT INTO gateway_keys (id, consumer_id, label, prefix, hash, scopes, expires_at, ",
        "rpm, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ",
        "RETURNING ",
        key_columns!()
    ))
    .bind(new_id())
    .bind(&input.consumer_id)
    .bind(&input.label)
    .bind(&input.prefix)
    .bind(&input.hash)
    .bind(json_text(&input.scopes)?)
    .bind(input.expires_at)
    .bind(input.rpm)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match StoreError::from(e) {
        // The digest is the only unique column a caller supplies; its value is not repeated.
        StoreError::Conflict(_) => {
            StoreError::Conflict("a key with that hash already exists".into())
        }
        other => other,
    })?;
    from_row(&row)
}

fn from_row(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        consumer_id: row.try_get("consumer_id")?,
        label: row.try_get("label")?,
        prefix: row.try_get("prefix")?,
        hash: row.try_get("hash")?,
        scopes: json_column(row, "scopes")?,
        expires_at: row.try_get("expires_at")?,
        rpm: row.try_get("rpm")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
