//! The data plane.
//!
//! A request runs these stages, in this order (stages of later issues are named where they will
//! stand; each reads the request, writes the response or the context, and fails as noted):
//!
//! 1. **Edge** ([`edge`]): a request id on every response; the gateway API from the path
//!    (`/v1/…` is `default`, `/{api}/v1/…` a named one: unknown → 404); the client address
//!    (socket peer, or `X-Forwarded-For` past trusted proxies) against the API's IP rules (403);
//!    the consumer's gateway key or JWT as the API's auth mode asks (401 missing/invalid/
//!    revoked/expired, 403 out of scope or suspended) — all before the body is read. Then the
//!    global body-size limit (413 before any parsing). Plan checks join here.
//! 2. **Admission** ([`admission`]): the body is parsed once into the canonical request;
//!    malformed JSON, wrong types, empty messages and upstream-choosing fields (`api_base`, …)
//!    are refused with a 400 naming the field.
//!    Then the stages around the model ([`stages`]): the PII guard ([`pii`]) redacts the prompt,
//!    input moderation ([`moderation`]) blocks (400) or flags it, the pre-hook ([`functions`])
//!    may rewrite or reject it.
//! 3. **LLM** ([`llm`]), or the API's function ([`backend`]) in a function-backed API: the
//!    router resolves the model (alias, `provider/model`, default patterns, provider lists) and walks fallback chains per error class; the provider adapter
//!    translates and calls. Upstream failures map to one status each ([`error`]).
//! 4. **Egress** ([`egress`]): non-streaming bodies are forwarded (OpenAI-shaped upstreams) or
//!    rendered; streams are re-encoded chunk by chunk, and a broken stream ends in an error event.
//!    Output moderation checks the answer (streams in windows, [`moderation::watch_stream`]);
//!    the post-hook is spawned once the response is ready and never delays it.
//! 5. **Settle** ([`settle`]): usage from the provider, reported after the response.
//! 6. **Log** ([`log`]): every `/v1/…` request leaves one request-log row, finished when its
//!    response (or stream) ends, written by a batched writer that never blocks a request;
//!    [`metrics`] counts the same rows for `/metrics`.
//!
//! [`state`] holds the configuration snapshot that every request reads once.

pub mod account;
pub mod admission;
pub mod backend;
mod batch;
pub mod edge;
pub mod egress;
pub mod embeddings;
pub mod error;
pub mod events;
pub mod functions;
pub mod handlers;
pub mod llm;
pub mod log;
pub mod metrics;
pub mod moderation;
pub mod pii;
pub mod rag;
pub mod settle;
pub mod stages;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::GatewayError;
pub use state::{Gateway, Limits, Snapshot};

/// The data-plane application.
pub fn app(gw: Arc<Gateway>) -> Router {
    use handlers::*;
    // Each route also under `/{api}/`: the handler reads the API from the path (edge::auth).
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/{api}/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/{api}/v1/messages", post(messages))
        .route("/v1/embeddings", post(create_embeddings))
        .route("/{api}/v1/embeddings", post(create_embeddings))
        .route("/v1/moderations", post(moderations))
        .route("/{api}/v1/moderations", post(moderations))
        .route("/v1/models", get(list_models))
        .route("/{api}/v1/models", get(list_models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(gw.clone(), log::layer))
        .with_state(gw)
        .layer(axum::middleware::from_fn(edge::request_id))
}
