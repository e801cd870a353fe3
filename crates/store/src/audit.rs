//! The audit log: an append-only record of admin actions (who, what, on which target, details).

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::columns::{json_column, json_text, new_id, now_ms, require_name, require_object};
use crate::{Store, StoreError};

/// An admin action to record. `detail` is a JSON object and must never carry a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditInput {
    /// Who acted: `admin`, a token label, `config-file`…
    pub actor: String,
    /// What they did: `provider.upsert`, `key.revoke`…
    pub action: String,
    /// What it was done to, if anything (a provider name, a key id…).
    pub target: Option<String>,
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
}

/// The most rows one [`Store::list_audit`] call returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

impl Store {
    pub async fn append_audit(&self, entry: &AuditInput) -> Result<AuditRecord, StoreError> {
        require_name(&entry.actor, "audit actor")?;
        require_name(&entry.action, "audit action")?;
        require_object(&entry.detail, "audit detail")?;
        let record = AuditRecord {
            id: new_id(),
            at: now_ms(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            detail: entry.detail.clone(),
        };
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&record.id)
        .bind(record.at)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.target)
        .bind(json_text(&record.detail)?)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// The newest `limit` entries (at most [`MAX_AUDIT_PAGE`]), newest first. Ids are uuid v7,
    /// so entries within the same millisecond keep their order of appending.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_log \
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit.min(MAX_AUDIT_PAGE)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}

fn from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        detail: json_column(row, "detail")?,
    })
}
