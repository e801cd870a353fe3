//! The stages around the model, run in this order for every chat request of an API that
//! enables them (a disabled stage is one `Option` test on the snapshot's API):
//!
//! 1. **PII guard** ([`crate::pii`]): reads the prompt's text; redacts it in place (or only
//!    counts); writes `x-gateway-pii`. Cannot fail.
//! 2. **Input moderation** ([`crate::moderation`]): reads the (redacted) prompt; block → 400
//!    `content_policy_violation` before any token is spent; flag → `x-gateway-moderation`.
//!    A failing classifier lets the request on (counted, logged) unless `fail_closed` (503).
//! 3. **RAG** ([`crate::rag`]): reads the last user message; retrieves from the API's own
//!    knowledge base and inserts one delimited system message before it; writes
//!    `x-gateway-rag-sources`. A failing retrieval goes on without context (counted) unless
//!    `fail_closed` (503).
//! 4. **Pre-hook** ([`crate::functions`]): the operator's function gets the messages, consumer
//!    and request metadata and RAG chunks; `continue`, `rewrite` (new messages) or `reject`
//!    (its 4xx and message). A failure continues (fail_open) or fails with 502 `hook_failed`.
//!
//! After the model: output moderation (non-streaming here, streams in
//! [`crate::moderation::watch_stream`]) and the post-hook ([`post_hook`]), spawned so that it
//! never delays the response, whose returned metadata is recorded.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};
use wire::openai::{ChatRequest, Message, Usage};

use crate::edge::Caller;
use crate::error::GatewayError;
use crate::functions::{CallError, FailureMode, HookMetadata, StageOutcome};
use crate::moderation;
use crate::state::{Gateway, Snapshot};

pub const X_MODERATION: HeaderName = HeaderName::from_static("x-gateway-moderation");
pub const X_PII: HeaderName = HeaderName::from_static("x-gateway-pii");
pub const X_HOOKS: HeaderName = HeaderName::from_static("x-gateway-hooks");
pub const X_RAG_SOURCES: HeaderName = HeaderName::from_static("x-gateway-rag-sources");

/// What the stages found about one request, for its response headers and its log.
#[derive(Debug, Default)]
pub struct Marks {
    pub pii: crate::pii::Counts,
    /// Categories of a flagged prompt or answer.
    pub flagged: Vec<String>,
    /// Categories that stopped the request in block mode (for its log row).
    pub blocked: Vec<String>,
    pub outcomes: Vec<StageOutcome>,
    /// Chunks the RAG stage injected.
    pub rag: Vec<knowledge::retrieve::Hit>,
}

impl Marks {
    pub fn flag(&mut self, categories: Vec<String>) {
        moderation::merge(&mut self.flagged, categories);
    }

    /// The request log's `moderation` verdict, if moderation found anything.
    pub fn moderation(&self) -> Option<String> {
        moderation::verdict_value(&self.flagged, &self.blocked)
    }

    /// `x-gateway-pii`, `x-gateway-moderation`, `x-gateway-hooks` (only what applies).
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |k: HeaderName, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        if self.pii.total() > 0 {
            put(X_PII, self.pii.header());
        }
        if !self.flagged.is_empty() {
            put(X_MODERATION, moderation::flag_value(&self.flagged));
        }
        if !self.rag.is_empty() {
            put(X_RAG_SOURCES, crate::rag::sources_header(&self.rag));
        }
        if !self.outcomes.is_empty() {
            let parts: Vec<String> = self
                .outcomes
                .iter()
                .map(StageOutcome::header_part)
                .collect();
            put(X_HOOKS, parts.join(", "));
        }
        h
    }
}

/// Who is asking, as hooks and functions see it.
pub fn consumer_json(caller: &Caller) -> Value {
    json!({
        "id": caller.consumer_id,
        "key_id": caller.key.as_ref().map(|k| k.id.clone()),
    })
}

fn metadata_json(headers: &HeaderMap) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in headers {
        if let Some(name) = k
            .as_str()
            .strip_prefix(router::rules::METADATA_HEADER_PREFIX)
            && let Ok(v) = v.to_str()
            && v.len() <= 256
            && m.len() < 16
        {
            m.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(m)
}

/// Runs the input stages over `chat` (which they may rewrite), recording what they found in
/// `marks` — also when one of them fails the request, so that its log row says why.
pub async fn before(
    gw: &Gateway,
    snap: &Snapshot,
    caller: &Caller,
    request_id: &str,
    headers: &HeaderMap,
    chat: &mut ChatRequest,
    marks: &mut Marks,
) -> Result<(), GatewayError> {
    let settings = &caller.api.settings;
    if let Some(pii) = &settings.pii {
        marks.pii = crate::pii::guard_chat(chat, pii);
    }
    if let Some(m) = settings.moderation.as_ref().filter(|m| m.input) {
        let text = moderation::prompt_text(chat);
        match moderation::classify(snap, &gw.health, m, &text).await {
            Ok(v) if v.unsafe_() => {
                let cats = v.categories.join(",");
                tracing::info!(target: "gateway::hooks", stage = "moderation_input",
                    categories = %cats, mode = ?m.mode, "unsafe prompt");
                if m.mode == access::stages::ModerationMode::Block {
                    marks.blocked = v.categories;
                    return Err(GatewayError::ContentPolicy(cats));
                }
                marks.flag(v.categories);
            }
            Ok(_) => {}
            Err(e) => {
                moderation::failed(gw, "moderation_input", &e);
                if m.fail_closed {
                    return Err(GatewayError::ModerationUnavailable);
                }
            }
        }
    }
    if let Some(rag) = &settings.rag {
        marks.rag = crate::rag::stage(gw, rag, chat).await?;
    }
    if let Some(name) = &settings.pre_hook {
        pre_hook(gw, snap, caller, request_id, headers, chat, name, marks).await?;
    }
    Ok(())
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the stage's inputs"
)]
async fn pre_hook(
    gw: &Gateway,
    snap: &Snapshot,
    caller: &Caller,
    request_id: &str,
    headers: &HeaderMap,
    chat: &mut ChatRequest,
    name: &str,
    marks: &mut Marks,
) -> Result<(), GatewayError> {
    const STAGE: &str = "pre_hook";
    let started = Instant::now();
    let Some(f) = snap.functions.get(name) else {
        // Validated at load; a function deleted since fails as the hook's mode says.
        gw.counters.note_hook_failure();
        let closed = FailureMode::FailClosed;
        marks.outcomes.push(StageOutcome::failed(
            STAGE,
            name,
            &CallError::NotConfigured,
            Some(closed),
            started,
        ));
        return fail(closed, STAGE);
    };
    let body = json!({
        "stage": STAGE,
        "request_id": request_id,
        "api": caller.api.slug,
        "model": chat.model,
        "messages": chat.messages,
        "consumer": consumer_json(caller),
        "metadata": metadata_json(headers),
        "chunks": crate::rag::chunks_json(&marks.rag),
    });
    let answer = f.call_json(STAGE, request_id, &body).await;
    let decided = answer.and_then(|v| decide(&v));
    match decided {
        Ok(Decision::Continue) => {
            marks
                .outcomes
                .push(StageOutcome::new(STAGE, name, "ok", started));
            Ok(())
        }
        Ok(Decision::Rewrite(messages)) => {
            chat.messages = messages;
            marks
                .outcomes
                .push(StageOutcome::new(STAGE, name, "rewrite", started));
            Ok(())
        }
        Ok(Decision::Reject(status, message)) => {
            marks
                .outcomes
                .push(StageOutcome::new(STAGE, name, "reject", started));
            Err(GatewayError::HookRejected { status, message })
        }
        Err(e) => {
            gw.counters.note_hook_failure();
            tracing::warn!(target: "gateway::hooks", stage = STAGE, function = name,
                error = %e, "hook failed");
            marks.outcomes.push(StageOutcome::failed(
                STAGE,
                name,
                &e,
                Some(f.failure),
                started,
            ));
            fail(f.failure, STAGE)
        }
    }
}

fn fail(mode: FailureMode, stage: &'static str) -> Result<(), GatewayError> {
    match mode {
        FailureMode::FailOpen => Ok(()),
        FailureMode::FailClosed => Err(GatewayError::HookFailed(stage)),
    }
}

enum Decision {
    Continue,
    Rewrite(Vec<Message>),
    Reject(StatusCode, String),
}

/// Reads a pre-hook's answer (see docs/hooks.md).
fn decide(v: &Value) -> Result<Decision, CallError> {
    let bad = |m: &str| CallError::Contract(m.to_string());
    match v["action"].as_str() {
        Some("continue") => Ok(Decision::Continue),
        Some("rewrite") => {
            let messages: Vec<Message> = serde_json::from_value(v["messages"].clone())
                .map_err(|_| bad("`rewrite` needs `messages`, a list of chat messages"))?;
            if messages.is_empty() {
                return Err(bad("`rewrite` needs at least one message"));
            }
            Ok(Decision::Rewrite(messages))
        }
        Some("reject") => {
            let status = v["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::FORBIDDEN);
            let message = v["message"]
                .as_str()
                .unwrap_or("The request was rejected.")
                .chars()
                .take(1024)
                .collect();
            Ok(Decision::Reject(status, message))
        }
        _ => Err(bad("`action` must be continue, rewrite or reject")),
    }
}

/// Output moderation of a non-streaming answer: `Err` in block mode (the answer is not
/// delivered; its tokens were spent and are billed), flags recorded otherwise; either way the
/// verdict is in `marks` for the log.
pub async fn check_output(
    gw: &Gateway,
    snap: &Snapshot,
    caller: &Caller,
    text: &str,
    marks: &mut Marks,
) -> Result<(), GatewayError> {
    let Some(m) = caller.api.settings.moderation.as_ref().filter(|m| m.output) else {
        return Ok(());
    };
    match moderation::classify(snap, &gw.health, m, text).await {
        Ok(v) if v.unsafe_() => {
            if m.mode == access::stages::ModerationMode::Block {
                let cats = v.categories.join(",");
                marks.blocked = v.categories;
                return Err(GatewayError::ContentPolicy(cats));
            }
            marks.flag(v.categories);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            moderation::failed(gw, "moderation_output", &e);
            if m.fail_closed {
                return Err(GatewayError::ModerationUnavailable);
            }
            Ok(())
        }
    }
}

/// What the post-hook is told about a request.
pub struct PostHook {
    pub function: String,
    pub api: String,
    pub request_id: String,
    pub body: Value,
    /// The request's log row: held until the hook answers, so the row carries its outcome and
    /// the metadata it returned.
    pub trace: Option<crate::log::Trace>,
}

impl PostHook {
    /// `None` when the API has no post-hook.
    pub fn new(caller: &Caller, request_id: &str, chat: &ChatRequest) -> Option<PostHook> {
        let function = caller.api.settings.post_hook.clone()?;
        Some(PostHook {
            function,
            api: caller.api.slug.clone(),
            request_id: request_id.to_string(),
            body: json!({
                "stage": "post_hook",
                "request_id": request_id,
                "api": caller.api.slug,
                "model": chat.model,
                "messages": chat.messages,
                "consumer": consumer_json(caller),
            }),
            trace: None,
        })
    }

    /// Records the hook's outcome and metadata in this request's log row.
    pub fn with_trace(mut self, trace: Option<crate::log::Trace>) -> PostHook {
        self.trace = trace;
        self
    }

    /// Calls the post-hook on its own task: the response is never delayed. `metadata` the
    /// hook returns is recorded on the gateway ([`crate::functions::MetadataRing`]) and logged.
    pub fn spawn(
        mut self,
        gw: Arc<Gateway>,
        snap: &Snapshot,
        provider: Option<&str>,
        usage: Option<Usage>,
        status: u16,
        marks: Value,
    ) {
        let Some(f) = snap.functions.get(&self.function).cloned() else {
            gw.counters.note_hook_failure();
            return;
        };
        self.body["provider"] = json!(provider);
        self.body["status"] = json!(status);
        self.body["usage"] = json!(usage);
        self.body["metadata"] = marks;
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = f.call_json("post_hook", &self.request_id, &self.body).await;
            let mut returned = None;
            let o = match answer {
                Ok(v) => {
                    if let Some(meta) = v.get("metadata").filter(|m| m.is_object()) {
                        returned = Some(meta.clone());
                        tracing::info!(target: "gateway::hooks", request_id = %self.request_id,
                            metadata = %meta, "post-hook metadata");
                        gw.hook_metadata.push(HookMetadata {
                            request_id: self.request_id.clone(),
                            api: self.api.clone(),
                            function: self.function.clone(),
                            metadata: meta.clone(),
                        });
                    }
                    StageOutcome::new("post_hook", &self.function, "ok", started)
                }
                Err(e) => {
                    gw.counters.note_hook_failure();
                    tracing::warn!(target: "gateway::hooks", stage = "post_hook",
                        function = %self.function, error = %e, "hook failed");
                    StageOutcome::failed("post_hook", &self.function, &e, None, started)
                }
            };
            if let Some(t) = self.trace.take() {
                let mut entry = serde_json::to_value(&o).unwrap_or(Value::Null);
                if let (Some(obj), Some(meta)) = (entry.as_object_mut(), returned) {
                    obj.insert("metadata".into(), meta);
                }
                t.push_hook(entry);
            }
        });
    }
}

/// The marks as post-hooks and logs see them.
pub fn marks_json(marks: &Marks) -> Value {
    json!({
        "pii": marks.pii.header(),
        "moderation": if marks.flagged.is_empty() { Value::Null } else { json!(marks.flagged) },
        "stages": marks.outcomes,
    })
}
