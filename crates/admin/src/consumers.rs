//! Consumers and their gateway keys. A key's raw value appears once, in the answer that created
//! (or rotated) it; the store keeps its SHA-256 digest and a display prefix. Revoking evicts it
//! from this instance's cache at once; other instances drop it on their next poll (≤ 1 s).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{ConsumerInput, ConsumerRecord, KeyInput, KeyView};

use crate::api::{Shared, audit, body};
use crate::error::AdminError;

/// Longest grace a rotated key keeps working.
const MAX_GRACE_SECS: u64 = 30 * 86_400;
const DEFAULT_GRACE_SECS: u64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerDef {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// `active` (default) or `suspended`.
    #[serde(default)]
    pub status: Option<String>,
    /// Requests per minute across all the consumer's keys (and JWTs).
    #[serde(default)]
    pub rpm: Option<i64>,
    /// Tokens per minute across all the consumer's keys (and JWTs).
    #[serde(default)]
    pub tpm: Option<i64>,
}

impl ConsumerDef {
    fn input(self) -> Result<ConsumerInput, AdminError> {
        let status = self.status.unwrap_or_else(|| "active".into());
        if status != "active" && status != "suspended" {
            return Err(AdminError::BadBody(
                "status: must be `active` or `suspended`".into(),
            ));
        }
        Ok(ConsumerInput {
            name: self.name,
            email: self.email,
            external_id: self.external_id,
            metadata: self.metadata.unwrap_or_else(|| json!({})),
            status,
            rpm: self.rpm,
            tpm: self.tpm,
        })
    }
}

/// A consumer by id, or by name (what the CLI passes).
async fn find_consumer(s: &Shared, id_or_name: &str) -> Result<ConsumerRecord, AdminError> {
    if let Some(c) = s.store.get_consumer(id_or_name).await? {
        return Ok(c);
    }
    s.store
        .get_consumer_by_name(id_or_name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("consumer '{id_or_name}'")))
}

pub async fn list_consumers(
    State(s): State<Shared>,
) -> Result<Json<Vec<ConsumerRecord>>, AdminError> {
    Ok(Json(s.store.list_consumers().await?))
}

pub async fn get_consumer(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<ConsumerRecord>, AdminError> {
    Ok(Json(find_consumer(&s, &id).await?))
}

pub async fn create_consumer(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: ConsumerDef = body(&raw)?;
    let rec = s.store.create_consumer(&def.input()?).await?;
    audit(&s, "consumer.create", &rec.id, json!({"name": rec.name})).await;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

pub async fn put_consumer(
    State(s): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<ConsumerRecord>, AdminError> {
    let def: ConsumerDef = body(&raw)?;
    let current = find_consumer(&s, &id).await?;
    let rec = s.store.update_consumer(&current.id, &def.input()?).await?;
    if rec.status != current.status {
        // Other instances see it through their keys' `updated_at` (bumped by the update).
        s.gateway.keys.evict_consumer(&rec.id);
    }
    audit(
        &s,
        "consumer.update",
        &rec.id,
        json!({"name": rec.name, "status": rec.status}),
    )
    .await;
    Ok(Json(rec))
}

pub async fn delete_consumer(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let current = find_consumer(&s, &id).await?;
    if !s.store.delete_consumer(&current.id).await? {
        return Err(AdminError::NotFound(format!("consumer '{id}'")));
    }
    s.gateway.keys.evict_consumer(&current.id);
    audit(
        &s,
        "consumer.delete",
        &current.id,
        json!({"name": current.name}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDef {
    pub label: String,
    /// Consumer id or name.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Gateway APIs (slugs) the key is valid for; empty or absent: all.
    #[serde(default)]
    pub apis: Vec<String>,
    /// Models the key may call; empty or absent: all.
    #[serde(default)]
    pub models: Vec<String>,
    /// RFC 3339 time (`2027-01-01T00:00:00Z`) after which the key stops working.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Requests per minute for this key (overrides the plan's).
    #[serde(default)]
    pub rate_limit: Option<i64>,
}

/// A key as listed, plus the raw key exactly once (creation, rotation).
#[derive(Debug, Serialize)]
pub struct IssuedKey {
    /// Shown once: store it now.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

fn parse_time(field: &str, v: &str) -> Result<i64, AdminError> {
    let ts: jiff::Timestamp = v.parse().map_err(|_| {
        AdminError::BadBody(format!(
            "{field}: expected an RFC 3339 time such as 2027-01-01T00:00:00Z"
        ))
    })?;
    Ok(ts.as_millisecond())
}

pub async fn list_keys(
    State(s): State<Shared>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Vec<KeyView>>, AdminError> {
    let consumer = match q.consumer.as_deref() {
        Some(c) => Some(find_consumer(&s, c).await?.id),
        None => None,
    };
    Ok(Json(s.store.list_keys(consumer.as_deref()).await?))
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    consumer: Option<String>,
}

pub async fn create_key(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: KeyDef = body(&raw)?;
    if def.label.trim().is_empty() {
        return Err(AdminError::BadBody("label: must not be empty".into()));
    }
    if def.rate_limit.is_some_and(|r| r <= 0) {
        return Err(AdminError::BadBody("rate_limit: must be positive".into()));
    }
    let consumer_id = match def.consumer.as_deref() {
        Some(c) => Some(find_consumer(&s, c).await?.id),
        None => None,
    };
    let expires_at = match def.expires_at.as_deref() {
        Some(t) => Some(parse_time("expires_at", t)?),
        None => None,
    };
    let new = access::keys::generate(&s.key_prefix);
    let input = KeyInput {
        consumer_id,
        label: def.label,
        hash: hex::encode(new.hash),
        prefix: new.display.clone(),
        scopes: json!({"apis": def.apis, "models": def.models}),
        expires_at,
        rpm: def.rate_limit,
    };
    let rec = s.store.create_key(&input).await?;
    // A digest remembered as unknown must not outlive the key's creation.
    s.gateway.keys.evict_hex(&rec.hash);
    audit(
        &s,
        "key.create",
        &rec.id,
        json!({"label": rec.label, "prefix": rec.prefix}),
    )
    .await;
    let issued = IssuedKey {
        key: new.raw,
        view: KeyView::from(&rec),
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

pub async fn revoke_key(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, AdminError> {
    let rec = s
        .store
        .revoke_key(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("key '{id}'")))?;
    s.gateway.keys.evict_hex(&rec.hash);
    audit(&s, "key.revoke", &rec.id, json!({"prefix": rec.prefix})).await;
    Ok(Json(KeyView::from(&rec)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateDef {
    /// How long the old key keeps working (default one day, at most 30 days).
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

pub async fn rotate_key(
    State(s): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: RotateDef = if raw.is_empty() {
        RotateDef::default()
    } else {
        body(&raw)?
    };
    let grace = def.grace_secs.unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        return Err(AdminError::BadBody(format!(
            "grace_secs: at most {MAX_GRACE_SECS}"
        )));
    }
    let old = s
        .store
        .get_key(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("key '{id}'")))?;
    let new = access::keys::generate(&s.key_prefix);
    let input = KeyInput::rotated_from(&old, hex::encode(new.hash), new.display.clone());
    let grace_ms = i64::try_from(grace.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (rec, old) = s.store.rotate_key(&id, &input, grace_ms).await?;
    s.gateway.keys.evict_hex(&old.hash);
    s.gateway.keys.evict_hex(&rec.hash);
    audit(
        &s,
        "key.rotate",
        &old.id,
        json!({"new_key": rec.id, "prefix": rec.prefix, "grace_secs": grace}),
    )
    .await;
    let issued = IssuedKey {
        key: new.raw,
        view: KeyView::from(&rec),
    };
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}
