//! The JWKS cache in front of [`crate::jwt::verify`]: one entry per JWKS URL.
//!
//! - First use of a URL fetches its set (a token that cannot be valid anyway — bad shape,
//!   forbidden header, disallowed `alg` — is refused before any fetch).
//! - A token naming an unknown `kid` triggers a refresh (the issuer may have rotated), then
//!   one more verification. Refreshes of a URL are single-flight (concurrent callers wait on
//!   the one fetch) and happen at most once per [`CacheOptions::min_refresh`], so a stream of
//!   tokens with made-up `kid`s cannot turn the gateway into a load generator.
//! - A set older than [`CacheOptions::ttl`] is still used, and refetched in the background.
//! - A failed fetch (error, timeout, oversize body, not a set, no usable key) keeps the last
//!   good set; [`JwtError::JwksUnavailable`] only when there has never been one.
//!
//! The HTTP fetch itself is behind [`Fetch`], wired by the data plane. No std lock is held
//! across an await: the std locks guard plain data, the per-URL `tokio::sync::Mutex` is the
//! single-flight gate.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::jwt::{self, Jwks, JwtConfig, JwtError, Verified};

/// What [`Fetch::fetch`] returns: the body of the JWKS document, or why it could not be had.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'static>>;

/// Fetches a JWKS document. Implementations should cap the body themselves too (the cache
/// refuses bodies over [`CacheOptions::max_bytes`] but only sees them whole).
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self, url: &str) -> FetchFuture;
}

/// Cache tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Fewest time between two fetch attempts for one URL (default 30 s).
    pub min_refresh: Duration,
    /// Age after which a set is refetched in the background (default 10 min); it stays in use
    /// until a fetch succeeds.
    pub ttl: Duration,
    /// Longest a fetch may take (default 5 s).
    pub fetch_timeout: Duration,
    /// Largest accepted document (default 256 KiB).
    pub max_bytes: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            min_refresh: Duration::from_secs(30),
            ttl: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
        }
    }
}

#[derive(Default)]
struct State {
    /// The last good set.
    set: Option<Arc<Jwks>>,
    fetched_at: Option<Instant>,
    /// Completed fetch attempts, good or bad: a waiter that sees this move knows someone else
    /// just tried and does not fetch again.
    attempts: u64,
    /// When the last completed attempt started.
    last_attempt: Option<Instant>,
    /// A background (TTL) refresh is spawned and not finished.
    background: bool,
}

struct Entry {
    url: String,
    state: RwLock<State>,
    /// Single-flight gate: held for the duration of one fetch.
    gate: tokio::sync::Mutex<()>,
}

struct Snapshot {
    set: Option<Arc<Jwks>>,
    attempts: u64,
}

impl Entry {
    fn snapshot(&self) -> Snapshot {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Snapshot {
            set: st.set.clone(),
            attempts: st.attempts,
        }
    }

    fn rate_limited(st: &State, now: Instant, opts: &CacheOptions) -> bool {
        st.last_attempt
            .is_some_and(|last| now.saturating_duration_since(last) < opts.min_refresh)
    }
}

/// Fetches `entry.url` unless someone else completed an attempt since the caller looked
/// (`seen_attempts`) or the last attempt is more recent than `min_refresh`. Cancel-safe: a
/// dropped caller leaves no trace, and the next waiter fetches instead.
async fn refresh(entry: &Entry, fetcher: &dyn Fetch, opts: &CacheOptions, seen_attempts: u64) {
    let _gate = entry.gate.lock().await;
    let started = Instant::now();
    {
        let st = entry.state.read().unwrap_or_else(PoisonError::into_inner);
        if st.attempts != seen_attempts || Entry::rate_limited(&st, started, opts) {
            return;
        }
    }
    let outcome = match tokio::time::timeout(opts.fetch_timeout, fetcher.fetch(&entry.url)).await {
        Err(_) => Err("timed out".to_string()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(body)) if body.len() > opts.max_bytes => {
            Err(format!("document over {} bytes", opts.max_bytes))
        }
        Ok(Ok(body)) => match Jwks::parse(&body) {
            Ok(set) if set.is_empty() => Err("no usable signing key".to_string()),
            Ok(set) => Ok(set),
            Err(_) => Err("not a JWK set".to_string()),
        },
    };
    let mut st = entry.state.write().unwrap_or_else(PoisonError::into_inner);
    st.attempts = st.attempts.wrapping_add(1);
    st.last_attempt = Some(started);
    match outcome {
        Ok(set) => {
            tracing::debug!(url = %entry.url, keys = set.len(), "JWKS fetched");
            st.set = Some(Arc::new(set));
            st.fetched_at = Some(Instant::now());
        }
        Err(error) => {
            tracing::warn!(
                url = %entry.url,
                %error,
                have_previous = st.set.is_some(),
                "JWKS fetch failed; keeping the last good set"
            );
        }
    }
}

/// JWK sets by URL, with verification on top. Share one per process (`Arc`).
pub struct JwksCache {
    fetcher: Arc<dyn Fetch>,
    opts: CacheOptions,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("JwksCache")
            .field("opts", &self.opts)
            .field("urls", &urls)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(fetcher: Arc<dyn Fetch>, opts: CacheOptions) -> Self {
        JwksCache {
            fetcher,
            opts,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, url: &str) -> Arc<Entry> {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    url: url.to_string(),
                    state: RwLock::new(State::default()),
                    gate: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The last good set for `url`, if any (no fetch).
    pub fn cached(&self, url: &str) -> Option<Arc<Jwks>> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(url).and_then(|e| e.snapshot().set)
    }

    /// Starts a background refresh when the set is older than the TTL, none is running and the
    /// rate limit allows one. Needs a Tokio runtime; without one, nothing happens.
    fn maybe_refresh_in_background(&self, entry: &Arc<Entry>) {
        let now = Instant::now();
        let seen = {
            let mut st = entry.state.write().unwrap_or_else(PoisonError::into_inner);
            let stale = st
                .fetched_at
                .is_some_and(|at| now.saturating_duration_since(at) >= self.opts.ttl);
            if !stale || st.background || Entry::rate_limited(&st, now, &self.opts) {
                return;
            }
            st.background = true;
            st.attempts
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            entry
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .background = false;
            return;
        };
        let entry = Arc::clone(entry);
        let fetcher = Arc::clone(&self.fetcher);
        let opts = self.opts;
        rt.spawn(async move {
            // Clears the flag however the task ends (even if cancelled at shutdown).
            struct Done(Arc<Entry>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0
                        .state
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .background = false;
                }
            }
            let done = Done(entry);
            refresh(&done.0, &*fetcher, &opts, seen).await;
        });
    }

    /// Verifies `token` against the set at `cfg.jwks_url`, fetching it on first use and
    /// refreshing it (rate-limited, single-flight) when the token names an unknown `kid`.
    pub async fn verify(
        &self,
        cfg: &JwtConfig,
        token: &str,
        now_unix: i64,
    ) -> Result<Verified, JwtError> {
        let entry = self.entry(&cfg.jwks_url);
        let snap = entry.snapshot();
        match &snap.set {
            Some(set) => {
                self.maybe_refresh_in_background(&entry);
                match jwt::verify(token, cfg, set, now_unix) {
                    Err(JwtError::UnknownKid) => {}
                    done => return done,
                }
            }
            None => {
                // Only a token that could verify with some key is worth a fetch.
                match jwt::verify(token, cfg, &Jwks::default(), now_unix) {
                    Err(JwtError::UnknownKid | JwtError::NoKey) => {}
                    done => return done,
                }
            }
        }
        refresh(&entry, &*self.fetcher, &self.opts, snap.attempts).await;
        match entry.snapshot().set {
            Some(set) => jwt::verify(token, cfg, &set, now_unix),
            None => Err(JwtError::JwksUnavailable),
        }
    }
}

#[cfg(test)]
mod tests;
