//! Edge layers: cheap, body-free work that every request gets: a request id, then [`auth`]
//! (gateway API from the path, IP rules, the consumer's key or JWT through [`key_cache`] and
//! [`jwt`]).

pub mod auth;
pub mod jwt;
pub mod key_cache;

pub use auth::{Caller, admit};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderValue;
use axum::response::Response;

/// A fresh request id: a random per-process prefix and a counter, so ids are unique across
/// instances without a random-number syscall per request.
pub fn next_request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let u = uuid::Uuid::new_v4();
        u.simple().to_string()[..16].to_string()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{prefix}{n:012x}")
}

/// The request's id, minted at the edge (a caller cannot choose it) and read by the stages
/// that record it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every request an id, in its extensions for the stages and as `x-request-id` on its
/// response.
pub async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = next_request_id();
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(req).await;
    if let Some(v) = header {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The id [`request_id`] gave this request (a fresh one if the layer is missing).
pub fn request_id_of(parts: &axum::http::request::Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map_or_else(next_request_id, |r| r.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_header_safe() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && HeaderValue::from_str(i).is_ok())
        );
    }
}
