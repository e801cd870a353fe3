//! The admin plane, served on its own listener.
//!
//! - [`catalog`]: provider and model definitions (shared by the YAML file, this API and the CLI),
//!   their validation, and the data-plane snapshot built from the store.
//! - [`api`]: the REST handlers; every change is validated, stored, audited, then reloaded.
//! - [`auth`]: the bootstrap admin token (hashed at rest, compared in constant time);
//!   [`tokens`]: issued admin tokens with roles (`admin`, `viewer`) and the middleware that
//!   authenticates every request and names its actor for the audit log.
//! - [`gateway_apis`]: gateway APIs (slug, auth mode, IP rules, JWT settings).
//! - [`consumers`]: consumers and their gateway keys (shown once, revoked, rotated).
//! - [`billing`]: plans, subscriptions, wallets (idempotent credits), price overrides, usage
//!   records and invoices (JSON and CSV).
//! - [`logs`]: the request log (filters, stats, live tail), analytics from the hourly
//!   rollups (JSON and CSV) and Prometheus `/metrics` (unauthenticated, no consumer labels).
//! - [`error`]: admin errors in the OpenAI error shape.
//! - `openapi.json`: the API's OpenAPI 3.1 document, served at `/admin/openapi.json`.

pub mod api;
pub mod auth;
pub mod billing;
pub mod catalog;
pub mod consumers;
pub mod error;
pub mod functions;
pub mod gateway_apis;
pub mod knowledge;
pub mod logs;
pub mod secrets;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

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
        .route(
            "/admin/apis",
            get(gateway_apis::list_apis).post(gateway_apis::create_api),
        )
        .route(
            "/admin/apis/{slug}",
            get(gateway_apis::get_api)
                .put(gateway_apis::put_api)
                .delete(gateway_apis::delete_api),
        )
        .route(
            "/admin/consumers",
            get(consumers::list_consumers).post(consumers::create_consumer),
        )
        .route(
            "/admin/consumers/{id}",
            get(consumers::get_consumer)
                .put(consumers::put_consumer)
                .delete(consumers::delete_consumer),
        )
        .route(
            "/admin/keys",
            get(consumers::list_keys).post(consumers::create_key),
        )
        .route("/admin/keys/{id}/revoke", post(consumers::revoke_key))
        .route("/admin/keys/{id}/rotate", post(consumers::rotate_key))
        .route(
            "/admin/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/admin/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/admin/secrets/rotate-key", post(secrets::rotate_key))
        .route("/admin/audit", get(list_audit))
        .route(
            "/admin/plans",
            get(billing::list_plans).post(billing::create_plan),
        )
        .route(
            "/admin/plans/{id}",
            get(billing::get_plan)
                .put(billing::put_plan)
                .delete(billing::delete_plan),
        )
        .route(
            "/admin/consumers/{id}/subscriptions",
            get(billing::list_subscriptions).post(billing::subscribe),
        )
        .route(
            "/admin/subscriptions/{id}",
            axum::routing::delete(billing::cancel_subscription),
        )
        .route("/admin/consumers/{id}/wallet", get(billing::get_wallet))
        .route("/admin/consumers/{id}/wallet/top-up", post(billing::top_up))
        .route("/admin/consumers/{id}/wallet/refund", post(billing::refund))
        .route("/admin/consumers/{id}/ledger", get(billing::ledger))
        .route("/admin/consumers/{id}/invoice", get(billing::invoice))
        .route("/admin/prices", get(billing::list_prices))
        .route(
            "/admin/prices/{*model}",
            axum::routing::put(billing::put_price).delete(billing::delete_price),
        )
        .route("/admin/usage", get(billing::list_usage))
        .route(
            "/admin/billing/webhook",
            get(billing::get_webhook)
                .put(billing::put_webhook)
                .delete(billing::delete_webhook),
        )
        .route("/admin/billing/events", get(billing::list_events))
        .route("/admin/logs", get(logs::list_logs))
        .route("/admin/logs/stats", get(logs::log_stats))
        .route("/admin/logs/tail", get(logs::tail))
        .route("/admin/logs/{id}", get(logs::get_log))
        .route("/admin/analytics/usage", get(logs::usage))
        .route(
            "/admin/knowledge-bases",
            get(knowledge::list_kbs).post(knowledge::create_kb),
        )
        .route(
            "/admin/knowledge-bases/{kb}",
            get(knowledge::get_kb)
                .patch(knowledge::patch_kb)
                .delete(knowledge::delete_kb),
        )
        .route(
            "/admin/knowledge-bases/{kb}/documents",
            get(knowledge::list_documents),
        )
        .route(
            "/admin/knowledge-bases/{kb}/documents/{doc}",
            get(knowledge::get_document)
                .put(knowledge::put_document)
                .delete(knowledge::delete_document)
                // Uploads are bounded by the knowledge base's own limit (checked in the handler).
                .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024)),
        )
        .route(
            "/admin/knowledge-bases/{kb}/query",
            post(knowledge::query_kb),
        )
        .route("/admin/apis/{slug}/rag/query", post(knowledge::query_api))
        .route("/admin/functions", get(functions::list_functions))
        .route(
            "/admin/functions/{name}",
            get(functions::get_function)
                .put(functions::put_function)
                .delete(functions::delete_function),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tokens::require_token,
        ));
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route("/metrics", get(logs::metrics))
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

#[cfg(test)]
mod tests;
