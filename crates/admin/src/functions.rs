//! Functions as operators write them (YAML `functions:`, `/admin/functions`, `gateway function
//! …`): an HTTP endpoint with a signing secret, a deadline and a failure mode. The secret is
//! write-only: listings say `has_secret`, never the value.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{FunctionInput, FunctionView};
use wire::secret::Secret;

use crate::api::{Shared, audit, body, reload};
use crate::error::AdminError;

/// A function definition. `secret` is required when the function is new.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    /// `/admin/functions/{name}`; named by APIs' `pre_hook`, `post_hook`, `function`.
    pub name: String,
    /// Where the gateway POSTs (through the egress guard; redirects are never followed).
    pub url: String,
    /// The HMAC-SHA256 signing secret (at least 16 characters). Omit on an update to keep it.
    #[serde(default, skip_serializing)]
    pub secret: Option<Secret>,
    /// Milliseconds the whole call may take (default 2000, at most 30000).
    #[serde(default = "two_seconds")]
    pub deadline_ms: i64,
    /// `fail_open` (default) or `fail_closed`.
    #[serde(default = "fail_open")]
    pub failure_mode: String,
}

fn two_seconds() -> i64 {
    2000
}

fn fail_open() -> String {
    "fail_open".into()
}

impl FunctionDef {
    pub fn to_input(&self) -> FunctionInput {
        FunctionInput {
            name: self.name.clone(),
            url: self.url.clone(),
            secret: self.secret.clone(),
            deadline_ms: self.deadline_ms,
            failure_mode: self.failure_mode.clone(),
        }
    }
}

pub async fn list_functions(
    State(s): State<Shared>,
) -> Result<Json<Vec<FunctionView>>, AdminError> {
    let rows = s.store.list_functions().await?;
    Ok(Json(rows.iter().map(FunctionView::from).collect()))
}

pub async fn get_function(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, AdminError> {
    let r = s
        .store
        .get_function(&name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("function '{name}'")))?;
    Ok(Json(FunctionView::from(&r)))
}

pub async fn put_function(
    State(s): State<Shared>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut v: serde_json::Value = body(&raw)?;
    if let Some(obj) = v.as_object_mut() {
        match obj.get("name").and_then(serde_json::Value::as_str) {
            Some(x) if x != name => {
                return Err(AdminError::BadBody(
                    "`name` in the body differs from the path".into(),
                ));
            }
            _ => {
                obj.insert("name".into(), serde_json::Value::String(name.clone()));
            }
        }
    }
    let def: FunctionDef = serde_path_to_error::deserialize(v)
        .map_err(|e| AdminError::BadBody(format!("invalid body: {}: {}", e.path(), e.inner())))?;
    let created = s.store.put_function(&def.to_input()).await?;
    audit(
        &s,
        if created {
            "function.create"
        } else {
            "function.update"
        },
        &name,
        json!({"url": def.url, "deadline_ms": def.deadline_ms, "failure_mode": def.failure_mode,
               "secret_changed": def.secret.is_some()}),
    )
    .await;
    reload(&s).await?;
    let view = s
        .store
        .get_function(&name)
        .await?
        .map(|r| FunctionView::from(&r))
        .ok_or_else(|| AdminError::NotFound(format!("function '{name}'")))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

pub async fn delete_function(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    for r in s.store.list_apis().await? {
        let def = crate::gateway_apis::ApiDef::from_record(&r)?;
        if let Some((field, _)) = def.api().settings.functions().find(|(_, n)| *n == name) {
            return Err(AdminError::Conflict(format!(
                "function '{name}' is the {field} of API '{}'",
                def.slug
            )));
        }
    }
    if !s.store.delete_function(&name).await? {
        return Err(AdminError::NotFound(format!("function '{name}'")));
    }
    audit(&s, "function.delete", &name, serde_json::Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses an API naming a function that does not exist.
pub async fn check_references(
    s: &Shared,
    def: &crate::gateway_apis::ApiDef,
) -> Result<(), AdminError> {
    for (field, name) in def.api().settings.functions() {
        if s.store.get_function(name).await?.is_none() {
            return Err(AdminError::BadBody(format!(
                "apis.{}.{field}: no function named '{name}'",
                def.slug
            )));
        }
    }
    Ok(())
}
