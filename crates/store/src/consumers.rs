//! Consumers: who calls the gateway (a team, an app, a person signed in through an identity
//! provider). A consumer owns gateway keys ([`crate::keys`]); its `external_id` ties it to an
//! identity provider's subject, so a JWT caller is found or created on first sight.
//!
//! Deleting a consumer revokes its keys in the same transaction rather than deleting them: the
//! key rows stay as history, still naming the consumer they belonged to, and their `updated_at`
//! moves so every instance's auth cache drops them on its next poll.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::columns::{
    json_column, json_text, new_id, now_ms, require_name, require_object, require_one_of,
};
use crate::{Store, StoreError};

/// The statuses a consumer may have. A suspended consumer's keys stay valid in the store; the
/// caller refuses them.
pub const CONSUMER_STATUSES: &[&str] = &["active", "suspended"];

/// How many derived names [`Store::find_or_create_consumer_by_external_id`] tries when the
/// name hint is taken before giving up with a conflict.
const NAME_ATTEMPTS: usize = 5;

/// What the admin (or the JWT sign-in path) writes for a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInput {
    /// Unique.
    pub name: String,
    pub email: Option<String>,
    /// The identity provider's subject; unique when present.
    pub external_id: Option<String>,
    /// A JSON object the caller owns.
    pub metadata: Value,
    /// One of [`CONSUMER_STATUSES`].
    pub status: String,
    /// Requests per minute across all the consumer's keys and credentials.
    pub rpm: Option<i64>,
    /// Tokens per minute across all the consumer's keys and credentials.
    pub tpm: Option<i64>,
}

impl ConsumerInput {
    /// An active consumer with no email, external id or metadata.
    pub fn new(name: impl Into<String>) -> ConsumerInput {
        ConsumerInput {
            name: name.into(),
            email: None,
            external_id: None,
            metadata: Value::Object(serde_json::Map::new()),
            status: "active".into(),
            rpm: None,
            tpm: None,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        require_name(&self.name, "consumer name")?;
        if let Some(email) = &self.email {
            require_name(email, "consumer email")?;
        }
        if let Some(external_id) = &self.external_id {
            require_name(external_id, "consumer external_id")?;
        }
        require_object(&self.metadata, "consumer metadata")?;
        for (v, field) in [(self.rpm, "consumer rpm"), (self.tpm, "consumer tpm")] {
            if v.is_some_and(|n| !(1..=60_000_000).contains(&n)) {
                return Err(StoreError::Invalid(format!(
                    "{field} must be between 1 and 60000000"
                )));
            }
        }
        require_one_of(&self.status, CONSUMER_STATUSES, "consumer status")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerRecord {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Value,
    pub status: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! consumer_columns {
    () => {
        "id, name, email, external_id, metadata, status, rpm, tpm, created_at, updated_at"
    };
}

macro_rules! select_consumers {
    ($rest:literal) => {
        concat!("SELECT ", consumer_columns!(), " FROM consumers ", $rest)
    };
}

impl Store {
    /// Inserts a new consumer; [`StoreError::Conflict`] if the name or external id is taken.
    pub async fn create_consumer(
        &self,
        input: &ConsumerInput,
    ) -> Result<ConsumerRecord, StoreError> {
        input.validate()?;
        let result = sqlx::query(concat!(
            "INSERT INTO consumers (id, name, email, external_id, metadata, status, created_at, ",
            "updated_at, rpm, tpm) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) RETURNING ",
            consumer_columns!()
        ))
        .bind(new_id())
        .bind(&input.name)
        .bind(&input.email)
        .bind(&input.external_id)
        .bind(json_text(&input.metadata)?)
        .bind(&input.status)
        .bind(now_ms())
        .bind(input.rpm)
        .bind(input.tpm)
        .fetch_one(&self.pool)
        .await;
        match result.map_err(StoreError::from) {
            Ok(row) => from_row(&row),
            Err(StoreError::Conflict(_)) => Err(self.which_conflict(input).await),
            Err(other) => Err(other),
        }
    }

    /// Replaces a consumer's fields; [`StoreError::NotFound`] if there is no such id,
    /// [`StoreError::Conflict`] if the new name or external id belongs to another consumer.
    /// Its live keys' `updated_at` moves in the same transaction, so auth caches holding the
    /// consumer's old status (or name) drop them.
    pub async fn update_consumer(
        &self,
        id: &str,
        input: &ConsumerInput,
    ) -> Result<ConsumerRecord, StoreError> {
        input.validate()?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(concat!(
            "UPDATE consumers SET name = $2, email = $3, external_id = $4, metadata = $5, ",
            "status = $6, updated_at = $7, rpm = $8, tpm = $9 WHERE id = $1 RETURNING ",
            consumer_columns!()
        ))
        .bind(id)
        .bind(&input.name)
        .bind(&input.email)
        .bind(&input.external_id)
        .bind(json_text(&input.metadata)?)
        .bind(&input.status)
        .bind(now)
        .bind(input.rpm)
        .bind(input.tpm)
        .fetch_optional(&mut *tx)
        .await;
        let row = match result.map_err(StoreError::from) {
            Ok(Some(row)) => row,
            Ok(None) => return Err(StoreError::NotFound(format!("consumer {id}"))),
            Err(StoreError::Conflict(_)) => {
                drop(tx);
                return Err(self.which_conflict(input).await);
            }
            Err(other) => return Err(other),
        };
        let record = from_row(&row)?;
        sqlx::query(
            "UPDATE gateway_keys SET updated_at = $2 WHERE consumer_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn get_consumer(&self, id: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        let row = sqlx::query(select_consumers!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn get_consumer_by_name(
        &self,
        name: &str,
    ) -> Result<Option<ConsumerRecord>, StoreError> {
        let row = sqlx::query(select_consumers!("WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every consumer, by name.
    pub async fn list_consumers(&self) -> Result<Vec<ConsumerRecord>, StoreError> {
        let rows = sqlx::query(select_consumers!("ORDER BY name ASC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes a consumer and, in the same transaction, revokes its keys (they stay, as
    /// history); `false` if there was no such id.
    pub async fn delete_consumer(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The delete comes first: on PostgreSQL it takes the row lock that a concurrent key
        // issue waits for (see `keys::lock_consumer`), so the revoke below sees its key.
        let done = sqlx::query("DELETE FROM consumers WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        revoke_consumer_keys(&mut *tx, id, now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The consumer with `external_id`, created (active, named `name_hint`) if there is none.
    ///
    /// Safe under any number of concurrent callers in any number of instances: the insert is
    /// `ON CONFLICT DO NOTHING`, and a caller whose insert did nothing reads the winner's row.
    /// When the insert did nothing because `name_hint` belongs to another consumer, a short
    /// random suffix is appended (`alice-3f9c1a`) and the insert tried again.
    pub async fn find_or_create_consumer_by_external_id(
        &self,
        external_id: &str,
        name_hint: &str,
    ) -> Result<ConsumerRecord, StoreError> {
        require_name(external_id, "consumer external_id")?;
        require_name(name_hint, "consumer name")?;
        for attempt in 0..NAME_ATTEMPTS {
            if let Some(found) = self.consumer_by_external_id(external_id).await? {
                return Ok(found);
            }
            let name = if attempt == 0 {
                name_hint.to_owned()
            } else {
                derived_name(name_hint)
            };
            let now = now_ms();
            let row = sqlx::query(concat!(
                "INSERT INTO consumers (id, name, email, external_id, metadata, status, ",
                "created_at, updated_at) VALUES ($1, $2, NULL, $3, '{}', 'active', $4, $4) ",
                "ON CONFLICT DO NOTHING RETURNING ",
                consumer_columns!()
            ))
            .bind(new_id())
            .bind(&name)
            .bind(external_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return from_row(&row);
            }
        }
        // A last look: another caller may have created it while we were picking names.
        self.consumer_by_external_id(external_id)
            .await?
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "no free consumer name derived from {name_hint} after {NAME_ATTEMPTS} tries"
                ))
            })
    }

    async fn consumer_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<ConsumerRecord>, StoreError> {
        let row = sqlx::query(select_consumers!("WHERE external_id = $1"))
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Which unique column a failed write of `input` collided with, as a conflict to report.
    async fn which_conflict(&self, input: &ConsumerInput) -> StoreError {
        match self.get_consumer_by_name(&input.name).await {
            Ok(Some(_)) => StoreError::Conflict(format!("consumer {} already exists", input.name)),
            Ok(None) => StoreError::Conflict(format!(
                "a consumer with external_id {} already exists",
                input.external_id.as_deref().unwrap_or_default()
            )),
            Err(e) => e,
        }
    }
}

/// Revokes a consumer's live keys (and moves their `updated_at` for the auth caches).
async fn revoke_consumer_keys<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    consumer_id: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE gateway_keys SET revoked_at = $2, updated_at = $2 \
         WHERE consumer_id = $1 AND revoked_at IS NULL",
    )
    .bind(consumer_id)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// `hint` with a random six-hex-digit suffix, shortened so the result stays a valid name.
fn derived_name(hint: &str) -> String {
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(6)
        .collect();
    let room = 200 - suffix.len() - 1;
    let mut base = String::new();
    for c in hint.chars() {
        if base.len() + c.len_utf8() > room {
            break;
        }
        base.push(c);
    }
    format!("{}-{suffix}", base.trim_end())
}

fn from_row(row: &AnyRow) -> Result<ConsumerRecord, StoreError> {
    Ok(ConsumerRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        external_id: row.try_get("external_id")?,
        metadata: json_column(row, "metadata")?,
        status: row.try_get("status")?,
        rpm: row.try_get("rpm")?,
        tpm: row.try_get("tpm")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
