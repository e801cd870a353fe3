//! The admin REST API: providers and models (create, read, update, delete), provider health
//! (live probes and the router's per-target traffic health), router settings, the audit log.
//! Every change is validated, stored, audited, then the data plane reloads.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipeline::Gateway;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{AuditInput, ProviderView, Store};

use crate::catalog::{ModelDef, ProviderDef, RouterSettings, snapshot_from_store};
use crate::error::AdminError;

pub struct AdminState {
    pub store: Store,
    pub gateway: Arc<Gateway>,
    /// The upstream client every provider of every snapshot shares.
    pub http: providers::http::Client,
    pub token_hash: [u8; 32],
    /// The prefix of new gateway keys (`gw_live_` unless configured).
    pub key_prefix: String,
    /// The data directory whose `encryption.key` holds the keys, when they come from there
    /// (not from `GATEWAY_ENCRYPTION_KEY`): key rotation then writes the new key to it.
    pub key_file_dir: Option<std::path::PathBuf>,
    /// Environment-given edge settings, applied to every snapshot.
    pub edge: crate::catalog::EdgeSettings,
}

pub type Shared = Arc<AdminState>;

/// Rebuilds the data-plane snapshot from the store and swaps it in; on failure the old one stays.
pub async fn reload(s: &AdminState) -> Result<(), AdminError> {
    let snap = snapshot_from_store(&s.store, &s.http, &s.edge).await?;
    s.gateway.swap(snap);
    Ok(())
}

pub(crate) async fn audit(s: &AdminState, action: &str, target: &str, detail: Value) {
    let detail = if detail.is_null() { json!({}) } else { detail };
    let entry = AuditInput {
        actor: crate::tokens::actor(),
        action: action.into(),
        target: Some(target.into()),
        detail,
    };
    if let Err(e) = s.store.append_audit(&entry).await {
        tracing::warn!(error = %e, action, "audit write failed");
    }
}

/// Parses a request body; the error names the field (`strategy: unknown variant …`).
pub(crate) fn body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, AdminError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "." | "" => AdminError::BadBody(format!("invalid body: {inner}")),
            _ => AdminError::BadBody(format!("invalid body: {path}: {inner}")),
        }
    })
}

pub async fn list_providers(
    State(s): State<Shared>,
) -> Result<Json<Vec<ProviderView>>, AdminError> {
    let rows = s.store.list_providers().await?;
    Ok(Json(rows.iter().map(ProviderView::from).collect()))
}

pub async fn get_provider(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ProviderView>, AdminError> {
    let r = s
        .store
        .get_provider(&name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("provider '{name}'")))?;
    Ok(Json(ProviderView::from(&r)))
}

pub async fn create_provider(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: ProviderDef = body(&raw)?;
    def.spec("provider")?;
    let rec = s.store.create_provider(&def.to_input()).await?;
    audit(&s, "provider.create", &def.name, json!({"kind": def.kind})).await;
    reload(&s).await?;
    Ok((StatusCode::CREATED, Json(ProviderView::from(&rec))).into_response())
}

pub async fn put_provider(
    State(s): State<Shared>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<ProviderView>, AdminError> {
    let mut v: Value = body(&raw)?;
    if let Some(obj) = v.as_object_mut() {
        match obj.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(AdminError::BadBody(
                    "`name` in the body differs from the path".into(),
                ));
            }
            _ => {
                obj.insert("name".into(), Value::String(name.clone()));
            }
        }
    }
    let def: ProviderDef =
        serde_json::from_value(v).map_err(|e| AdminError::BadBody(format!("invalid body: {e}")))?;
    def.spec("provider")?;
    let rec = s.store.upsert_provider(&def.to_input()).await?;
    audit(
        &s,
        "provider.update",
        &name,
        json!({"kind": def.kind, "key_changed": def.api_key.is_some()}),
    )
    .await;
    reload(&s).await?;
    Ok(Json(ProviderView::from(&rec)))
}

pub async fn delete_provider(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    for m in s.store.list_models().await? {
        let def = ModelDef::from_record(&m)?;
        if def.targets.iter().any(|t| t.provider == name) {
            return Err(AdminError::Conflict(format!(
                "provider '{name}' is a target of model '{}'",
                def.name
            )));
        }
    }
    if !s.store.delete_provider(&name).await? {
        return Err(AdminError::NotFound(format!("provider '{name}'")));
    }
    audit(&s, "provider.delete", &name, Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub provider: String,
    pub ok: bool,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn check(s: &AdminState, name: &str) -> Result<Health, AdminError> {
    let snap = s.gateway.snapshot();
    let p = snap
        .providers
        .get(name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("enabled provider '{name}'")))?;
    let t = Instant::now();
    let r = p.health().await;
    Ok(Health {
        provider: name.to_string(),
        ok: r.is_ok(),
        latency_ms: t.elapsed().as_millis() as u64,
        error: r.err().map(|e| e.message),
    })
}

pub async fn provider_health(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Health>, AdminError> {
    Ok(Json(check(&s, &name).await?))
}

pub async fn all_health(State(s): State<Shared>) -> Result<Json<Vec<Health>>, AdminError> {
    let mut names: Vec<String> = s.gateway.snapshot().providers.keys().cloned().collect();
    names.sort();
    let checks = names.iter().map(|n| check(&s, n));
    let results = futures::future::join_all(checks).await;
    Ok(Json(results.into_iter().collect::<Result<Vec<_>, _>>()?))
}

/// `GET /admin/health/targets`: every target's last minute as the router saw it (requests,
/// errors, throttling, p50/p95 latency, circuit state).
pub async fn target_health(State(s): State<Shared>) -> Json<Vec<router::TargetReport>> {
    Json(s.gateway.health.report(tokio::time::Instant::now()))
}

pub async fn get_router(State(s): State<Shared>) -> Result<Json<RouterSettings>, AdminError> {
    Ok(Json(RouterSettings::load(&s.store).await?))
}

pub async fn put_router(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Json<RouterSettings>, AdminError> {
    let settings: RouterSettings = body(&raw)?;
    settings.check("router")?;
    settings.save(&s.store).await?;
    audit(&s, "router.update", "router", Value::Null).await;
    reload(&s).await?;
    Ok(Json(settings))
}

async fn provider_names(s: &AdminState) -> Result<HashSet<String>, AdminError> {
    Ok(s.store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect())
}

pub async fn list_models(State(s): State<Shared>) -> Result<Json<Vec<ModelDef>>, AdminError> {
    let rows = s.store.list_models().await?;
    Ok(Json(
        rows.iter()
            .map(ModelDef::from_record)
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

pub async fn get_model(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ModelDef>, AdminError> {
    let r = s
        .store
        .get_model(&name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("model '{name}'")))?;
    Ok(Json(ModelDef::from_record(&r)?))
}

pub async fn create_model(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: ModelDef = body(&raw)?;
    def.check("model", &provider_names(&s).await?)?;
    s.store.create_model(&def.to_input()).await?;
    audit(&s, "model.create", &def.name, Value::Null).await;
    reload(&s).await?;
    Ok((StatusCode::CREATED, Json(def)).into_response())
}

pub async fn put_model(
    State(s): State<Shared>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<ModelDef>, AdminError> {
    let mut def: ModelDef = body(&raw)?;
    if def.name != name {
        return Err(AdminError::BadBody(
            "`name` in the body differs from the path".into(),
        ));
    }
    def.check("model", &provider_names(&s).await?)?;
    s.store.upsert_model(&def.to_input()).await?;
    audit(&s, "model.update", &name, Value::Null).await;
    reload(&s).await?;
    def.name = name;
    Ok(Json(def))
}

pub async fn delete_model(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.delete_model(&name).await? {
        return Err(AdminError::NotFound(format!("model '{name}'")));
    }
    audit(&s, "model.delete", &name, Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct Page {
    limit: Option<u32>,
}

pub async fn list_audit(
    State(s): State<Shared>,
    Query(p): Query<Page>,
) -> Result<Json<Vec<store::AuditRecord>>, AdminError> {
    Ok(Json(s.store.list_audit(p.limit.unwrap_or(100)).await?))
}
