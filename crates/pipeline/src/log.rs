//! The request log: one row per data-plane request, from the edge to the end of its stream.
//!
//! A [`Trace`] is made by [`layer`] for every `/v1/…` request and put in its extensions; the
//! stages fill it in (consumer and key at the edge, the model at admission, provider, tokens
//! and cost at settlement, time to first token when a stream opens). The row is finished when
//! the last holder lets go of the trace — for a stream that is when the stream ends or the
//! consumer leaves — and handed to [`RequestLog`], which never blocks a request:
//!
//! - the row joins the in-memory tail (the last [`TAIL`] rows) and is broadcast to live-tail
//!   subscribers;
//! - it is queued for the writer (bounded; when the queue is full the row is dropped and
//!   counted, so a store outage costs memory up to the bound, never a request);
//! - the writer inserts batches in one transaction each ([`store::Store::insert_logs`]), keeps
//!   a failing batch and retries it with backoff (the queue fills meanwhile), and is flushed on
//!   shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use store::{LogRow, Store};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::edge::RequestId;
use crate::state::Gateway;

/// Rows kept in memory for the live tail.
pub const TAIL: usize = 200;
/// Rows per write transaction.
pub const BATCH: usize = 1000;
/// How long the writer waits for a batch to fill; rows reach the store at most this late.
const LINGER: Duration = Duration::from_millis(100);

/// The error code a response carried, for the log (set by [`crate::GatewayError`]).
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

enum Job {
    Row(Arc<LogRow>),
    Flush(oneshot::Sender<()>),
}

/// Counters of the log writer (for `/metrics`).
#[derive(Debug, Default)]
pub struct LogCounters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    pub queued: AtomicU64,
}

type Observer = Box<dyn Fn(&LogRow) + Send + Sync>;

/// The log's queue, tail and writer.
pub struct RequestLog {
    store: Option<Store>,
    capacity: usize,
    writer: OnceLock<mpsc::Sender<Job>>,
    tail: Mutex<VecDeque<Arc<LogRow>>>,
    live: broadcast::Sender<Arc<LogRow>>,
    /// This instance's rows only: what the tail fan-in publishes to the other instances.
    local: broadcast::Sender<Arc<LogRow>>,
    pub counters: Arc<LogCounters>,
    /// Called with every finished row (metrics).
    observer: OnceLock<Observer>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RequestLog {
    /// A log writing to `store` (tail only without one), queueing at most `capacity` rows.
    pub fn new(store: Option<Store>, capacity: usize) -> RequestLog {
        let (live, _) = broadcast::channel(1024);
        let (local, _) = broadcast::channel(1024);
        RequestLog {
            store,
            capacity: capacity.max(1),
            writer: OnceLock::new(),
            tail: Mutex::new(VecDeque::with_capacity(TAIL)),
            live,
            local,
            counters: Arc::new(LogCounters::default()),
            observer: OnceLock::new(),
        }
    }

    /// Sets the function every finished row is shown to (once).
    pub fn observe(&self, f: impl Fn(&LogRow) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(f));
    }

    /// Starts a trace for a request that just arrived.
    pub fn start(self: &Arc<Self>, request_id: String, api: &str, endpoint: &str) -> Trace {
        Trace(Arc::new(TraceInner {
            row: Mutex::new(LogRow {
                request_id,
                created_at: now_ms(),
                api: api.to_string(),
                endpoint: endpoint.to_string(),
                attempts: serde_json::Value::Array(Vec::new()),
                ..LogRow::default()
            }),
            started: Instant::now(),
            log: self.clone(),
        }))
    }

    /// The last rows, oldest first, and a receiver of the rows that follow them.
    pub fn subscribe(&self) -> (Vec<Arc<LogRow>>, broadcast::Receiver<Arc<LogRow>>) {
        // Subscribing under the tail's lock: no row is in both, none is in neither.
        match self.tail.lock() {
            Ok(t) => (t.iter().cloned().collect(), self.live.subscribe()),
            Err(_) => (Vec::new(), self.live.subscribe()),
        }
    }

    /// This instance's rows as they finish (for publishing them to other instances' tails).
    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<LogRow>> {
        self.local.subscribe()
    }

    /// A row another instance finished: joins this instance's tail (it is written, counted and
    /// exported by the instance that served it).
    pub fn inject(&self, row: LogRow) {
        self.show(Arc::new(row));
    }

    fn show(&self, row: Arc<LogRow>) {
        if let Ok(mut t) = self.tail.lock() {
            if t.len() == TAIL {
                t.pop_front();
            }
            t.push_back(row.clone());
            let _ = self.live.send(row);
        }
    }

    /// Rows waiting for the writer.
    pub fn queued(&self) -> u64 {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Waits until every row finished so far is written (or the store gave up on it).
    pub async fn flush(&self) {
        if let Some(tx) = self.writer.get() {
            let (done, wait) = oneshot::channel();
            if tx.send(Job::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    fn push(&self, row: LogRow) {
        if let Some(f) = self.observer.get() {
            f(&row);
        }
        let row = Arc::new(row);
        self.show(row.clone());
        if self.local.receiver_count() > 0 {
            let _ = self.local.send(row.clone());
        }
        let Some(store) = &self.store else { return };
        let tx = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            tokio::spawn(write_loop(store.clone(), rx, self.counters.clone()));
            tx
        });
        match tx.try_send(Job::Row(row)) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>, counters: Arc<LogCounters>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let flush = |j: &Job| matches!(j, Job::Flush(_));
    while crate::batch::fill(&mut rx, &mut jobs, BATCH, LINGER, flush).await > 0 {
        let mut rows = Vec::with_capacity(jobs.len());
        let mut flushes = Vec::new();
        for j in jobs.drain(..) {
            match j {
                Job::Row(r) => rows.push(r),
                Job::Flush(done) => flushes.push(done),
            }
        }
        let n = rows.len() as u64;
        let mut wait = Duration::from_millis(50);
        // Keep the batch until the store takes it: the queue behind it is the bound.
        while !rows.is_empty() {
            match store.insert_logs(&rows).await {
                Ok(_) => {
                    counters.written.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, rows = n, "request log batch not written; retrying");
                    if rx.is_closed() && !flushes.is_empty() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
        counters.queued.fetch_sub(
            n.min(counters.queued.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

struct TraceInner {
    row: Mutex<LogRow>,
    started: Instant,
    log: Arc<RequestLog>,
}

impl Drop for TraceInner {
    fn drop(&mut self) {
        let mut row = match self.row.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        row.latency_ms = ms(self.started.elapsed());
        if row.status == 0 {
            // Nobody answered: the consumer went away before the response started.
            row.status = 499;
            row.error
                .get_or_insert_with(|| "client_disconnected".into());
        }
        self.log.push(row);
    }
}

/// One request's row in the making; cheap to clone, finished when the last clone drops.
#[derive(Clone)]
pub struct Trace(Arc<TraceInner>);

impl Trace {
    /// Edits the row.
    pub fn set(&self, f: impl FnOnce(&mut LogRow)) {
        if let Ok(mut r) = self.0.row.lock() {
            f(&mut r);
        }
    }

    /// Appends one hook or function call (a span) to the row's `hooks` list.
    pub fn push_hook(&self, span: serde_json::Value) {
        self.set(|r| {
            let mut list: Vec<serde_json::Value> = r
                .hooks
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default();
            list.push(span);
            r.hooks = serde_json::to_string(&list).ok();
        });
    }

    /// Records that the first token is here (now).
    pub fn first_token(&self) {
        let at = ms(self.0.started.elapsed());
        self.set(|r| {
            r.ttft_ms.get_or_insert(at);
        });
    }

    /// Of a request's extensions.
    pub fn of(parts: &axum::http::request::Parts) -> Option<Trace> {
        parts.extensions.get::<Trace>().cloned()
    }
}

/// Caps a body for the log (bodies are opt-in per API), on a character boundary.
pub fn capped_body(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    s.into_owned()
}

/// The API slug and whether a path is one the log records (`/v1/…` or `/{api}/v1/…`).
fn api_of(path: &str) -> Option<&str> {
    if path.starts_with("/v1/") {
        return Some(access::api::DEFAULT_API);
    }
    let rest = path.strip_prefix('/')?;
    let (api, tail) = rest.split_once('/')?;
    tail.starts_with("v1/").then_some(api)
}

/// The log layer: a [`Trace`] for every data-plane request, finished with its response.
pub async fn layer(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let Some(api) = api_of(req.uri().path()).filter(|_| gw.limits.request_log) else {
        return next.run(req).await;
    };
    let id = req
        .extensions()
        .get::<RequestId>()
        .map_or_else(crate::edge::next_request_id, |r| r.0.clone());
    let trace = gw.log.start(id, api, req.uri().path());
    req.extensions_mut().insert(trace.clone());
    let resp = next.run(req).await;
    let status = i64::from(resp.status().as_u16());
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.clone());
    let streamed = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    trace.set(|r| {
        if r.status == 0 {
            r.status = status;
        }
        if r.error.is_none() {
            r.error = code;
        }
    });
    if !streamed {
        trace.first_token();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_plane_paths_are_logged() {
        assert_eq!(api_of("/v1/chat/completions"), Some("default"));
        assert_eq!(api_of("/paid/v1/messages"), Some("paid"));
        assert_eq!(api_of("/healthz"), None);
        assert_eq!(api_of("/paid/admin"), None);
        assert_eq!(api_of(""), None);
    }

    #[test]
    fn bodies_are_capped_without_breaking_utf8() {
        assert_eq!(capped_body("héllo".as_bytes(), 2), "h\u{fffd}");
        assert_eq!(capped_body(b"abc", 10), "abc");
    }
}
