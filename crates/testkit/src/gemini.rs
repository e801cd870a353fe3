//! The Gemini API emulator (generativelanguage `v1beta`):
//! - `POST /v1beta/models/{model}:generateContent`
//! - `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (without `alt=sse`: one JSON
//!   array, as the real API answers)
//! - `POST /v1beta/models/{model}:embedContent` and `:batchEmbedContents`
//! - `GET /v1beta/models`
//!
//! The key comes in `x-goog-api-key` or `?key=`. Errors use Google's body
//! `{"error":{"code","message","status"}}`. The answer echoes the last user text
//! ([`reply::words`]); with tools declared it is a function call instead, until the last user
//! turn carries a function response.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use wire::gemini::{
    BatchEmbedContentsRequest, BatchEmbedContentsResponse, Candidate, Content, ContentEmbedding,
    EmbedContentRequest, EmbedContentResponse, ErrorResponse, FunctionCall, GenerateContentRequest,
    GenerateContentResponse, ListModelsResponse, ModelInfo, Part, UsageMetadata,
};

use crate::emulator::{self, ErrorSpec, Fault, Matching, Shared, Vendor};
use crate::reply;

/// What `outputDimensionality` defaults to, as for `text-embedding-004`.
const DEFAULT_DIMS: usize = 768;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1beta/models", get(list_models))
        .route("/v1beta/models/{*rest}", post(model_method))
}

type Params = Query<HashMap<String, String>>;

async fn model_method(
    State(s): State<Shared>,
    Path(rest): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let attempt = s.record(
        Vendor::Gemini,
        &format!("/v1beta/models/{rest}"),
        &headers,
        &body,
    );
    attempt.track(call_model_method(s, rest, q, headers, body).await)
}

async fn call_model_method(
    s: Shared,
    rest: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = check_key(&s, &headers, &q) {
        return denied;
    }
    let Some((model, method)) = rest.rsplit_once(':') else {
        return error(404, format!("Method not found: models/{rest}"));
    };
    match method {
        "generateContent" => generate(&s, model, &body, Shape::Whole).await,
        "streamGenerateContent" if q.get("alt").is_some_and(|a| a == "sse") => {
            generate(&s, model, &body, Shape::Sse).await
        }
        "streamGenerateContent" => generate(&s, model, &body, Shape::Array).await,
        "embedContent" => embed(&s, model, &body, false).await,
        "batchEmbedContents" => embed(&s, model, &body, true).await,
        other => error(404, format!("Method not found: {other}")),
    }
}

/// No key is a 403; a wrong one a 400 `API_KEY_INVALID`, as Google answers.
fn check_key(s: &Shared, headers: &HeaderMap, q: &HashMap<String, String>) -> Option<Response> {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(q.get("key").map(String::as_str));
    match key {
        Some(k) if k == s.config.api_key => None,
        Some(_) => {
            let mut e = ErrorResponse::new(400, "API key not valid. Please pass a valid API key.");
            e.error.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            }));
            Some(error_body(&e, &[]))
        }
        None => Some(error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        )),
    }
}

fn error(status: u16, message: impl Into<String>) -> Response {
    error_body(&ErrorResponse::new(status, message), &[])
}

fn error_body(e: &ErrorResponse, headers: &[(&str, String)]) -> Response {
    let body = serde_json::to_value(e).unwrap_or(Value::Null);
    emulator::json_response(e.error.code, headers, &body)
}

/// A scripted `Status` fault: Google's body, plus `RetryInfo` and `retry-after` when a delay
/// is given. `error_type` replaces `error.status`; a `code` becomes an `ErrorInfo` reason (and
/// picks Google's wording when it is a known one).
fn fault_response(f: &ErrorSpec<'_>) -> Response {
    let message = f
        .message
        .or(f.code.and_then(code_message))
        .unwrap_or_else(|| default_message(f.status));
    let mut e = ErrorResponse::new(f.status, message);
    if let Some(status) = f.error_type {
        e.error.status = status.to_string();
    }
    if let Some(code) = f.code {
        e.error.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": code,
            "domain": "generativelanguage.googleapis.com"
        }));
    }
    if let Some(secs) = f.retry_after {
        e.error.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s")
        }));
    }
    let mut headers = Vec::new();
    f.retry_headers(&mut headers);
    error_body(&e, &headers)
}

/// Google's wording for what OpenAI names with an error `code`.
fn code_message(code: &str) -> Option<&'static str> {
    match code {
        "context_length_exceeded" => Some(
            "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
        ),
        "content_policy_violation" | "content_filter" => {
            Some("The request was blocked because it violates the content policy (SAFETY).")
        }
        _ => None,
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        400 => "Request contains an invalid argument.",
        403 => "The caller does not have permission",
        404 => "Requested entity was not found.",
        429 => "Resource has been exhausted (e.g. check quota).",
        503 => "The model is overloaded. Please try again later.",
        504 => "Deadline expired before operation could complete.",
        _ => "An internal error has occurred.",
    }
}

/// How a generate answer goes out.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Whole,
    Sse,
    Array,
}

async fn generate(s: &Shared, model: &str, body: &[u8], shape: Shape) -> Response {
    let req: GenerateContentRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(400, format!("Invalid JSON payload received. {e}")),
    };
    if req.contents.is_empty() {
        return error(
            400,
            "* GenerateContentRequest.contents: contents is not specified\n",
        );
    }
    let m = Matching {
        vendor: Vendor::Gemini,
        model,
        prefill: req
            .contents
            .last()
            .is_some_and(|c| c.role.as_deref() == Some("model")),
    };
    let fault = match emulator::pre_response(s.take_fault(m)).await {
        Ok(f) => f,
        Err(reset) => return reset,
    };
    if let Some(spec) = fault.as_ref().and_then(Fault::as_status) {
        return fault_response(&spec);
    }
    if fault == Some(Fault::RejectPrefill) {
        return error(400, emulator::PREFILL_REFUSED);
    }
    let answer = Answer::new(s, &req);
    let usage = (!matches!(fault, Some(Fault::NoUsage))).then(|| answer.usage());
    let id = format!("emu-gemini-{}", emulator::next_id());
    let events = match shape {
        Shape::Whole => {
            let body = serde_json::to_value(answer.whole(model, &id, usage));
            return emulator::json_response(200, &[], &body.unwrap_or(Value::Null));
        }
        Shape::Sse | Shape::Array => answer.events(model, &id, usage),
    };
    if shape == Shape::Array {
        let body = serde_json::to_value(&events).unwrap_or(Value::Null);
        return emulator::json_response(200, &[], &body);
    }
    let events = events
        .iter()
        .map(|e| wire::sse::data_event(&serde_json::to_vec(e).unwrap_or_default()))
        .collect();
    emulator::sse_body(events, fault)
}

/// The deterministic answer to one request.
struct Answer {
    /// Echoed words, or a function call.
    reply: Reply,
    finish: &'static str,
    prompt_tokens: u64,
    cached: bool,
}

enum Reply {
    Words(Vec<String>),
    Call(FunctionCall),
}

impl Answer {
    fn new(s: &Shared, req: &GenerateContentRequest) -> Self {
        let prompt = last_user_text(req);
        let prompt_tokens = all_text(req).iter().map(|t| reply::count_tokens(t)).sum();
        let cached = req.cached_content.is_some();
        if let Some(name) = function_to_call(req) {
            let call = FunctionCall {
                id: None,
                name,
                args: Some(json!({ "input": prompt })),
            };
            return Answer {
                reply: Reply::Call(call),
                finish: "STOP",
                prompt_tokens,
                cached,
            };
        }
        let max = req
            .generation_config
            .as_ref()
            .and_then(|g| g.max_output_tokens);
        let mut words = reply::words(&prompt, s.answer_len(max));
        let json_mode = req
            .generation_config
            .as_ref()
            .and_then(|g| g.response_mime_type.as_deref())
            == Some("application/json");
        if json_mode {
            words = vec![json!({"echo": words.join(" ")}).to_string()];
        }
        let natural = reply::words(&prompt, None).len();
        let cut = max.is_some_and(|m| (m as usize) < natural);
        Answer {
            reply: Reply::Words(words),
            finish: if cut { "MAX_TOKENS" } else { "STOP" },
            prompt_tokens,
            cached,
        }
    }

    fn usage(&self) -> UsageMetadata {
        let completion = match &self.reply {
            Reply::Words(w) => w.len() as u64,
            Reply::Call(c) => {
                let args = c.args.as_ref().map(Value::to_string).unwrap_or_default();
                reply::count_tokens(&args).max(1)
            }
        };
        UsageMetadata {
            prompt_token_count: Some(self.prompt_tokens),
            cached_content_token_count: self.cached.then_some(self.prompt_tokens / 2),
            candidates_token_count: Some(completion),
            total_token_count: Some(self.prompt_tokens + completion),
            ..Default::default()
        }
    }

    /// The streamed events: one per word piece (or the call), the last with the finish reason
    /// and usage.
    fn events(
        &self,
        model: &str,
        id: &str,
        usage: Option<UsageMetadata>,
    ) -> Vec<GenerateContentResponse> {
        let parts: Vec<Part> = match &self.reply {
            Reply::Words(w) => reply::pieces(w).into_iter().map(Part::text).collect(),
            Reply::Call(c) => vec![call_part(c)],
        };
        let last = parts.len().saturating_sub(1);
        let mut usage = usage;
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let (finish, usage) = if i == last {
                    (Some(self.finish), usage.take())
                } else {
                    (None, None)
                };
                response(vec![p], finish, usage, model, id)
            })
            .collect()
    }

    fn whole(
        &self,
        model: &str,
        id: &str,
        usage: Option<UsageMetadata>,
    ) -> GenerateContentResponse {
        let part = match &self.reply {
            Reply::Words(w) => Part::text(w.join(" ")),
            Reply::Call(c) => call_part(c),
        };
        response(vec![part], Some(self.finish), usage, model, id)
    }
}

fn call_part(c: &FunctionCall) -> Part {
    Part {
        function_call: Some(c.clone()),
        ..Default::default()
    }
}

fn response(
    parts: Vec<Part>,
    finish: Option<&str>,
    usage: Option<UsageMetadata>,
    model: &str,
    id: &str,
) -> GenerateContentResponse {
    GenerateContentResponse {
        candidates: vec![Candidate {
            content: Some(Content {
                role: Some("model".into()),
                parts,
            }),
            finish_reason: finish.map(str::to_string),
            index: Some(0),
            ..Default::default()
        }],
        usage_metadata: usage,
        model_version: Some(model.to_string()),
        response_id: Some(id.to_string()),
        ..Default::default()
    }
}

/// A content with no role is a user turn (single-turn requests often omit it).
fn is_user(c: &Content) -> bool {
    c.role.as_deref().is_none_or(|r| r == "user")
}

fn texts(c: &Content) -> impl Iterator<Item = &str> {
    c.parts.iter().filter_map(|p| p.text.as_deref())
}

fn last_user_text(req: &GenerateContentRequest) -> String {
    req.contents
        .iter()
        .rev()
        .filter(|c| is_user(c))
        .find(|c| texts(c).next().is_some())
        .map(|c| texts(c).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn all_text(req: &GenerateContentRequest) -> Vec<&str> {
    req.system_instruction
        .iter()
        .chain(&req.contents)
        .flat_map(texts)
        .collect()
}

/// The function to call, if the model should call one: tools declared, calling not switched
/// off, and no function response yet in the last user turn.
fn function_to_call(req: &GenerateContentRequest) -> Option<String> {
    let declared: Vec<&str> = req
        .tools
        .iter()
        .flatten()
        .flat_map(|t| t.function_declarations.iter().flatten())
        .map(|d| d.name.as_str())
        .collect();
    let config = req
        .tool_config
        .as_ref()
        .and_then(|t| t.function_calling_config.as_ref());
    if config.and_then(|c| c.mode.as_deref()) == Some("NONE") {
        return None;
    }
    let last_user = req.contents.iter().rev().find(|c| is_user(c))?;
    if last_user
        .parts
        .iter()
        .any(|p| p.function_response.is_some())
    {
        return None;
    }
    let allowed = config
        .and_then(|c| c.allowed_function_names.as_ref())
        .and_then(|names| names.first());
    allowed
        .map(String::as_str)
        .or(declared.first().copied())
        .map(str::to_string)
}

async fn embed(s: &Shared, model: &str, body: &[u8], batch: bool) -> Response {
    let requests = if batch {
        serde_json::from_slice::<BatchEmbedContentsRequest>(body).map(|b| b.requests)
    } else {
        serde_json::from_slice::<EmbedContentRequest>(body).map(|r| vec![r])
    };
    let requests = match requests {
        Ok(r) => r,
        Err(e) => return error(400, format!("Invalid JSON payload received. {e}")),
    };
    if requests.is_empty() {
        return error(
            400,
            "* BatchEmbedContentsRequest.requests: requests is not specified\n",
        );
    }
    // In a batch every entry names its model, and it must be the one in the path.
    let path_model = format!("models/{model}");
    if let Some(other) = requests
        .iter()
        .filter_map(|r| r.model.as_deref())
        .find(|m| *m != path_model)
    {
        return error(
            400,
            format!("Model {other} in the request does not match the model {path_model}"),
        );
    }
    let m = Matching {
        vendor: Vendor::Gemini,
        model,
        prefill: false,
    };
    let fault = match emulator::pre_response(s.take_fault(m)).await {
        Ok(f) => f,
        Err(reset) => return reset,
    };
    if let Some(spec) = fault.as_ref().and_then(Fault::as_status) {
        return fault_response(&spec);
    }
    let embeddings: Vec<ContentEmbedding> = requests
        .iter()
        .map(|r| {
            let text = texts(&r.content).collect::<Vec<_>>().join(" ");
            let dims = r.output_dimensionality.map_or(DEFAULT_DIMS, |d| d as usize);
            ContentEmbedding {
                values: reply::embedding(&text, dims)
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            }
        })
        .collect();
    let body = if batch {
        serde_json::to_value(BatchEmbedContentsResponse { embeddings })
    } else {
        let embedding = embeddings.into_iter().next().unwrap_or_default();
        serde_json::to_value(EmbedContentResponse { embedding })
    };
    emulator::json_response(200, &[], &body.unwrap_or(Value::Null))
}

async fn list_models(State(s): State<Shared>, Query(q): Params, headers: HeaderMap) -> Response {
    let attempt = s.record(Vendor::Gemini, "/v1beta/models", &headers, b"");
    attempt.track(models(&s, &q, &headers))
}

fn models(s: &Shared, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    if let Some(denied) = check_key(s, headers, q) {
        return denied;
    }
    let chat = ["generateContent", "countTokens", "createCachedContent"];
    let embed = ["embedContent", "batchEmbedContents"];
    let models = [
        (
            "gemini-2.5-flash",
            "Gemini 2.5 Flash",
            &chat[..],
            1_048_576,
            65_536,
        ),
        (
            "gemini-2.5-pro",
            "Gemini 2.5 Pro",
            &chat[..],
            1_048_576,
            65_536,
        ),
        (
            "gemini-2.0-flash",
            "Gemini 2.0 Flash",
            &chat[..],
            1_048_576,
            8_192,
        ),
        (
            "gemini-embedding-001",
            "Gemini Embedding 001",
            &embed[..],
            2_048,
            1,
        ),
    ];
    let list = ListModelsResponse {
        models: models
            .iter()
            .map(|(id, display, methods, input, output)| ModelInfo {
                name: format!("models/{id}"),
                base_model_id: Some(id.to_string()),
                version: Some("001".into()),
                display_name: Some(display.to_string()),
                description: Some(format!("{display} (emulated)")),
                input_token_limit: Some(*input),
                output_token_limit: Some(*output),
                supported_generation_methods: methods.iter().map(|m| m.to_string()).collect(),
                ..Default::default()
            })
            .collect(),
        next_page_token: None,
    };
    let body = serde_json::to_value(list).unwrap_or(Value::Null);
    emulator::json_response(200, &[], &body)
}
