//! Providers: one credential for one upstream (kind, base URL, encrypted key, options), keyed by
//! a unique name.
//!
//! The key is sealed with the row's id as associated data (`provider:<id>`), so a ciphertext
//! copied onto another row does not decrypt. [`ProviderRecord`] carries the decrypted key as a
//! [`Secret`] and is not serialisable; [`ProviderView`] is the serialisable shape with
//! `has_api_key` in place of the key.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use wire::secret::Secret;

use crate::columns::{
    bool_column, json_column, json_text, new_id, now_ms, require_name, require_object,
};
use std::sync::Arc;

use crate::{Keyring, Store, StoreError};

/// What the admin writes for a provider. `api_key: None` on an upsert keeps the stored key.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInput {
    pub name: String,
    /// `openai`, `azure_openai`, `anthropic`, a compatible-table row, `local`… (the caller
    /// validates kinds; the store keeps the text).
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Kind-specific options (e.g. Azure `api_version`, `deployments`), a JSON object.
    pub options: Value,
    /// Model names this provider serves.
    pub models: Vec<String>,
    /// Higher wins when several providers serve a model.
    pub priority: i64,
    pub enabled: bool,
}

impl ProviderInput {
    /// An enabled provider with no key, no options, no models and priority 0.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> ProviderInput {
        ProviderInput {
            name: name.into(),
            kind: kind.into(),
            base_url: None,
            api_key: None,
            options: Value::Object(serde_json::Map::new()),
            models: Vec::new(),
            priority: 0,
            enabled: true,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        require_name(&self.name, "provider name")?;
        require_name(&self.kind, "provider kind")?;
        require_object(&self.options, "provider options")?;
        if self.base_url.as_deref().is_some_and(str::is_empty) {
            return Err(StoreError::Invalid("base_url must not be empty".into()));
        }
        if self.api_key.as_ref().is_some_and(Secret::is_empty) {
            return Err(StoreError::Invalid("api_key must not be empty".into()));
        }
        Ok(())
    }
}

/// A stored provider with its key decrypted. Deliberately not `Serialize`: use [`ProviderView`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub options: Value,
    pub models: Vec<String>,
    pub priority: i64,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A provider as the admin API shows it: everything but the key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub has_api_key: bool,
    pub options: Value,
    pub models: Vec<String>,
    pub priority: i64,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ProviderRecord> for ProviderView {
    fn from(r: &ProviderRecord) -> ProviderView {
        ProviderView {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            base_url: r.base_url.clone(),
            has_api_key: r.api_key.is_some(),
            options: r.options.clone(),
            models: r.models.clone(),
            priority: r.priority,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The associated data binding a provider's key ciphertext to its row.
pub(crate) fn key_aad(id: &str) -> String {
    format!("provider:{id}")
}

macro_rules! provider_columns {
    () => {
        "id, name, kind, base_url, api_key, options, models, priority, enabled, created_at, \
         updated_at"
    };
}

macro_rules! select_providers {
    ($rest:literal) => {
        concat!("SELECT ", provider_columns!(), " FROM providers ", $rest)
    };
}

impl Store {
    /// Inserts a new provider; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_provider(
        &self,
        input: &ProviderInput,
    ) -> Result<ProviderRecord, StoreError> {
        input.validate()?;
        let id = new_id();
        let now = now_ms();
        insert(&self.pool, &self.keys.load_full(), &id, input, now, false)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("provider {} already exists", input.name))
                }
                other => other,
            })?;
        Ok(ProviderRecord {
            id,
            name: input.name.clone(),
            kind: input.kind.clone(),
            base_url: input.base_url.clone(),
            api_key: input.api_key.clone(),
            options: input.options.clone(),
            models: input.models.clone(),
            priority: input.priority,
            enabled: input.enabled,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates or replaces the provider named `input.name`, keeping its id, creation time and,
    /// when `input.api_key` is `None`, its stored key.
    pub async fn upsert_provider(
        &self,
        input: &ProviderInput,
    ) -> Result<ProviderRecord, StoreError> {
        input.validate()?;
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        // Two rounds: on PostgreSQL a concurrent creator can win the insert between our read
        // and our insert; the second read then sees its row and updates it.
        let mut id = None;
        for _ in 0..2 {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM providers WHERE name = $1")
                    .bind(&input.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(existing) = existing {
                update(&mut *tx, &self.keys.load_full(), &existing, input, now).await?;
                id = Some(existing);
                break;
            }
            let fresh = new_id();
            if insert(&mut *tx, &self.keys.load_full(), &fresh, input, now, true).await? == 1 {
                id = Some(fresh);
                break;
            }
        }
        let Some(id) = id else {
            return Err(StoreError::Conflict(format!(
                "provider {} is being written concurrently",
                input.name
            )));
        };
        let row = sqlx::query(select_providers!("WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let record = from_row(&row, &self.keys.load_full())?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn get_provider(&self, name: &str) -> Result<Option<ProviderRecord>, StoreError> {
        let row = sqlx::query(select_providers!("WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_row(&r, &self.keys.load_full()))
            .transpose()
    }

    /// Every provider, highest priority first, then by name.
    pub async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let rows = sqlx::query(select_providers!("ORDER BY priority DESC, name ASC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| from_row(r, &self.keys.load_full()))
            .collect()
    }

    /// Turns a provider on or off; [`StoreError::NotFound`] if there is none by that name.
    pub async fn set_provider_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<ProviderRecord, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE providers SET enabled = $2, updated_at = $3 WHERE name = $1 RETURNING ",
            provider_columns!()
        ))
        .bind(name)
        .bind(enabled)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => from_row(&row, &self.keys.load_full()),
            None => Err(StoreError::NotFound(format!("provider {name}"))),
        }
    }

    /// Deletes a provider; `false` if there was none by that name.
    pub async fn delete_provider(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// Re-seals every provider key under `ring`'s primary key in one write transaction, then
    /// makes `ring` the store's keyring (`None`: the current ring, e.g. after a restart with a
    /// new primary). Fails, changing nothing, if any stored key does not open with `ring`.
    /// Returns how many keys were re-sealed.
    pub async fn rotate_encryption(&self, ring: Option<Keyring>) -> Result<usize, StoreError> {
        let ring = ring.map_or_else(|| self.keys.load_full(), Arc::new);
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("SELECT id, api_key FROM providers WHERE api_key IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
        let mut resealed = 0;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let blob: Vec<u8> = row.try_get("api_key")?;
            if ring.is_current(&blob) {
                continue;
            }
            let aad = key_aad(&id);
            let fresh = ring.seal(ring.open(&blob, &aad)?.expose(), &aad)?;
            sqlx::query("UPDATE providers SET api_key = $2 WHERE id = $1")
                .bind(&id)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            resealed += 1;
        }
        // The billing webhook's signing secret, the same way.
        if let Some(row) = sqlx::query("SELECT secret FROM billing_webhook WHERE id = 'billing'")
            .fetch_optional(&mut *tx)
            .await?
        {
            let blob: Vec<u8> = row.try_get("secret")?;
            if !ring.is_current(&blob) {
                let aad = "webhook:billing";
                let fresh = ring.seal(ring.open(&blob, aad)?.expose(), aad)?;
                sqlx::query("UPDATE billing_webhook SET secret = $1 WHERE id = 'billing'")
                    .bind(fresh)
                    .execute(&mut *tx)
                    .await?;
                resealed += 1;
            }
        }
        resealed += crate::functions::reseal(&mut tx, &ring).await?;
        tx.commit().await?;
        self.keys.store(ring);
        Ok(resealed)
    }

    /// The keys secrets are sealed and opened with.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keys.load_full()
    }
}

fn sealed_key(
    cipher: &Keyring,
    id: &str,
    input: &ProviderInput,
) -> Result<Option<Vec<u8>>, StoreError> {
    input
        .api_key
        .as_ref()
        .map(|key| cipher.seal(key.expose(), &key_aad(id)))
        .transpose()
}

/// Inserts a row; with `skip_existing` a taken name inserts nothing (returns 0) instead of
/// failing with a conflict.
async fn insert<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    cipher: &Keyring,
    id: &str,
    input: &ProviderInput,
    now: i64,
    skip_existing: bool,
) -> Result<u64, StoreError> {
    let sql = if skip_existing {
        "INSERT INTO providers (id, name, kind, base_url, api_key, options, models, priority, \
         enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (name) DO NOTHING"
    } else {
        "INSERT INTO providers (id, name, kind, base_url, api_key, options, models, priority, \
         enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
    };
    let done = sqlx::query(sql)
        .bind(id)
        .bind(&input.name)
        .bind(&input.kind)
        .bind(&input.base_url)
        .bind(sealed_key(cipher, id, input)?)
        .bind(json_text(&input.options)?)
        .bind(json_text(&input.models)?)
        .bind(input.priority)
        .bind(input.enabled)
        .bind(now)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

async fn update<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    cipher: &Keyring,
    id: &str,
    input: &ProviderInput,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE providers SET kind = $2, base_url = $3, api_key = COALESCE($4, api_key), \
         options = $5, models = $6, priority = $7, enabled = $8, updated_at = $9 WHERE id = $1",
    )
    .bind(id)
    .bind(&input.kind)
    .bind(&input.base_url)
    .bind(sealed_key(cipher, id, input)?)
    .bind(json_text(&input.options)?)
    .bind(json_text(&input.models)?)
    .bind(input.priority)
    .bind(input.enabled)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(())
}

fn from_row(row: &AnyRow, cipher: &Keyring) -> Result<ProviderRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let blob: Option<Vec<u8>> = row.try_get("api_key")?;
    let api_key = blob.map(|b| cipher.open(&b, &key_aad(&id))).transpose()?;
    Ok(ProviderRecord {
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        base_url: row.try_get("base_url")?,
        api_key,
        options: json_column(row, "options")?,
        models: json_column(row, "models")?,
        priority: row.try_get("priority")?,
        enabled: bool_column(row, "enabled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}
