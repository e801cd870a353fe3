//! The admin plane, served on its own listener.
//!
//! - [`catalog`]: provider and model definitions (shared by the YAML file, this API and the CLI),
//!   their validation, and the data-plane snapshot built from the store.
//! - [`api`]: the REST handlers; every change is validated, stored, audited, then reloaded.
//! - [`auth`]: the admin token (hashed at rest, compared in constant time).
//! - [`error`]: admin errors in the OpenAI error shape.
//! - `openapi.json`: the API's OpenAPI 3.1 document, served at `/admin/openapi.json`.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod error;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use api::{AdminState, reload};

pub const OPENAPI: &str = include_str!("openapi.json");

/// The admin application.
pub fn app(state: Arc<AdminState>) -> Router {
    use api::*;
    let protected = Router::new()
        .route(
            "/admin/providers",
            get(list_providers).post(create_provider),
        )
        .route(
            "/admin/providers/{name}",
            get(get_provider).put(put_provider).delete(delete_provider),
        )
        .route("/admin/providers/{name}/health", get(provider_health))
        .route("/admin/health/providers", get(all_health))
        .route("/admin/health/targets", get(target_health))
        .route("/admin/router", get(get_router).put(put_router))
        .route("/admin/models", get(list_models).post(create_model))
        .route(
            "/admin/models/{name}",
            get(get_model).put(put_model).delete(delete_model),
        )
        .route("/admin/audit", get(list_audit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(protected)
        .fallback(|| async { error::AdminError::NotFound("route".into()) })
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn require_token(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if auth::matches(t.trim(), &s.token_hash) => next.run(req).await,
        _ => error::AdminError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests;
