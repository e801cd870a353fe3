//! The billing webhook and its outbox. An event row is written in the transaction that settles
//! the usage it reports ([`crate::billing`]), so a settled charge is never without its event;
//! deliverers claim due events with a lease (a conditional update), so several instances do
//! not send one event at the same moment, and a crashed deliverer's lease simply runs out.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use wire::secret::Secret;

use crate::columns::{json_column, json_text, new_id, now_ms};
use crate::{Store, StoreError};

const AAD: &str = "webhook:billing";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub id: String,
    pub kind: String,
    pub payload: Value,
    pub created_at: i64,
    pub attempts: i64,
    pub next_at: i64,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

fn event_row(r: &AnyRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        payload: json_column(r, "payload")?,
        created_at: r.try_get("created_at")?,
        attempts: r.try_get("attempts")?,
        next_at: r.try_get("next_at")?,
        delivered_at: r.try_get("delivered_at")?,
        failed_at: r.try_get("failed_at")?,
        last_error: r.try_get("last_error")?,
    })
}

macro_rules! event_columns {
    () => {
        "id, kind, payload, created_at, attempts, next_at, delivered_at, failed_at, last_error"
    };
}

/// Writes an event inside another transaction (the usage record's).
pub(crate) async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: &str,
    payload: &Value,
) -> Result<String, StoreError> {
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO billing_events (id, kind, payload, created_at, attempts, next_at) \
         VALUES ($1, $2, $3, $4, 0, $4)",
    )
    .bind(&id)
    .bind(kind)
    .bind(json_text(payload)?)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Writes many events of one kind inside another transaction, in multi-row inserts.
pub(crate) async fn enqueue_many(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: crate::Backend,
    kind: &str,
    payloads: &[Value],
) -> Result<(), StoreError> {
    let now = now_ms();
    for chunk in crate::batch::chunks(payloads) {
        let sql = format!(
            "INSERT INTO billing_events (id, kind, payload, created_at, attempts, next_at) VALUES {}",
            crate::batch::placeholders(backend, chunk.len(), 6)
        );
        // Only placeholders are interpolated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(new_id())
                .bind(kind.to_string())
                .bind(json_text(p)?)
                .bind(now)
                .bind(0_i64)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Sets the operator's billing webhook; the secret is sealed bound to its row.
    pub async fn set_billing_webhook(&self, url: &str, secret: &Secret) -> Result<(), StoreError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
            return Err(StoreError::Invalid(
                "url: an http(s) URL of at most 2000 characters".into(),
            ));
        }
        if secret.expose().len() < 16 {
            return Err(StoreError::Invalid("secret: at least 16 characters".into()));
        }
        let sealed = self.keyring().seal(secret.expose(), AAD)?;
        sqlx::query(
            "INSERT INTO billing_webhook (id, url, secret, updated_at) VALUES ('billing', $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, \
             updated_at = excluded.updated_at",
        )
        .bind(url)
        .bind(sealed)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The webhook's URL and (opened) secret.
    pub async fn billing_webhook(&self) -> Result<Option<(String, Secret)>, StoreError> {
        let row = sqlx::query("SELECT url, secret FROM billing_webhook WHERE id = 'billing'")
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let blob: Vec<u8> = r.try_get("secret")?;
        Ok(Some((r.try_get("url")?, self.keyring().open(&blob, AAD)?)))
    }

    pub async fn delete_billing_webhook(&self) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM billing_webhook WHERE id = 'billing'")
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Events due for delivery, each claimed for `lease_ms` (another deliverer skips it until
    /// the lease runs out).
    pub async fn claim_events(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let now = now_ms();
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM billing_events WHERE delivered_at IS NULL AND failed_at IS NULL \
             AND next_at <= $1 ORDER BY next_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let e = event_row(r)?;
            let won = sqlx::query(
                "UPDATE billing_events SET next_at = $3 WHERE id = $1 AND next_at = $2 \
                 AND delivered_at IS NULL",
            )
            .bind(&e.id)
            .bind(e.next_at)
            .bind(now + lease_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if won > 0 {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub async fn event_delivered(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE billing_events SET delivered_at = $2, attempts = attempts + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or given up (`None`).
    pub async fn event_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE billing_events SET attempts = attempts + 1, last_error = $2, \
             next_at = COALESCE($3, next_at), failed_at = CASE WHEN $4 THEN $5 ELSE NULL END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(error.chars().take(500).collect::<String>())
        .bind(retry_at)
        .bind(retry_at.is_none())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_events(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM billing_events ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }
}
