//! Admin tokens with roles. The bootstrap token (`GATEWAY_ADMIN_TOKEN`, or the one printed at
//! first start) is an `admin`; more tokens are issued here, each `admin` or `viewer` (read
//! only), stored as SHA-256 digests, revocable. Every request runs with its actor known, so the
//! audit log says who changed what.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{AdminTokenInput, AdminTokenRecord};

use crate::api::{Shared, audit, body};
use crate::auth;
use crate::error::AdminError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

tokio::task_local! {
    /// Who the current admin request comes from (`admin` for the bootstrap token,
    /// `token:<name>` for an issued one).
    pub static ACTOR: String;
}

/// The actor of the request being served, for the audit log.
pub fn actor() -> String {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "system".into())
}

/// Authenticates an admin request and enforces its role: viewers may only read.
pub async fn require_token(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented.filter(|t| !t.is_empty() && t.len() <= 1024) else {
        return AdminError::Unauthorized.into_response();
    };
    let (actor, role) = if auth::matches(presented, &s.token_hash) {
        ("admin".to_string(), Role::Admin)
    } else {
        match s
            .store
            .find_admin_token_by_hash(&hex::encode(auth::hash(presented)))
            .await
        {
            Ok(Some(t)) if t.revoked_at.is_none() => {
                let role = if t.role == "admin" {
                    Role::Admin
                } else {
                    Role::Viewer
                };
                let _ = s.store.touch_admin_token(&t.id, now_ms()).await;
                (format!("token:{}", t.name), role)
            }
            Ok(_) => return AdminError::Unauthorized.into_response(),
            Err(e) => return AdminError::from(e).into_response(),
        }
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if role == Role::Viewer && !reads {
        return AdminError::Forbidden("viewer tokens may only read".into()).into_response();
    }
    ACTOR.scope(actor, next.run(req)).await
}

fn now_ms() -> i64 {
    pipeline::edge::key_cache::now_ms()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDef {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize)]
pub struct IssuedToken {
    /// Shown once: store it now.
    pub token: String,
    #[serde(flatten)]
    pub record: AdminTokenRecord,
}

pub async fn list_tokens(
    State(s): State<Shared>,
) -> Result<Json<Vec<AdminTokenRecord>>, AdminError> {
    Ok(Json(s.store.list_admin_tokens().await?))
}

pub async fn create_token(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: TokenDef = body(&raw)?;
    if def.name.trim().is_empty() {
        return Err(AdminError::BadBody("name: must not be empty".into()));
    }
    let token = auth::random_token();
    let input = AdminTokenInput {
        name: def.name,
        role: def.role.as_str().into(),
        hash: hex::encode(auth::hash(&token)),
        prefix: token.chars().take(10).collect(),
    };
    let record = s.store.create_admin_token(&input).await?;
    audit(
        &s,
        "admin_token.create",
        &record.id,
        json!({"name": record.name, "role": record.role}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(IssuedToken { token, record })).into_response())
}

pub async fn revoke_token(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.revoke_admin_token(&id).await? {
        return Err(AdminError::NotFound(format!("admin token '{id}'")));
    }
    audit(&s, "admin_token.revoke", &id, serde_json::Value::Null).await;
    Ok(StatusCode::NO_CONTENT)
}
