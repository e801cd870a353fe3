//! The function backend: in a function-backed API the operator's function replaces the LLM
//! stage. It gets the request body (after the PII guard, moderation and the pre-hook), the
//! request's headers minus credentials, the consumer and the pipeline's context; it answers
//! JSON (relayed as-is) or an event stream (relayed chunk by chunk, at most
//! [`crate::functions::MAX_BYTES`], each chunk within the function's deadline). A `usage`
//! object (`prompt_tokens`, `completion_tokens`) in the JSON or in a stream event is billed.
//! Any failure is 502 `function_failed` (504 `function_timeout` past the deadline): there is
//! nothing to fall back to. The call is one span in the request log's `hooks` ([`Span`]),
//! written when its answer was read, when it failed, or — a stream — when the stream ended.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use wire::openai::{ChatRequest, Usage};

use crate::account::{Account, Outcome};
use crate::edge::Caller;
use crate::error::GatewayError;
use crate::functions::{CallError, FailureMode, MAX_BYTES, StageOutcome};
use crate::log::Trace;
use crate::stages::{Marks, consumer_json, marks_json};
use crate::state::{Gateway, Snapshot};

const STAGE: &str = "function";
/// Headers never passed to a function.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "cookie",
    "proxy-authorization",
    "api-key",
];

fn headers_json(headers: &HeaderMap) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in headers {
        if SECRET_HEADERS.contains(&k.as_str()) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            m.insert(k.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(m)
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    let p = u.get("prompt_tokens")?.as_u64()?;
    let c = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(Usage::new(p, c, None))
}

/// The text output moderation reads in a function's answer: the choices' content when it is
/// shaped like a chat completion (or a chunk of one), else every string in it — a function
/// may answer any JSON.
fn answer_text(v: &Value) -> String {
    fn strings(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    match v.get("choices").and_then(Value::as_array) {
        Some(choices) => {
            for c in choices {
                for part in [&c["message"]["content"], &c["delta"]["content"], &c["text"]] {
                    if let Some(t) = part.as_str() {
                        out.push_str(t);
                    }
                }
            }
        }
        None => strings(v, &mut out),
    }
    out
}

/// Finds the `usage` object of a stream's `data:` events as its bytes go by, and (when output
/// moderation wants it) their text.
#[derive(Default)]
struct UsageScan {
    line: Vec<u8>,
    usage: Option<Usage>,
    wants_text: bool,
    text: String,
}

impl UsageScan {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if let Some(json) = self.line.strip_prefix(b"data: ")
                    && let Ok(v) = serde_json::from_slice::<Value>(json)
                {
                    if let Some(u) = usage_of(&v) {
                        self.usage = Some(u);
                    }
                    if self.wants_text {
                        self.text.push_str(&answer_text(&v));
                    }
                }
                self.line.clear();
            } else if self.line.len() < 64 * 1024 {
                self.line.push(b);
            }
        }
    }
}

/// Settles the request once, with the usage the function reported (on drop if never told).
struct Settle {
    gw: Arc<Gateway>,
    snap: Arc<Snapshot>,
    account: Option<Account>,
    function: String,
}

impl Settle {
    fn done(&mut self, status: u16, usage: Option<Usage>) -> billing::Picos {
        let Some(a) = self.account.take() else {
            return billing::Picos::default();
        };
        a.settle(
            &self.gw,
            &self.snap.prices,
            Outcome {
                status,
                provider: Some("function"),
                model: Some(&self.function),
                usage,
                delivered_chunks: 0,
                attempts: &[],
            },
        )
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.done(499, None);
    }
}

/// The function call's span in the request log's `hooks`, written once: with its outcome when
/// the call is over, `cancelled` if it is dropped first (the consumer went away). Holding the
/// trace keeps the row open until the span is in it.
struct Span {
    trace: Option<Trace>,
    function: String,
    started: Instant,
}

impl Span {
    /// The outcome so far, for `x-gateway-hooks` when a stream's head arrives (not logged: the
    /// span is, when the stream ends).
    fn head(&self) -> StageOutcome {
        StageOutcome {
            stage: STAGE,
            function: self.function.clone(),
            outcome: "ok".into(),
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error: None,
            failure: None,
        }
    }

    fn ok(&mut self) -> StageOutcome {
        let o = StageOutcome::new(STAGE, &self.function, "ok", self.started);
        self.write(&o);
        o
    }

    /// A backend's failure always fails the request: there is nothing to fall back to.
    fn failed(&mut self, e: &CallError) {
        let closed = Some(FailureMode::FailClosed);
        let o = StageOutcome::failed(STAGE, &self.function, e, closed, self.started);
        self.write(&o);
    }

    fn write(&mut self, o: &StageOutcome) {
        if let Some(t) = self.trace.take() {
            t.push_hook(serde_json::to_value(o).unwrap_or(Value::Null));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.trace.is_some() {
            let o = StageOutcome::new(STAGE, &self.function, "cancelled", self.started);
            self.write(&o);
        }
    }
}

/// A failed call: counted, logged, its span written and the request settled as failed (with
/// the usage the function reported before it failed, if any).
fn failed(
    gw: &Gateway,
    settle: &mut Settle,
    span: &mut Span,
    e: CallError,
    usage: Option<Usage>,
) -> GatewayError {
    gw.counters.note_hook_failure();
    tracing::warn!(target: "gateway::hooks", stage = STAGE, function = %span.function,
        error = %e, "function backend failed");
    span.failed(&e);
    let err = match e {
        CallError::Timeout(_) => GatewayError::FunctionTimeout,
        other => GatewayError::FunctionFailed(other.to_string()),
    };
    settle.done(err.parts().0.as_u16(), usage);
    err
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the stage's inputs"
)]
pub async fn serve(
    gw: Arc<Gateway>,
    snap: Arc<Snapshot>,
    caller: &Caller,
    request_id: &str,
    headers: &HeaderMap,
    chat: &ChatRequest,
    account: Account,
    mut marks: Marks,
    anthropic: bool,
) -> Result<Response, GatewayError> {
    let name = caller.api.settings.function.clone().unwrap_or_default();
    // A stream's error events speak the consumer's protocol.
    let error_event = if anthropic {
        crate::egress::anthropic_error
    } else {
        crate::egress::openai_error
    };
    let mut settle = Settle {
        gw: gw.clone(),
        snap: snap.clone(),
        account: Some(account),
        function: name.clone(),
    };
    let trace = settle.account.as_ref().and_then(|a| a.trace.clone());
    let mut span = Span {
        trace: trace.clone(),
        function: name.clone(),
        started: Instant::now(),
    };
    let Some(f) = snap.functions.get(&name).cloned() else {
        return Err(failed(
            &gw,
            &mut settle,
            &mut span,
            CallError::NotConfigured,
            None,
        ));
    };
    let post =
        crate::stages::PostHook::new(caller, request_id, chat).map(|p| p.with_trace(trace.clone()));
    let body = json!({
        "stage": STAGE,
        "request_id": request_id,
        "api": caller.api.slug,
        "body": chat,
        "headers": headers_json(headers),
        "consumer": consumer_json(caller),
        "context": marks_json(&marks),
    });
    let resp = match f.open(STAGE, request_id, &body).await {
        Ok(r) => r,
        Err(e) => return Err(failed(&gw, &mut settle, &mut span, e, None)),
    };
    let status = resp.status();
    if !status.is_success() {
        let e = CallError::Status(status.as_u16());
        return Err(failed(&gw, &mut settle, &mut span, e, None));
    }
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let deadline = f.deadline;
    let mut incoming = resp.into_body();
    if !sse {
        let read = async {
            let mut out = bytes::BytesMut::new();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|_| CallError::Fetch("the answer broke off".into()))?;
                if let Some(d) = frame.data_ref() {
                    if out.len() + d.len() > MAX_BYTES {
                        return Err(CallError::Fetch(format!(
                            "answer larger than {MAX_BYTES} bytes"
                        )));
                    }
                    out.extend_from_slice(d);
                }
            }
            Ok(out.freeze())
        };
        let read = match tokio::time::timeout(deadline, read).await {
            Ok(read) => read,
            Err(_) => Err(CallError::Timeout(deadline.as_millis())),
        };
        let v = read.and_then(|b| {
            serde_json::from_slice::<Value>(&b)
                .map(|v| (b, v))
                .map_err(|_| CallError::InvalidJson)
        });
        let (bytes, v) = match v {
            Ok(bv) => bv,
            Err(e) => return Err(failed(&gw, &mut settle, &mut span, e, None)),
        };
        // The span is in the row before the post-hook may add its own.
        marks.outcomes.push(span.ok());
        let usage = usage_of(&v);
        let cost = settle.done(200, usage);
        // The function did its work (and is billed for it) even if moderation stops its answer.
        let checked =
            crate::stages::check_output(&gw, &snap, caller, &answer_text(&v), &mut marks).await;
        if let (Some(t), Some(m)) = (&trace, marks.moderation()) {
            t.set(|r| r.moderation = Some(m));
        }
        checked?;
        if let Some(p) = post {
            p.spawn(
                gw.clone(),
                &snap,
                Some("function"),
                usage,
                200,
                marks_json(&marks),
            );
        }
        let mut r = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response();
        r.headers_mut().extend(marks.headers());
        if let Ok(v) = axum::http::HeaderValue::from_str(&cost.to_string()) {
            r.headers_mut().insert("x-gateway-cost-usd", v);
        }
        return Ok(r);
    }
    // The header has the time to the stream's head; the row's span lasts to the stream's end.
    marks.outcomes.push(span.head());
    let (gw2, snap2, context) = (gw.clone(), snap.clone(), marks_json(&marks));
    let mut windows = caller
        .api
        .settings
        .moderation
        .clone()
        .filter(|m| m.output)
        .map(crate::moderation::TextWindows::new);
    let input_flags = marks.flagged.clone();
    // The row, for the verdict: the span's own handle is gone once the span is written.
    let row = trace;
    let stream = async_stream::stream! {
        let (mut settle, mut span) = (settle, span);
        let mut scan = UsageScan { wants_text: windows.is_some(), ..UsageScan::default() };
        let mut total = 0usize;
        // The row's verdict: the prompt's flags and what the stream's windows found.
        let verdict = |w: &Option<crate::moderation::TextWindows>| {
            let mut flagged = input_flags.clone();
            let mut blocked = Vec::new();
            if let Some(f) = w.as_ref().and_then(|w| w.flags.lock().ok()) {
                crate::moderation::merge(&mut flagged, f.flagged.iter().cloned());
                blocked.clone_from(&f.blocked);
            }
            crate::moderation::verdict_value(&flagged, &blocked)
        };
        let (e, usage) = loop {
            let frame = match tokio::time::timeout(deadline, incoming.frame()).await {
                Ok(Some(Ok(f))) => f,
                Ok(None) => {
                    span.ok();
                    settle.done(200, scan.usage);
                    let stop = match windows.as_mut() {
                        Some(w) => w.push(&gw2, &snap2, "", true).await,
                        None => None,
                    };
                    if let (Some(t), Some(m)) = (&row, verdict(&windows)) {
                        t.set(|r| r.moderation = Some(m));
                    }
                    if let Some(err) = stop {
                        if let Some(t) = &row {
                            t.set(|r| r.error = Some(err.parts().2));
                        }
                        yield Ok(error_event(&err));
                        return;
                    }
                    if let Some(p) = post {
                        p.spawn(gw2, &snap2, Some("function"), scan.usage, 200, context);
                    }
                    return;
                }
                Ok(Some(Err(_))) => {
                    break (CallError::Fetch("the stream broke off".into()), scan.usage);
                }
                Err(_) => break (CallError::Timeout(deadline.as_millis()), scan.usage),
            };
            let Some(d) = frame.data_ref() else { continue };
            total += d.len();
            if total > MAX_BYTES {
                break (CallError::Fetch(format!("stream larger than {MAX_BYTES} bytes")), None);
            }
            scan.feed(d);
            if let Some(w) = windows.as_mut() {
                let text = std::mem::take(&mut scan.text);
                // The last window is checked before the function's own `[DONE]` goes out, so
                // a stopped stream never looks finished.
                let done = d.windows(12).any(|x| x == b"data: [DONE]");
                if let Some(err) = w.push(&gw2, &snap2, &text, done).await {
                    // This chunk's text tripped the check: it is not delivered. The function
                    // worked, so the request is settled as answered.
                    span.ok();
                    settle.done(200, scan.usage);
                    if let Some(t) = &row {
                        let m = verdict(&windows);
                        t.set(|r| {
                            r.moderation = m;
                            r.error = Some(err.parts().2);
                        });
                    }
                    yield Ok(error_event(&err));
                    return;
                }
            }
            yield Ok::<Bytes, std::convert::Infallible>(d.clone());
        };
        // Cut short after the head: the row says how (its span and error code), the request is
        // settled, and the consumer gets an error event instead of the stream's end.
        let trace = span.trace.clone();
        let err = failed(&gw2, &mut settle, &mut span, e, usage);
        if let Some(t) = trace {
            let code = err.parts().2;
            t.set(|r| r.error = Some(code));
        }
        yield Ok(error_event(&err));
    };
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream.boxed()),
    )
        .into_response();
    r.headers_mut().extend(marks.headers());
    Ok(r)
}
