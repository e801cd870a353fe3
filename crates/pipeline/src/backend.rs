//! The function backend: in a function-backed API the operator's function replaces the LLM
//! stage. It gets the request body (after the PII guard, moderation and the pre-hook), the
//! request's headers minus credentials, the consumer and the pipeline's context; it answers
//! JSON (relayed as-is) or an event stream (relayed chunk by chunk, at most
//! [`crate::functions::MAX_BYTES`], each chunk within the function's deadline). A `usage`
//! object (`prompt_tokens`, `completion_tokens`) in the JSON or in a stream event is billed.
//! Any failure is 502 `function_failed` (504 `function_timeout` past the deadline): there is
//! nothing to fall back to.

use std::sync::{Arc, Mutex};
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
use crate::functions::{CallError, MAX_BYTES, StageOutcome};
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
) -> Result<Response, GatewayError> {
    let name = caller.api.settings.function.clone().unwrap_or_default();
    let mut settle = Settle {
        gw: gw.clone(),
        snap: snap.clone(),
        account: Some(account),
        function: name.clone(),
    };
    let Some(f) = snap.functions.get(&name).cloned() else {
        settle.done(502, None);
        return Err(GatewayError::FunctionFailed("it is not configured".into()));
    };
    let started = Instant::now();
    let trace = settle.account.as_ref().and_then(|a| a.trace.clone());
    let post = crate::stages::PostHook::new(caller, request_id, chat).map(|p| p.with_trace(trace));
    let body = json!({
        "stage": STAGE,
        "request_id": request_id,
        "api": caller.api.slug,
        "body": chat,
        "headers": headers_json(headers),
        "consumer": consumer_json(caller),
        "context": marks_json(&marks),
    });
    let fail = |e: CallError, settle: &mut Settle, gw: &Gateway| {
        gw.counters.note_hook_failure();
        tracing::warn!(target: "gateway::hooks", stage = STAGE, function = %name, error = %e,
            "function backend failed");
        StageOutcome::new(STAGE, &name, e.outcome(), started);
        let err = match e {
            CallError::Timeout(_) => GatewayError::FunctionTimeout,
            other => GatewayError::FunctionFailed(other.to_string()),
        };
        settle.done(err.parts().0.as_u16(), None);
        err
    };
    let resp = match f.open(STAGE, request_id, &body).await {
        Ok(r) => r,
        Err(e) => return Err(fail(e, &mut settle, &gw)),
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(CallError::Status(status.as_u16()), &mut settle, &gw));
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
        let bytes = match tokio::time::timeout(deadline, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(fail(e, &mut settle, &gw)),
            Err(_) => {
                return Err(fail(
                    CallError::Timeout(deadline.as_millis()),
                    &mut settle,
                    &gw,
                ));
            }
        };
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return Err(fail(CallError::InvalidJson, &mut settle, &gw)),
        };
        marks
            .outcomes
            .push(StageOutcome::new(STAGE, &name, "ok", started));
        let usage = usage_of(&v);
        let cost = settle.done(200, usage);
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
    marks
        .outcomes
        .push(StageOutcome::new(STAGE, &name, "ok", started));
    let usage2: Arc<Mutex<Option<Usage>>> = Arc::default();
    let (gw2, snap2, context) = (gw.clone(), snap.clone(), marks_json(&marks));
    let stream = async_stream::stream! {
        let mut total = 0usize;
        let mut line = Vec::new();
        let mut settle = settle;
        loop {
            let frame = match tokio::time::timeout(deadline, incoming.frame()).await {
                Ok(Some(Ok(f))) => f,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    let u = usage2.lock().ok().and_then(|u| *u);
                    settle.done(502, u);
                    yield Ok::<Bytes, std::convert::Infallible>(crate::egress::openai_error(
                        &GatewayError::FunctionFailed("the stream broke off".into())));
                    return;
                }
            };
            let Some(d) = frame.data_ref() else { continue };
            total += d.len();
            if total > MAX_BYTES {
                settle.done(502, None);
                yield Ok(crate::egress::openai_error(&GatewayError::FunctionFailed(
                    format!("stream larger than {MAX_BYTES} bytes"))));
                return;
            }
            for &b in d.iter() {
                if b == b'\n' {
                    if let Some(json) = line.strip_prefix(b"data: ")
                        && let Ok(v) = serde_json::from_slice::<Value>(json)
                        && let Some(u) = usage_of(&v)
                        && let Ok(mut slot) = usage2.lock()
                    {
                        *slot = Some(u);
                    }
                    line.clear();
                } else if line.len() < 64 * 1024 {
                    line.push(b);
                }
            }
            yield Ok(d.clone());
        }
        let u = usage2.lock().ok().and_then(|u| *u);
        settle.done(200, u);
        if let Some(p) = post {
            p.spawn(gw2, &snap2, Some("function"), u, 200, context);
        }
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
