//! The HTTP surface of the data plane. Handlers stay thin: read, admit, run the stages in
//! [`crate`]'s order, render.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use providers::ChatOutput;
use wire::anthropic::{MessagesRequest, chat_from_messages_request, messages_response_from_chat};
use wire::openai::{ChatRequest, EmbeddingsRequest, ModelEntry, ModelList};

use crate::account::{self, Account, Wants};
use crate::admission::{parse, read_body, validate_chat, validate_embeddings};
use crate::egress::Bytestream;
use crate::error::GatewayError;
use crate::llm::{self, Ask, Opened, Served};
use crate::log::{self, Trace};
use crate::settle;
use crate::state::Gateway;
use crate::{edge, egress, embeddings, moderation, stages};

pub type Shared = Arc<Gateway>;

const X_PROVIDER: HeaderName = HeaderName::from_static("x-gateway-provider");
const X_MODEL: HeaderName = HeaderName::from_static("x-gateway-model");
const X_FALLBACK: HeaderName = HeaderName::from_static("x-gateway-fallback-reason");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
const X_RULE: HeaderName = HeaderName::from_static("x-gateway-rule");
const X_COST: HeaderName = HeaderName::from_static("x-gateway-cost-usd");

fn with_cost(mut resp: Response, cost: billing::Picos) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
        resp.headers_mut().insert(X_COST, v);
    }
    resp
}

fn with_headers(mut resp: Response, extra: axum::http::HeaderMap) -> Response {
    resp.headers_mut().extend(extra);
    resp
}

/// The log row learns who called and what they asked for (the body only where the API opts in).
fn traced(
    parts: &axum::http::request::Parts,
    caller: &edge::Caller,
    model: &str,
    stream: bool,
    body: &[u8],
) -> Option<Trace> {
    let trace = Trace::of(parts)?;
    let bodies = caller.api.settings.log;
    trace.set(|r| {
        r.consumer_id.clone_from(&caller.consumer_id);
        r.key_id = caller.key.as_ref().map(|k| k.id.clone());
        r.model_requested = Some(model.to_string());
        r.stream = stream;
        if bodies.bodies {
            r.request_body = Some(log::capped_body(body, bodies.max_body_bytes));
        }
    });
    Some(trace)
}

/// The stages' verdicts in the log row: moderation flags or blocks and hook outcomes. Written
/// before any later span is appended to `hooks` (the function backend's, the post-hook's).
fn trace_marks(trace: &Option<Trace>, marks: &stages::Marks) {
    let Some(t) = trace else { return };
    let moderation = marks.moderation();
    if moderation.is_none() && marks.outcomes.is_empty() && marks.rag.is_empty() {
        return;
    }
    t.set(|r| {
        if !marks.rag.is_empty() {
            r.rag_sources = Some(knowledge::retrieve::sources(&marks.rag).join(", "));
        }
        if moderation.is_some() {
            r.moderation = moderation;
        }
        if !marks.outcomes.is_empty() {
            r.hooks = serde_json::to_string(&marks.outcomes).ok();
        }
    });
}

/// A non-streamed response body, where the API opts in to bodies in the log.
fn trace_response(trace: &Option<Trace>, caller: &edge::Caller, body: &[u8]) {
    let bodies = caller.api.settings.log;
    if let Some(t) = trace.as_ref().filter(|_| bodies.bodies) {
        t.set(|r| r.response_body = Some(log::capped_body(body, bodies.max_body_bytes)));
    }
}

/// What admission needs to know of a chat request.
fn wants(chat: &ChatRequest) -> Wants<'_> {
    Wants {
        model: &chat.model,
        prompt_tokens: &|| 0,
        max_output: chat
            .max_completion_tokens
            .or(chat.max_tokens)
            .map(u64::from),
        stream: chat.is_stream(),
        free: false,
    }
}

/// Runs the non-streaming LLM call, settling the account either way.
async fn complete(
    gw: &Gateway,
    snap: &crate::Snapshot,
    chat: &ChatRequest,
    ask: &Ask,
    account: Account,
) -> Result<(Served<ChatOutput>, billing::Picos), GatewayError> {
    match llm::complete(snap, &gw.health, chat, ask).await {
        Ok(served) => {
            let usage = served.value.usage();
            let cost = settle::record(gw, account, &snap.prices, &served, &chat.model, usage);
            Ok((served, cost))
        }
        Err(e) => {
            settle::failed(gw, account, e.parts().0.as_u16());
            Err(e)
        }
    }
}

fn with_route<T>(mut resp: Response, served: &Served<T>) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&served.provider) {
        h.insert(X_PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&served.model) {
        h.insert(X_MODEL, v);
    }
    if let Some(reason) = served.fallback {
        h.insert(X_FALLBACK, HeaderValue::from_static(reason.as_str()));
    }
    h.insert(X_ATTEMPTS, HeaderValue::from(served.calls()));
    if let Some(v) = served
        .rule
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok())
    {
        h.insert(X_RULE, v);
    }
    resp
}

fn json_bytes(body: impl Into<Body>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn sse(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn ready(gw: &Gateway) -> Result<(), GatewayError> {
    if gw.is_ready() {
        Ok(())
    } else {
        Err(GatewayError::NotReady)
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(gw): State<Shared>,
    req: Request,
) -> Result<Response, GatewayError> {
    ready(&gw)?;
    let snap = gw.snapshot();
    let (parts, body) = req.into_parts();
    let caller = edge::admit(&gw, &snap, &parts).await?;
    let body = read_body(body, gw.limits.max_body_bytes).await?;
    let chat: ChatRequest = parse(&body)?;
    let trace = traced(&parts, &caller, &chat.model, chat.is_stream(), &body);
    let want_usage = chat.include_usage();
    let format = Format::OpenAi { want_usage };
    serve_chat(gw, snap, parts, caller, chat, format, trace).await
}

/// Admission, the stages around the model ([`crate::stages`]), the model (or the API's
/// function), output moderation and the post-hook, for either ingress format.
async fn serve_chat(
    gw: Shared,
    snap: Arc<crate::Snapshot>,
    parts: axum::http::request::Parts,
    caller: edge::Caller,
    mut chat: ChatRequest,
    format: Format,
    trace: Option<Trace>,
) -> Result<Response, GatewayError> {
    validate_chat(&chat)?;
    caller.check_model(&chat.model)?;
    let mut ask = Ask::chat(&chat, &parts.headers)?;
    let request_id = edge::request_id_of(&parts);
    let count = || account::chat_prompt_tokens(&chat);
    let mut account = account::admit(
        &gw,
        &snap,
        &caller,
        &request_id,
        &Wants {
            prompt_tokens: &count,
            ..wants(&chat)
        },
    )
    .await?;
    account.trace = trace.clone();
    let limits = std::mem::take(&mut account.rate_headers);
    let mut marks = stages::Marks::default();
    let before = stages::before(
        &gw,
        &snap,
        &caller,
        &request_id,
        &parts.headers,
        &mut chat,
        &mut marks,
    )
    .await;
    trace_marks(&trace, &marks);
    if let Err(e) = before {
        settle::failed(&gw, account, e.parts().0.as_u16());
        return Err(e);
    }
    if caller.api.settings.function.is_some() {
        return crate::backend::serve(
            gw.clone(),
            snap,
            &caller,
            &request_id,
            &parts.headers,
            &chat,
            account,
            marks,
            matches!(format, Format::Anthropic),
        )
        .await
        .map(|r| with_headers(r, limits));
    }
    ask.needs = llm::needs(&chat);
    let post =
        stages::PostHook::new(&caller, &request_id, &chat).map(|p| p.with_trace(trace.clone()));
    if chat.is_stream() {
        let around = Around {
            moderation: caller.api.settings.moderation.clone().filter(|m| m.output),
            flagged: marks.flagged.clone(),
            // Built only when a post-hook will read it: a disabled stage costs nothing.
            marks: if post.is_some() {
                stages::marks_json(&marks)
            } else {
                serde_json::Value::Null
            },
            post,
        };
        return stream_reply(&gw, snap, chat, ask, format, account, around)
            .await
            .map(|r| with_headers(with_headers(r, marks.headers()), limits));
    }
    let (served, cost) = complete(&gw, &snap, &chat, &ask, account).await?;
    let completion = match format {
        Format::Anthropic => Some(served.value.clone().into_completion(&served.provider)?),
        Format::OpenAi { .. } => None,
    };
    let checked = if caller
        .api
        .settings
        .moderation
        .as_ref()
        .is_some_and(|m| m.output)
    {
        let text = answer_text(&served.value, &served.provider);
        stages::check_output(&gw, &snap, &caller, &text, &mut marks).await
    } else {
        Ok(())
    };
    // The row gets the stages' marks (a block's too) before the post-hook may add its own entry
    // to `hooks`.
    trace_marks(&trace, &marks);
    checked?;
    if let Some(p) = post {
        p.spawn(
            gw.clone(),
            &snap,
            Some(&served.provider),
            served.value.usage(),
            200,
            stages::marks_json(&marks),
        );
    }
    let bytes: bytes::Bytes = match (&served.value, completion) {
        (_, Some(c)) => {
            let out = messages_response_from_chat(&c, &chat.model);
            serde_json::to_vec(&out)
                .map_err(|_| GatewayError::Internal)?
                .into()
        }
        (ChatOutput::Raw { body, .. }, None) => body.clone(),
        (ChatOutput::Completion(c), None) => serde_json::to_vec(c)
            .map_err(|_| GatewayError::Internal)?
            .into(),
    };
    trace_response(&trace, &caller, &bytes);
    let resp = json_bytes(bytes);
    Ok(with_headers(
        with_headers(with_cost(with_route(resp, &served), cost), marks.headers()),
        limits,
    ))
}

/// The answer's text, for output moderation.
fn answer_text(out: &ChatOutput, provider: &str) -> String {
    match out.clone().into_completion(provider) {
        Ok(c) => c
            .choices
            .iter()
            .filter_map(|c| c.message.content.as_deref())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => String::new(),
    }
}

/// What a stream carries besides the model's chunks: output moderation and the post-hook.
struct Around {
    moderation: Option<access::stages::ModerationSettings>,
    /// Input moderation's flags, merged with the output's for the log row and the post-hook.
    flagged: Vec<String>,
    post: Option<stages::PostHook>,
    marks: serde_json::Value,
}

/// The consumer's stream format.
#[derive(Clone, Copy)]
enum Format {
    OpenAi { want_usage: bool },
    Anthropic,
}

/// Opens the stream; if its first token is slow, commits the response and keeps it alive
/// with SSE comments while the router keeps trying (errors then arrive as an error event).
async fn stream_reply(
    gw: &Shared,
    snap: Arc<crate::Snapshot>,
    chat: ChatRequest,
    ask: Ask,
    format: Format,
    account: Account,
    around: Around,
) -> Result<Response, GatewayError> {
    let requested = chat.model.clone();
    let trace = account.trace.clone();
    let around = Arc::new(std::sync::Mutex::new(Some(around)));
    let snap2 = snap.clone();
    // The account goes to whichever of the stream's end hook and a failure to open takes it.
    let slot = Arc::new(std::sync::Mutex::new(Some(account)));
    let (gw2, prices, slot2) = (gw.clone(), snap.prices.clone(), slot.clone());
    let render = move |served: Served<Opened>| -> (Bytestream, Served<()>) {
        if let Some(t) = &trace {
            t.first_token();
        }
        let taken = slot2.lock().ok().and_then(|mut a| a.take());
        let on_end: egress::OnEnd = match taken {
            Some(account) => {
                settle::on_stream_end(gw2.clone(), account, prices.clone(), &served, &requested)
            }
            None => Box::new(|_| None),
        };
        let around = around.lock().ok().and_then(|mut a| a.take());
        let ((first, mut rest), served) = served.split();
        let flags: moderation::StreamFlags = Default::default();
        let mut post = None;
        let mut marks = serde_json::Value::Null;
        let mut flagged = Vec::new();
        if let Some(a) = around {
            if let Some(m) = a.moderation {
                rest = moderation::watch_stream(
                    gw2.clone(),
                    snap2.clone(),
                    m,
                    &first,
                    rest,
                    flags.clone(),
                );
            }
            post = a.post;
            marks = a.marks;
            flagged = a.flagged;
        }
        let (gw3, snap3, provider) = (gw2.clone(), snap2.clone(), served.provider.clone());
        let trace = trace.clone();
        let on_end: egress::OnEnd = Box::new(move |end| {
            let trailer = on_end(end);
            let flag = moderation::flag_comment(&flags);
            let verdict = flags.lock().map(|f| f.clone()).unwrap_or_default();
            moderation::merge(&mut flagged, verdict.flagged);
            // What the windows found joins the row (after settlement, whose `stream_cut` a
            // moderation stop replaces with its own code).
            let found = moderation::verdict_value(&flagged, &verdict.blocked);
            if let Some(t) = trace.as_ref()
                && (found.is_some() || verdict.stopped.is_some())
            {
                t.set(|r| {
                    if found.is_some() {
                        r.moderation = found;
                    }
                    if let Some(code) = verdict.stopped {
                        r.error = Some(code.into());
                    }
                });
            }
            if let Some(p) = post {
                let mut marks = marks;
                if !flagged.is_empty() {
                    marks["moderation"] = serde_json::json!(flagged);
                }
                let status = if end.complete { 200 } else { 502 };
                p.spawn(gw3, &snap3, Some(&provider), end.usage, status, marks);
            }
            match (trailer, flag) {
                (Some(t), Some(f)) => Some(bytes::Bytes::from([f, t].concat())),
                (t, f) => t.or(f),
            }
        });
        let body: Bytestream = match format {
            Format::OpenAi { want_usage } => {
                Box::pin(egress::openai(first, rest, want_usage, on_end))
            }
            Format::Anthropic => Box::pin(egress::anthropic(
                first,
                rest,
                &requested,
                &served.provider,
                on_end,
            )),
        };
        (body, served)
    };
    let error_event = match format {
        Format::OpenAi { .. } => egress::openai_error,
        Format::Anthropic => egress::anthropic_error,
    };
    let mut opening: egress::Opening<Served<Opened>> = Box::pin(llm::open_stream(
        snap,
        gw.health.clone(),
        Arc::new(chat),
        Arc::new(ask),
    ));
    match tokio::time::timeout(gw.limits.sse_keepalive, &mut opening).await {
        Ok(Ok(served)) => {
            let (body, served) = render(served);
            Ok(with_route(sse(Body::from_stream(body)), &served))
        }
        Ok(Err(e)) => {
            if let Some(account) = slot.lock().ok().and_then(|mut a| a.take()) {
                settle::failed(gw, account, e.parts().0.as_u16());
            }
            Err(e)
        }
        Err(_) => {
            let body = egress::late(
                opening,
                gw.limits.sse_keepalive,
                move |served| render(served).0,
                error_event,
            );
            Ok(sse(Body::from_stream(body)))
        }
    }
}

/// `POST /v1/messages`: Anthropic's format in and out, served by any provider.
pub async fn messages(State(gw): State<Shared>, req: Request) -> Response {
    match messages_inner(gw, req).await {
        Ok(r) => r,
        Err(e) => e.into_anthropic_response(),
    }
}

async fn messages_inner(gw: Shared, req: Request) -> Result<Response, GatewayError> {
    ready(&gw)?;
    let snap = gw.snapshot();
    let (parts, body) = req.into_parts();
    let caller = edge::admit(&gw, &snap, &parts).await?;
    let body = read_body(body, gw.limits.max_body_bytes).await?;
    let m: MessagesRequest = parse(&body)?;
    let trace = traced(&parts, &caller, &m.model, m.stream.unwrap_or(false), &body);
    let chat =
        chat_from_messages_request(&m).map_err(|e| GatewayError::invalid(e.to_string(), None))?;
    serve_chat(gw, snap, parts, caller, chat, Format::Anthropic, trace).await
}

/// `POST /v1/embeddings`
pub async fn create_embeddings(
    State(gw): State<Shared>,
    req: Request,
) -> Result<Response, GatewayError> {
    ready(&gw)?;
    let snap = gw.snapshot();
    let (parts, body) = req.into_parts();
    let caller = edge::admit(&gw, &snap, &parts).await?;
    let body = read_body(body, gw.limits.max_body_bytes).await?;
    let e: EmbeddingsRequest = parse(&body)?;
    let trace = traced(&parts, &caller, &e.model, false, &body);
    validate_embeddings(&e)?;
    caller.check_model(&e.model)?;
    let ask = Ask::embeddings(&e, &parts.headers)?;
    let count = || {
        e.input
            .texts()
            .map_or(0, |t| t.iter().map(|s| billing::tokens::count(s)).sum())
    };
    let mut account = account::admit(
        &gw,
        &snap,
        &caller,
        &edge::request_id_of(&parts),
        &Wants {
            model: &e.model,
            prompt_tokens: &count,
            max_output: Some(0),
            stream: false,
            free: false,
        },
    )
    .await?;
    account.trace = trace;
    let limits = std::mem::take(&mut account.rate_headers);
    let mut served = match llm::embed(&snap, &gw.health, &e, &ask).await {
        Ok(s) => s,
        Err(err) => {
            settle::failed(&gw, account, err.parts().0.as_u16());
            return Err(err);
        }
    };
    if e.encoding_format.as_deref() == Some("base64") {
        embeddings::to_base64(&mut served.value);
    }
    let usage = wire::openai::Usage::new(served.value.usage.prompt_tokens, 0, None);
    let cost = settle::record(&gw, account, &snap.prices, &served, &e.model, Some(usage));
    let bytes = serde_json::to_vec(&served.value).map_err(|_| GatewayError::Internal)?;
    Ok(with_headers(
        with_cost(with_route(json_bytes(bytes), &served), cost),
        limits,
    ))
}

/// `GET /v1/models`: aliases, then every model a provider lists, also as `provider/model`;
/// for a key scoped to models, only those.
pub async fn list_models(State(gw): State<Shared>, req: Request) -> Result<Response, GatewayError> {
    ready(&gw)?;
    let snap = gw.snapshot();
    let (parts, _) = req.into_parts();
    let caller = edge::admit(&gw, &snap, &parts).await?;
    let mut data: Vec<ModelEntry> = Vec::new();
    let entry = |id: String, owner: &str| ModelEntry {
        id,
        object: "model".into(),
        created: 0,
        owned_by: owner.to_string(),
    };
    let mut aliases: Vec<_> = snap.table.routes().map(|r| r.name.clone()).collect();
    aliases.sort();
    data.extend(aliases.into_iter().map(|a| entry(a, "gateway")));
    for p in snap.table.providers() {
        for m in &p.models {
            if !data.iter().any(|d| &d.id == m) {
                data.push(entry(m.clone(), &p.name));
            }
            data.push(entry(format!("{}/{m}", p.name), &p.name));
        }
    }
    data.retain(|m| caller.check_model(&m.id).is_ok());
    let body = ModelList {
        object: "list".into(),
        data,
    };
    Ok(json_bytes(serde_json::to_vec(&body).unwrap_or_default()))
}

pub async fn healthz() -> Response {
    json_bytes(&br#"{"status":"ok"}"#[..])
}

/// Ready: configuration loaded, not shutting down, and the store answers within a second.
pub async fn readyz(State(gw): State<Shared>) -> Response {
    if !gw.is_ready() || gw.is_draining() {
        return GatewayError::NotReady.into_response();
    }
    if let Some(store) = &gw.store {
        let answered = tokio::time::timeout(std::time::Duration::from_secs(1), store.ping()).await;
        if !matches!(answered, Ok(Ok(()))) {
            return GatewayError::NotReady.into_response();
        }
    }
    json_bytes(&br#"{"status":"ready"}"#[..])
}

pub async fn not_found() -> GatewayError {
    GatewayError::InvalidRequest {
        message: "Unknown route.".into(),
        param: None,
    }
}

/// `POST /v1/moderations`: the API's configured classifier (the built-in rules when it has
/// none) in OpenAI's moderation format. The same edge and admission as every `/v1` call (IP
/// rules, auth, the subscription's status, RPM limits, `x-ratelimit-*`, a log row); nothing is
/// charged and no usage is recorded; a failing classifier is 503.
pub async fn moderations(State(gw): State<Shared>, req: Request) -> Result<Response, GatewayError> {
    ready(&gw)?;
    let snap = gw.snapshot();
    let (parts, body) = req.into_parts();
    let caller = edge::admit(&gw, &snap, &parts).await?;
    let body = read_body(body, gw.limits.max_body_bytes).await?;
    let v: serde_json::Value = parse(&body)?;
    let settings = caller.api.settings.moderation.clone().unwrap_or_else(|| {
        access::stages::ModerationSettings {
            classifier: access::stages::Classifier::Rules,
            categories: vec![],
            threshold: 0.5,
            mode: access::stages::ModerationMode::Flag,
            fail_closed: false,
            input: true,
            output: false,
            timeout_ms: 2000,
        }
    });
    let model = match &settings.classifier {
        access::stages::Classifier::Rules => "gateway-rules".to_string(),
        access::stages::Classifier::Openai { model, .. } => model
            .clone()
            .unwrap_or_else(|| "omni-moderation-latest".into()),
        access::stages::Classifier::Llm { model, .. }
        | access::stages::Classifier::Embedding { model } => model.clone(),
    };
    let _trace = traced(&parts, &caller, &model, false, &body);
    let inputs: Vec<String> = match &v["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other["text"].as_str().map(str::to_string),
            })
            .collect(),
        _ => vec![],
    };
    if inputs.is_empty() {
        return Err(GatewayError::invalid(
            "`input` must be a string or a list of strings or text parts.",
            Some("input"),
        ));
    }
    // Never settled: dropping it after the answer releases nothing, since nothing was held.
    let mut account = account::admit(
        &gw,
        &snap,
        &caller,
        &edge::request_id_of(&parts),
        &Wants {
            model: &model,
            prompt_tokens: &|| 0,
            max_output: Some(0),
            stream: false,
            free: true,
        },
    )
    .await?;
    let limits = std::mem::take(&mut account.rate_headers);
    let mut results = Vec::with_capacity(inputs.len());
    for text in &inputs {
        let verdict = moderation::classify(&snap, &gw.health, &settings, text)
            .await
            .map_err(|e| {
                moderation::failed(&gw, "moderations", &e);
                GatewayError::ModerationUnavailable
            })?;
        results.push(moderation::openai_result(&verdict));
    }
    let out = serde_json::json!({
        "id": format!("modr-{}", edge::request_id_of(&parts)),
        "model": model,
        "results": results,
    });
    Ok(with_headers(
        json_bytes(serde_json::to_vec(&out).map_err(|_| GatewayError::Internal)?),
        limits,
    ))
}
