//! OpenAI (and Azure OpenAI) emulator: chat completions with streaming and tool calls,
//! embeddings (float and base64), the model list, OpenAI's error bodies and rate-limit headers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use wire::openai::{ChatRequest, Content, EmbeddingInput, EmbeddingsRequest, Role, ToolChoice};

use crate::emulator::{
    ErrorSpec, Fault, Matching, Shared, Vendor, json_response, next_id, pre_response, sse_body,
};
use crate::reply;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/models", get(openai_models))
        .route(
            "/v1/moderations",
            post(crate::moderation::openai_moderations),
        )
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure_embeddings),
        )
        .route("/openai/models", get(azure_models))
}

#[derive(serde::Deserialize)]
struct AzureQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Azure's answers to a wrong `api-key` (401) and a missing `api-version` (404).
fn azure_gate(s: &Shared, headers: &HeaderMap, q: &AzureQuery) -> Option<Response> {
    if !azure_key_ok(s, headers) {
        return Some(error(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            "invalid_request_error",
            Some("401"),
            None,
        ));
    }
    if q.api_version.is_none() {
        return Some(error(
            404,
            "Resource not found",
            "invalid_request_error",
            Some("404"),
            None,
        ));
    }
    None
}

pub(crate) fn bearer_ok(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == s.config.api_key)
}

fn azure_key_ok(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| k == s.config.api_key)
}

fn error(
    status: u16,
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    json_response(
        status,
        &[("x-request-id", format!("req_{}", next_id()))],
        &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

pub(crate) fn auth_error() -> Response {
    error(
        401,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        Some("invalid_api_key"),
        None,
    )
}

/// The error for a scripted `Status` fault, with the headers OpenAI (or Azure) sends alongside it.
fn fault_response(vendor: Vendor, f: &ErrorSpec<'_>) -> Response {
    let (msg, kind, code) = match f.status {
        429 => (
            "Rate limit reached for requests",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        400 => ("Invalid request", "invalid_request_error", None),
        401 => (
            "Incorrect API key provided",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        _ => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
    };
    let by_code = f.code.and_then(code_wording);
    let msg = f
        .message
        .or(by_code.map(|w| w.message))
        .unwrap_or(msg)
        .to_string();
    // A message about the context window implies its code, as OpenAI pairs them.
    let context_len = message_code_is_context(&msg);
    let code = f
        .code
        .or(context_len.then_some("context_length_exceeded"))
        .or(code);
    let param = by_code
        .and_then(|w| w.param)
        .or(context_len.then_some("messages"));
    let mut headers = vec![("x-request-id", format!("req_{}", next_id()))];
    f.retry_headers(&mut headers);
    if f.status == 429 {
        headers.push(("x-ratelimit-limit-requests", "10000".into()));
        headers.push(("x-ratelimit-remaining-requests", "0".into()));
        headers.push((
            "x-ratelimit-reset-requests",
            format!("{}s", f.retry_after.unwrap_or(1)),
        ));
    }
    let mut body = json!({"error": {"message": msg, "type": f.error_type.unwrap_or(kind), "param": param, "code": code}});
    // Azure says which filter tripped.
    if vendor == Vendor::Azure && code == Some("content_filter") {
        body["error"]["status"] = json!(f.status);
        body["error"]["innererror"] = json!({"code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"hate": {"filtered": false, "severity": "safe"},
                "self_harm": {"filtered": false, "severity": "safe"},
                "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": true, "severity": "high"}}});
    }
    json_response(f.status, &headers, &body)
}

/// OpenAI's (and Azure's) wording for an error `code`.
#[derive(Clone, Copy)]
struct Wording {
    message: &'static str,
    param: Option<&'static str>,
}

fn code_wording(code: &str) -> Option<Wording> {
    let (message, param) = match code {
        "context_length_exceeded" => (
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 128001 tokens. Please reduce the length of the messages.",
            Some("messages"),
        ),
        "content_policy_violation" => (
            "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
            None,
        ),
        "content_filter" => (
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            Some("prompt"),
        ),
        _ => return None,
    };
    Some(Wording { message, param })
}

fn message_code_is_context(msg: &str) -> bool {
    msg.contains("maximum context length")
}

/// What a `RejectPrefill` fault answers.
fn prefill_error() -> Response {
    error(
        400,
        crate::emulator::PREFILL_REFUSED,
        "invalid_request_error",
        None,
        Some("messages"),
    )
}

fn ratelimit_headers() -> Vec<(&'static str, String)> {
    vec![
        ("x-request-id", format!("req_{}", next_id())),
        ("openai-processing-ms", "1".into()),
        ("x-ratelimit-limit-requests", "10000".into()),
        ("x-ratelimit-limit-tokens", "2000000".into()),
        ("x-ratelimit-remaining-requests", "9999".into()),
        ("x-ratelimit-remaining-tokens", "1999000".into()),
        ("x-ratelimit-reset-requests", "6ms".into()),
        ("x-ratelimit-reset-tokens", "30ms".into()),
    ]
}

async fn openai_chat(
    State(s): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&s, &headers) {
        return auth_error();
    }
    let attempt = s.record(Vendor::Openai, uri.path(), &headers, &body);
    attempt.track(chat(s, Vendor::Openai, None, body).await)
}

async fn azure_chat(
    State(s): State<Shared>,
    Path(deployment): Path<String>,
    Query(q): Query<AzureQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = azure_gate(&s, &headers, &q) {
        return refused;
    }
    let attempt = s.record(Vendor::Azure, uri.path(), &headers, &body);
    attempt.track(chat(s, Vendor::Azure, Some(deployment), body).await)
}

async fn chat(s: Shared, vendor: Vendor, deployment: Option<String>, body: Bytes) -> Response {
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let v: Result<Value, _> = serde_json::from_slice(&body);
            let msg = match v {
                Ok(v) if v.get("messages").is_none() => {
                    return error(400, "Missing required parameter: 'messages'.", "invalid_request_error", None, Some("messages"));
                }
                Ok(_) => format!("Invalid request body: {e}"),
                Err(_) => "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.".into(),
            };
            return error(400, &msg, "invalid_request_error", None, None);
        }
    };
    let model = deployment.unwrap_or_else(|| req.model.clone());
    if model.starts_with("missing-") {
        return error(
            404,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
            None,
        );
    }
    if req.messages.is_empty() {
        return error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "invalid_request_error",
            Some("empty_array"),
            Some("messages"),
        );
    }
    let m = Matching {
        vendor,
        model: &model,
        prefill: req
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Assistant),
    };
    let fault = match pre_response(s.take_fault(m)).await {
        Ok(f) => f,
        Err(reset) => return reset,
    };
    if let Some(spec) = fault.as_ref().and_then(Fault::as_status) {
        return fault_response(vendor, &spec);
    }
    if fault == Some(Fault::RejectPrefill) {
        return prefill_error();
    }
    let no_usage = matches!(fault, Some(Fault::NoUsage));
    let answer = Answer::for_request(&s, &req);
    let prompt_tokens = prompt_tokens(&req);
    let cached = req
        .extra
        .contains_key("prompt_cache_key")
        .then_some(prompt_tokens / 2);
    let id = format!("chatcmpl-emu{}", next_id());
    let created = wire::unix_now();
    if req.is_stream() {
        let mut events = stream_events(
            &id,
            created,
            &model,
            &answer,
            &req,
            prompt_tokens,
            cached,
            no_usage,
        );
        if fault == Some(Fault::NoDone) {
            // The last event is `data: [DONE]`.
            events.pop();
        }
        return sse_body(events, fault);
    }
    let (message, finish) = match &answer.tool_call {
        Some((name, args)) => (
            json!({"role": "assistant", "content": null, "refusal": null,
                   "tool_calls": [{"id": format!("call_{id}"), "type": "function", "function": {"name": name, "arguments": args}}]}),
            "tool_calls",
        ),
        None => (
            json!({"role": "assistant", "content": answer.text(), "refusal": null}),
            answer.finish,
        ),
    };
    let mut body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "system_fingerprint": "fp_emulator",
    });
    if !no_usage {
        body["usage"] = usage_json(prompt_tokens, answer.completion_tokens(), cached);
    }
    json_response(200, &ratelimit_headers(), &body)
}

/// What the emulator answers: text words, or one call of a tool.
struct Answer {
    words: Vec<String>,
    tool_call: Option<(String, String)>,
    finish: &'static str,
}

impl Answer {
    fn for_request(s: &Shared, req: &ChatRequest) -> Answer {
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .and_then(|m| m.content.as_ref())
            .map(Content::joined_text)
            .unwrap_or_default();
        let after_tool = req.messages.last().is_some_and(|m| m.role == Role::Tool);
        let tools = req.tools.as_deref().unwrap_or_default();
        let choice_none = matches!(&req.tool_choice, Some(ToolChoice::Mode(m)) if m == "none");
        if !tools.is_empty() && !choice_none && !after_tool {
            let name = match &req.tool_choice {
                Some(ToolChoice::Named(n)) => n.function.name.clone(),
                _ => tools[0].function.name.clone(),
            };
            let args = json!({"input": last_user}).to_string();
            return Answer {
                words: Vec::new(),
                tool_call: Some((name, args)),
                finish: "tool_calls",
            };
        }
        let prompt = if after_tool {
            let tool_text = req
                .messages
                .last()
                .and_then(|m| m.content.as_ref())
                .map(Content::joined_text)
                .unwrap_or_default();
            format!("tool said {tool_text}")
        } else {
            last_user
        };
        let natural = reply::words(&prompt, None).len();
        let cap = s.answer_len(req.max_output_tokens());
        let mut words = reply::words(&prompt, cap);
        let json_mode = req
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind != "text");
        if json_mode {
            words = vec![json!({"echo": words.join(" ")}).to_string()];
        }
        let finish = match cap.cap {
            Some(c) if natural.max(cap.pad_to.unwrap_or(0)) > c => "length",
            _ => "stop",
        };
        Answer {
            words,
            tool_call: None,
            finish,
        }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn completion_tokens(&self) -> u64 {
        match &self.tool_call {
            Some((_, args)) => reply::count_tokens(args).max(1),
            None => self.words.len() as u64,
        }
    }
}

fn prompt_tokens(req: &ChatRequest) -> u64 {
    req.messages
        .iter()
        .filter_map(|m| m.content.as_ref())
        .map(|c| reply::count_tokens(&c.joined_text()))
        .sum::<u64>()
        .max(1)
}

fn usage_json(prompt: u64, completion: u64, cached: Option<u64>) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached.unwrap_or(0), "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename these"
)]
fn stream_events(
    id: &str,
    created: u64,
    model: &str,
    answer: &Answer,
    req: &ChatRequest,
    prompt_tokens: u64,
    cached: Option<u64>,
    no_usage: bool,
) -> Vec<Bytes> {
    let include_usage = req.include_usage() && !no_usage;
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_emulator",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        wire::sse::data_event(c.to_string().as_bytes())
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    match &answer.tool_call {
        Some((name, args)) => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": format!("call_{id}"), "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            // Arguments arrive in fragments, as OpenAI streams them.
            let bytes: Vec<char> = args.chars().collect();
            for part in bytes.chunks(8) {
                let frag: String = part.iter().collect();
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
                    None,
                ));
            }
        }
        None => {
            for p in reply::pieces(&answer.words) {
                events.push(chunk(json!({"content": p}), None));
            }
        }
    }
    events.push(chunk(json!({}), Some(answer.finish)));
    if include_usage {
        let u = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_emulator", "choices": [],
            "usage": usage_json(prompt_tokens, answer.completion_tokens(), cached)});
        events.push(wire::sse::data_event(u.to_string().as_bytes()));
    }
    events.push(Bytes::from_static(wire::sse::DONE));
    events
}

async fn openai_embeddings(
    State(s): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&s, &headers) {
        return auth_error();
    }
    let attempt = s.record(Vendor::Openai, uri.path(), &headers, &body);
    attempt.track(embeddings(s, Vendor::Openai, None, body).await)
}

async fn azure_embeddings(
    State(s): State<Shared>,
    Path(deployment): Path<String>,
    Query(q): Query<AzureQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = azure_gate(&s, &headers, &q) {
        return refused;
    }
    let attempt = s.record(Vendor::Azure, uri.path(), &headers, &body);
    attempt.track(embeddings(s, Vendor::Azure, Some(deployment), body).await)
}

async fn embeddings(
    s: Shared,
    vendor: Vendor,
    deployment: Option<String>,
    body: Bytes,
) -> Response {
    let req: EmbeddingsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                400,
                &format!("Invalid request body: {e}"),
                "invalid_request_error",
                None,
                None,
            );
        }
    };
    let model = deployment.unwrap_or_else(|| req.model.clone());
    let m = Matching {
        vendor,
        model: &model,
        prefill: false,
    };
    let fault = match pre_response(s.take_fault(m)).await {
        Ok(f) => f,
        Err(reset) => return reset,
    };
    if let Some(spec) = fault.as_ref().and_then(Fault::as_status) {
        return fault_response(vendor, &spec);
    }
    let texts: Vec<String> = match &req.input {
        EmbeddingInput::One(t) => vec![t.clone()],
        EmbeddingInput::Many(v) => v.clone(),
        EmbeddingInput::Tokens(t) => vec![format!("{t:?}")],
        EmbeddingInput::ManyTokens(v) => v.iter().map(|t| format!("{t:?}")).collect(),
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return error(
            400,
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            "invalid_request_error",
            None,
            None,
        );
    }
    let dims = req.dimensions.map_or(1536, |d| d as usize);
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = reply::embedding(t, dims);
            let emb = if base64 {
                Value::String(f32_base64(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| reply::count_tokens(t).max(1)).sum();
    json_response(
        200,
        &ratelimit_headers(),
        &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// Little-endian f32s, base64 (standard alphabet, padded): what `encoding_format=base64` returns.
pub fn f32_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64_encode(&bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

async fn azure_models(
    State(s): State<Shared>,
    Query(q): Query<AzureQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = azure_gate(&s, &headers, &q) {
        return refused;
    }
    let data: Vec<Value> = ["gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created_at": 1_715_367_049, "status": "succeeded"}))
        .collect();
    json_response(200, &[], &json!({"object": "list", "data": data}))
}

async fn openai_models(State(s): State<Shared>, headers: HeaderMap) -> Response {
    // Anthropic serves the same path with its own header and shape.
    if let Some(k) = headers.get("x-api-key") {
        if k.as_bytes() != s.config.api_key.as_bytes() {
            return json_response(
                401,
                &[],
                &json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
            );
        }
        let data = json!([{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}]);
        return json_response(
            200,
            &[],
            &json!({"data": data, "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}),
        );
    }
    if !bearer_ok(&s, &headers) {
        return auth_error();
    }
    let data: Vec<Value> = ["gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small"]
        .iter()
        .map(
            |m| json!({"id": m, "object": "model", "created": 1_715_367_049, "owned_by": "system"}),
        )
        .collect();
    json_response(
        200,
        &ratelimit_headers(),
        &json!({"object": "list", "data": data}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
