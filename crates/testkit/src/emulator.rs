//! The emulator server: shared state, scripted faults, the control routes and the streaming body
//! every vendor module uses.

use std::collections::VecDeque;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Openai,
    Azure,
    Anthropic,
    Gemini,
}

/// What goes wrong with the next matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and the vendor's own error body (and `retry-after` if given).
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Wait this long before answering at all.
    Delay { ms: u64 },
    /// Stream: send the headers, then wait this long before the first event.
    SlowFirstToken { ms: u64 },
    /// Stream: send this many events, then drop the connection with no terminator.
    CutMidStream { after_events: usize },
    /// Stream: send this many events, then stall for `ms`, then go on.
    Stall { after_events: usize, ms: u64 },
    /// Stream: send this many events, then one that is not valid JSON, then go on.
    MalformedChunk { after_events: usize },
    /// Answer without any usage numbers.
    NoUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only requests for this (upstream) model; any model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Only requests to this vendor's routes; any when absent.
    #[serde(default)]
    pub vendor: Option<Vendor>,
    /// How many matching requests it applies to.
    #[serde(default = "one")]
    pub times: usize,
}

fn one() -> usize {
    1
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

/// A request as the emulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub vendor: Vendor,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

pub struct EmulatorState {
    pub config: EmulatorConfig,
    faults: Mutex<VecDeque<FaultRule>>,
    recorded: Mutex<Vec<Recorded>>,
}

impl EmulatorState {
    /// Takes the first fault rule matching this request, counting one use.
    pub fn take_fault(&self, vendor: Vendor, model: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().ok()?;
        let pos = faults.iter().position(|r| {
            r.model.as_deref().is_none_or(|m| m == model) && r.vendor.is_none_or(|v| v == vendor)
        })?;
        let rule = faults.get_mut(pos)?;
        let fault = rule.fault.clone();
        rule.times = rule.times.saturating_sub(1);
        if rule.times == 0 {
            faults.remove(pos);
        }
        Some(fault)
    }

    pub fn record(&self, vendor: Vendor, path: &str, headers: &HeaderMap, body: &[u8]) {
        if !self.config.record {
            return;
        }
        let rec = Recorded {
            vendor,
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        };
        if let Ok(mut r) = self.recorded.lock() {
            if r.len() >= 10_000 {
                r.remove(0);
            }
            r.push(rec);
        }
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
            faults: Mutex::new(VecDeque::new()),
            recorded: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            // Streams go out in several small writes: without NODELAY, Nagle holds the last one
            // until the client's delayed ACK (~40 ms a stream).
            let listener = axum::serve::ListenerExt::tap_io(listener, |t| {
                let _ = t.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Ok(Emulator { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_fault(&self, rule: FaultRule) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.push_back(rule);
        }
    }

    /// A fault for the next request of any vendor and model.
    pub fn fail_next(&self, fault: Fault) {
        self.push_fault(FaultRule {
            fault,
            model: None,
            vendor: None,
            times: 1,
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .recorded
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.state
            .recorded
            .lock()
            .ok()
            .and_then(|r| r.last().cloned())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
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
    if let Ok(mut f) = s.faults.lock() {
        f.push_back(rule);
    }
    StatusCode::NO_CONTENT
}

async fn list_requests(State(s): State<Shared>) -> Response {
    let r = s.recorded.lock().map(|r| r.clone()).unwrap_or_default();
    axum::Json(r).into_response()
}

async fn reset(State(s): State<Shared>) -> StatusCode {
    if let Ok(mut f) = s.faults.lock() {
        f.clear();
    }
    if let Ok(mut r) = s.recorded.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT
}

/// Applies a `Delay` fault; returns the fault if it is one the caller must still act on.
pub async fn pre_response(fault: Option<Fault>) -> Option<Fault> {
    match fault {
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        other => other,
    }
}

/// An SSE body of pre-encoded events, with stream faults applied. `malformed` is what a
/// `MalformedChunk` fault sends.
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
