//! The emulator server: shared state, the control routes and the streaming body every vendor
//! module uses.
//! - `faults`: what can go wrong ([`Fault`]) and for which requests ([`FaultRule`]).
//! - `attempt`: the request log ([`Recorded`]) and how each answer ended ([`Outcome`]).
//! - `serve`: the accept loop, which can close a connection without answering.

mod attempt;
mod faults;
mod serve;

pub use attempt::{Attempt, Outcome, Recorded};
pub use faults::{ErrorSpec, Fault, FaultRule, Matching};
pub use serve::drop_connection;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use attempt::RequestLog;
use faults::FaultQueue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Openai,
    Azure,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The key every vendor route expects (`Bearer`, `api-key`, `x-api-key`, `x-goog-api-key`).
    pub api_key: String,
    /// Words in a streamed answer (one event each) when the request does not cap output.
    pub stream_chunks: usize,
    /// Keep a copy of each request for tests to inspect.
    pub record: bool,
    pub threads: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            api_key: "test-key".into(),
            stream_chunks: 0,
            record: true,
            threads: 1,
        }
    }
}

pub struct EmulatorState {
    pub config: EmulatorConfig,
    faults: Mutex<FaultQueue>,
    log: RequestLog,
}

impl EmulatorState {
    /// Takes the first fault rule matching this request, counting one use (a windowed rule is
    /// not used up).
    pub fn take_fault(&self, m: Matching<'_>) -> Option<Fault> {
        self.faults.lock().ok()?.take(m)
    }

    fn push_fault(&self, rule: FaultRule) {
        if let Ok(mut f) = self.faults.lock() {
            f.push(rule);
        }
    }

    /// Logs the request (when recording) and returns the attempt its response settles.
    pub fn record(
        self: &Arc<Self>,
        vendor: Vendor,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Attempt {
        if !self.config.record {
            return Attempt::untracked();
        }
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        let seq = self.log.push(vendor, path.to_string(), headers, body);
        Attempt::new(self.clone(), seq)
    }

    /// How long the answer to a request that allows `max_tokens` is: the natural echo (or
    /// `stream_chunks` words when configured), never more than `max_tokens`.
    pub fn answer_len(&self, max_tokens: Option<u32>) -> crate::reply::Length {
        crate::reply::Length {
            pad_to: (self.config.stream_chunks > 0).then_some(self.config.stream_chunks),
            cap: max_tokens.map(|m| m as usize),
        }
    }
}

pub type Shared = Arc<EmulatorState>;

pub struct Emulator {
    pub addr: SocketAddr,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(0, EmulatorConfig::default()).await
    }

    pub async fn start_on(port: u16, config: EmulatorConfig) -> anyhow::Result<Self> {
        let state = Arc::new(EmulatorState {
            config,
            faults: Mutex::new(FaultQueue::default()),
            log: RequestLog::new(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve::run(listener, router(state.clone())));
        Ok(Emulator { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_fault(&self, rule: FaultRule) {
        self.state.push_fault(rule);
    }

    /// A fault for the next request of any vendor and model.
    pub fn fail_next(&self, fault: Fault) {
        self.push_fault(FaultRule::once(fault));
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.snapshot()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.state.log.last()
    }

    /// Waits until `done` holds for the recorded requests and returns them, or `None` after
    /// `timeout` (tokio time: virtual under a paused clock).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Option<Vec<Recorded>> {
        let log = &self.state.log;
        let settled = async {
            loop {
                // Registered before the check, so a change in between is not missed.
                let changed = log.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                let requests = log.snapshot();
                if done(&requests) {
                    return requests;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, settled).await.ok()
    }

    /// Waits until the `index`th recorded request (0 = oldest kept) has an outcome other than
    /// `in_flight`, and returns it; `None` after `timeout`.
    pub async fn wait_for_outcome(&self, index: usize, timeout: Duration) -> Option<Recorded> {
        let settled = |r: &[Recorded]| r.get(index).is_some_and(|r| r.outcome != Outcome::InFlight);
        self.wait_for(timeout, settled)
            .await
            .and_then(|r| r.into_iter().nth(index))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Also closes the connections still open (see `serve::run`).
        self.task.abort();
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/_emulator/faults", post(push_fault))
        .route("/_emulator/requests", get(list_requests))
        .route("/_emulator/reset", post(reset))
        .merge(crate::openai::routes())
        .merge(crate::anthropic::routes())
        .merge(crate::gemini::routes())
        .with_state(state)
}

async fn push_fault(
    State(s): State<Shared>,
    axum::Json(rule): axum::Json<FaultRule>,
) -> StatusCode {
    s.push_fault(rule);
    StatusCode::NO_CONTENT
}

async fn list_requests(State(s): State<Shared>) -> Response {
    axum::Json(s.log.snapshot()).into_response()
}

async fn reset(State(s): State<Shared>) -> StatusCode {
    if let Ok(mut f) = s.faults.lock() {
        f.clear();
    }
    s.log.clear();
    StatusCode::NO_CONTENT
}

/// What a `RejectPrefill` fault says, in every vendor's error body.
pub const PREFILL_REFUSED: &str = "This model does not support assistant message prefill. The conversation must end with a user message.";

/// Applies the faults that act before any answer: `Delay` waits, `Hang` never returns, `Reset`
/// is the `Err` response that closes the connection. Returns the fault if the caller must still
/// act on it.
pub async fn pre_response(fault: Option<Fault>) -> Result<Option<Fault>, Response> {
    match fault {
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(None)
        }
        Some(Fault::Hang) => {
            // Dropped by hyper when the client goes away (it watches for EOF mid-message).
            let never = std::future::pending::<std::convert::Infallible>().await;
            match never {}
        }
        Some(Fault::Reset) => Err(serve::drop_connection()),
        other => Ok(other),
    }
}

/// An SSE body of pre-encoded events, with the stream faults (`SlowFirstToken`, `CutMidStream`,
/// `Stall`, `MalformedChunk`) applied. A cut ends the body with an error, which hyper turns into
/// a dropped connection.
pub fn sse_body(events: Vec<Bytes>, fault: Option<Fault>) -> Response {
    let stream = async_stream::stream! {
        if let Some(Fault::SlowFirstToken { ms }) = &fault {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
        }
        for (i, ev) in events.into_iter().enumerate() {
            match &fault {
                Some(Fault::CutMidStream { after_events }) if i == *after_events => {
                    // Let what was sent reach the client first, so the cut is really mid-stream.
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    yield Err(std::io::Error::other("emulator: cut mid-stream"));
                    return;
                }
                Some(Fault::Stall { after_events, ms }) if i == *after_events => {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                }
                Some(Fault::MalformedChunk { after_events }) if i == *after_events => {
                    yield Ok::<Bytes, std::io::Error>(Bytes::from_static(b"data: {\"id\": \"broken\", \"choices\": [\n\n"));
                }
                _ => {}
            }
            yield Ok(ev);
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A JSON response with a status and extra headers.
pub fn json_response(
    status: u16,
    headers: &[(&str, String)],
    body: &serde_json::Value,
) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A monotonically increasing id suffix, so ids differ between responses.
pub fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
