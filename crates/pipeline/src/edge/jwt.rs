//! Bring-your-own JWT on the data plane: the consumer's token verified against the API's JWKS
//! (fetched through the egress-guarded client, cached by `access::jwks`), and the consumer
//! record found or created from the claim that carries its id.
//!
//! Two memos keep a steady client cheap: a verified token (by SHA-256) is trusted until it
//! expires or for a minute, whichever is sooner, so a client reusing its token pays for the
//! signature once; and a subject's consumer record (id and status) is kept for a minute, so the
//! store is asked once per subject, not per request. A suspended consumer is refused once its
//! memo expires (≤ 1 min).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access::api::Api;
use access::jwks::{CacheOptions, Fetch, FetchFuture, JwksCache};
use access::jwt::JwtError;
use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};

use super::key_cache::ConsumerLimits;

/// A JWT subject's consumer: id, active, its own limits.
type SubjectConsumer = (String, bool, ConsumerLimits);
use crate::error::GatewayError;
use crate::state::Gateway;

/// How long a verified token or a subject's consumer is trusted without checking again.
const MEMO_TTL: Duration = Duration::from_secs(60);
/// Entries per memo; past it the memo starts over (a flood of distinct tokens costs signatures,
/// not memory).
const MEMO_MAX: usize = 50_000;

/// Fetches JWKS documents with the gateway's upstream client (egress guard, no redirects).
pub struct HttpFetch {
    http: ArcSwapOption<providers::http::Client>,
    timeout: Duration,
    max_bytes: usize,
}

impl Fetch for HttpFetch {
    fn fetch(&self, url: &str) -> FetchFuture {
        let http = self.http.load_full();
        let url = url.to_string();
        let (timeout, max_bytes) = (self.timeout, self.max_bytes);
        Box::pin(async move {
            let Some(http) = http else {
                return Err("no HTTP client configured".to_string());
            };
            http.get_limited(&url, timeout, max_bytes)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    }
}

/// A verified token's subject and issuer.
type Subject = (String, String);

struct Memo<V> {
    until: Instant,
    value: V,
}

/// What the edge keeps for JWT-authenticated APIs, across configuration swaps.
pub struct JwtEdge {
    fetch: Arc<HttpFetch>,
    pub jwks: JwksCache,
    /// Token digest → (subject, issuer).
    verified: Mutex<HashMap<[u8; 32], Memo<Subject>>>,
    /// Subject → (consumer id, active).
    consumers: Mutex<HashMap<String, Memo<SubjectConsumer>>>,
}

impl Default for JwtEdge {
    fn default() -> JwtEdge {
        JwtEdge::new(CacheOptions::default())
    }
}

impl JwtEdge {
    pub fn new(options: CacheOptions) -> JwtEdge {
        let fetch = Arc::new(HttpFetch {
            http: ArcSwapOption::empty(),
            timeout: options.fetch_timeout,
            max_bytes: options.max_bytes,
        });
        JwtEdge {
            jwks: JwksCache::new(fetch.clone(), options),
            fetch,
            verified: Mutex::default(),
            consumers: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for JwtEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtEdge").finish_non_exhaustive()
    }
}

impl JwtEdge {
    /// The client JWKS are fetched with (the one providers use: same egress guard).
    pub fn set_http(&self, http: providers::http::Client) {
        self.fetch.http.store(Some(Arc::new(http)));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn refusal(e: &JwtError) -> GatewayError {
    match e {
        JwtError::JwksUnavailable => GatewayError::AuthUnavailable,
        other => GatewayError::Unauthorized(format!("Invalid JWT: {}.", other.reason())),
    }
}

/// The consumer id a JWT names, after verifying it.
pub async fn consumer(
    gw: &Gateway,
    api: &Api,
    token: &str,
) -> Result<(String, ConsumerLimits), GatewayError> {
    let Some(cfg) = &api.settings.jwt else {
        return Err(GatewayError::Unauthorized(
            "This gateway API accepts no JWTs.".into(),
        ));
    };
    let edge = &gw.jwt;
    let now = Instant::now();
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Memoised per API's issuer too: the same token presented to another API is checked again.
    let memo_hit = edge.verified.lock().ok().and_then(|m| {
        m.get(&digest)
            .filter(|e| now < e.until && e.value.1 == cfg.issuer)
            .map(|e| e.value.0.clone())
    });
    let subject = match memo_hit {
        Some(s) => s,
        None => {
            let v = edge
                .jwks
                .verify(cfg, token, unix_now())
                .await
                .map_err(|e| refusal(&e))?;
            let ttl = v
                .expires_at
                .map(|exp| Duration::from_secs(u64::try_from(exp - unix_now()).unwrap_or(0)))
                .map_or(MEMO_TTL, |left| left.min(MEMO_TTL));
            if let Ok(mut m) = edge.verified.lock() {
                if m.len() >= MEMO_MAX {
                    m.clear();
                }
                m.insert(
                    digest,
                    Memo {
                        until: now + ttl,
                        value: (v.consumer_id.clone(), v.issuer.clone()),
                    },
                );
            }
            v.consumer_id
        }
    };
    let (id, active, limits) = consumer_record(gw, &subject, now).await?;
    if !active {
        return Err(GatewayError::Forbidden {
            code: "consumer_suspended",
            message: "The consumer this token names is suspended.".into(),
        });
    }
    Ok((id, limits))
}

/// The consumer (id, active) whose external id is `subject`, created on first sight.
async fn consumer_record(
    gw: &Gateway,
    subject: &str,
    now: Instant,
) -> Result<SubjectConsumer, GatewayError> {
    let edge = &gw.jwt;
    if let Some(hit) = edge.consumers.lock().ok().and_then(|m| {
        m.get(subject)
            .filter(|e| now < e.until)
            .map(|e| e.value.clone())
    }) {
        return Ok(hit);
    }
    let Some(store) = &gw.store else {
        return Err(GatewayError::AuthUnavailable);
    };
    let rec = store
        .find_or_create_consumer_by_external_id(subject, &format!("jwt-{subject}"))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "consumer lookup for a JWT failed");
            GatewayError::AuthUnavailable
        })?;
    let limits = ConsumerLimits::of(&rec);
    let value = (rec.id, rec.status == "active", limits);
    if let Ok(mut m) = edge.consumers.lock() {
        if m.len() >= MEMO_MAX {
            m.clear();
        }
        m.insert(
            subject.to_string(),
            Memo {
                until: now + MEMO_TTL,
                value: value.clone(),
            },
        );
    }
    Ok(value)
}
