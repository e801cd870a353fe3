//! The Anthropic Messages API emulator: `POST /v1/messages`.
//!
//! Checked like the real API: `x-api-key` (401 `authentication_error`), the `anthropic-version`
//! header, `max_tokens` and a non-empty `messages` (400 `invalid_request_error`). Errors use
//! Anthropic's body `{"type":"error","error":{"type","message"},"request_id"}`.
//!
//! The answer echoes the last user text ([`reply::words`], at most `max_tokens` words). With tools
//! declared (and `tool_choice` not `none`) it is a `tool_use` of the first or the forced tool
//! with input `{"input": <last user text>}`, until the last user turn carries a tool result.
//! A body mentioning `cache_control` reports half its input tokens as cache reads, so cached
//! token accounting can be tested. Streams follow the documented event order, one
//! `content_block_delta` per word (or JSON fragment), through [`emulator::sse_body`].

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};
use wire::anthropic::{
    AnthropicUsage, BlockDelta, ContentBlock, DeltaUsage, ErrorDetail, ErrorResponse, InputMessage,
    MessageDelta, MessagesRequest, MessagesResponse, Role, StreamEvent, SystemPrompt, ToolChoice,
    ToolResultContent, encode_event, error_type_for_status,
};

use crate::emulator::{self, ErrorSpec, Fault, Matching, Shared, Vendor};
use crate::reply;

const PATH: &str = "/v1/messages";
/// The per-minute limits the rate-limit headers report.
const REQUESTS_LIMIT: u64 = 1000;
const TOKENS_LIMIT: u64 = 100_000;
/// Characters per `input_json_delta` fragment of a streamed tool call.
const JSON_FRAGMENT: usize = 8;

pub fn routes() -> Router<Shared> {
    Router::new().route(PATH, post(messages))
}

async fn messages(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let attempt = s.record(Vendor::Anthropic, PATH, &headers, &body);
    attempt.track(answer_messages(s, headers, body).await)
}

async fn answer_messages(s: Shared, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(s.config.api_key.as_str()) {
        return error(401, "invalid x-api-key");
    }
    if !headers.contains_key("anthropic-version") {
        return error(400, "anthropic-version: header is required");
    }
    let req = match parse(&body) {
        Ok(r) => r,
        Err(msg) => return error(400, &msg),
    };
    let m = Matching {
        vendor: Vendor::Anthropic,
        model: &req.model,
        prefill: req
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Assistant),
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
    let no_usage = fault == Some(Fault::NoUsage);
    let answer = answer(&s, &req, &body, no_usage);
    let headers = success_headers(answer.usage.input_tokens + answer.usage.output_tokens);
    if req.is_stream() {
        let mut events = answer.events(no_usage);
        if fault == Some(Fault::NoDone) {
            // The last event is `message_stop`.
            events.pop();
        }
        let mut resp = emulator::sse_body(events, fault);
        for (k, v) in headers {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    let body = serde_json::to_value(answer.message()).unwrap_or(Value::Null);
    emulator::json_response(200, &headers, &body)
}

/// The body as the real API validates it, with its wording for the common mistakes.
fn parse(body: &[u8]) -> Result<MessagesRequest, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("request body must be a JSON object".into());
    };
    if !obj.contains_key("max_tokens") {
        return Err("max_tokens: Field required".into());
    }
    match obj.get("messages") {
        None => return Err("messages: Field required".into()),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err("messages: at least one message is required".into());
        }
        _ => {}
    }
    serde_json::from_value(v).map_err(|e| format!("invalid request: {e}"))
}

fn error(status: u16, message: &str) -> Response {
    error_body(status, error_type_for_status(status), message, Vec::new())
}

/// A scripted `Status` fault. Anthropic bodies carry no code: a known `code` only picks the
/// wording, and `error_type` replaces `error.type`.
fn fault_response(f: &ErrorSpec<'_>) -> Response {
    let message = f
        .message
        .or(f.code.and_then(code_message))
        .unwrap_or_else(|| default_message(f.status));
    let kind = f
        .error_type
        .unwrap_or_else(|| error_type_for_status(f.status));
    let mut headers = Vec::new();
    f.retry_headers(&mut headers);
    error_body(f.status, kind, message, headers)
}

fn error_body(
    status: u16,
    kind: &str,
    message: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Response {
    let id = request_id();
    let body = ErrorResponse {
        kind: "error".into(),
        error: ErrorDetail {
            kind: kind.into(),
            message: message.into(),
        },
        request_id: Some(id.clone()),
    };
    headers.push(("request-id", id));
    let body = serde_json::to_value(body).unwrap_or(Value::Null);
    emulator::json_response(status, &headers, &body)
}

/// Anthropic's wording for what the other vendors name with an error `code`.
fn code_message(code: &str) -> Option<&'static str> {
    match code {
        "context_length_exceeded" => Some("prompt is too long: 200001 tokens > 200000 maximum"),
        "content_policy_violation" | "content_filter" => {
            Some("Output blocked by content filtering policy")
        }
        _ => None,
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        401 => "invalid x-api-key",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "The requested resource could not be found.",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of requests has exceeded your per-minute rate limit.",
        529 => "Overloaded",
        500..=599 => "Internal server error",
        _ => "Invalid request",
    }
}

fn request_id() -> String {
    format!("req_emu{:020}", emulator::next_id())
}

/// `request-id` and the `anthropic-ratelimit-*` headers; resets are RFC 3339 times.
fn success_headers(tokens_used: u64) -> Vec<(&'static str, String)> {
    let reset = rfc3339(wire::unix_now() + 60);
    vec![
        ("request-id", request_id()),
        (
            "anthropic-ratelimit-requests-limit",
            REQUESTS_LIMIT.to_string(),
        ),
        (
            "anthropic-ratelimit-requests-remaining",
            (REQUESTS_LIMIT - 1).to_string(),
        ),
        ("anthropic-ratelimit-requests-reset", reset.clone()),
        ("anthropic-ratelimit-tokens-limit", TOKENS_LIMIT.to_string()),
        (
            "anthropic-ratelimit-tokens-remaining",
            TOKENS_LIMIT.saturating_sub(tokens_used).to_string(),
        ),
        ("anthropic-ratelimit-tokens-reset", reset),
    ]
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (days to civil date after H. Hinnant).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// What the emulator answers: one text or tool_use block, sent whole or in pieces.
struct Answer {
    id: String,
    model: String,
    /// The block as the non-streaming response carries it.
    block: ContentBlock,
    /// Streamed deltas: words of the text, or fragments of the tool input JSON.
    pieces: Vec<String>,
    stop_reason: &'static str,
    usage: AnthropicUsage,
}

fn answer(s: &Shared, req: &MessagesRequest, body: &[u8], no_usage: bool) -> Answer {
    let last_user = req.messages.iter().rev().find(|m| m.role == Role::User);
    let prompt = last_user.map(user_text).unwrap_or_default();
    let after_tool_result = last_user.is_some_and(|m| {
        m.content
            .blocks()
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolResult { .. }))
    });
    let (block, pieces, stop_reason) = match tool_to_call(req) {
        Some(name) if !after_tool_result => {
            let input = json!({ "input": prompt });
            let text: Vec<char> = input.to_string().chars().collect();
            let pieces = text
                .chunks(JSON_FRAGMENT)
                .map(|c| c.iter().collect())
                .collect();
            let id = format!("toolu_emu{:020}", emulator::next_id());
            (
                ContentBlock::ToolUse {
                    id,
                    name,
                    input,
                    cache_control: None,
                },
                pieces,
                "tool_use",
            )
        }
        _ => {
            let len = s.answer_len(Some(req.max_tokens));
            let words = reply::words(&prompt, len);
            let cut = reply::words(&prompt, reply::Length { cap: None, ..len }).len() > words.len();
            let pieces = reply::pieces(&words);
            let stop = if cut { "max_tokens" } else { "end_turn" };
            (ContentBlock::text(pieces.concat()), pieces, stop)
        }
    };
    let total = reply::count_tokens(&all_text(req));
    let cached = if contains(body, b"\"cache_control\"") {
        total / 2
    } else {
        0
    };
    let usage = if no_usage {
        AnthropicUsage::default()
    } else {
        // `input_tokens` excludes cache reads, as in the real API.
        AnthropicUsage {
            input_tokens: total - cached,
            output_tokens: pieces.len() as u64,
            cache_creation_input_tokens: Some(0),
            cache_read_input_tokens: Some(cached),
        }
    };
    Answer {
        id: format!("msg_emu{:020}", emulator::next_id()),
        model: req.model.clone(),
        block,
        pieces,
        stop_reason,
        usage,
    }
}

/// The tool a `tool_use` answer calls, unless tools are absent or `tool_choice` is `none`.
fn tool_to_call(req: &MessagesRequest) -> Option<String> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let first = tools.first()?;
    match &req.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Tool { name, .. }) => Some(name.clone()),
        _ => Some(first.name.clone()),
    }
}

/// A user turn's text, or its tool results' text when it has none.
fn user_text(m: &InputMessage) -> String {
    let blocks = m.content.blocks();
    let text: Vec<String> = blocks.iter().filter_map(block_text).collect();
    if !text.is_empty() {
        return text.join(" ");
    }
    blocks
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolResult {
                content: Some(c), ..
            } => Some(result_text(c)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn block_text(b: &ContentBlock) -> Option<String> {
    match b {
        ContentBlock::Text { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn result_text(c: &ToolResultContent) -> String {
    match c {
        ToolResultContent::Text(t) => t.clone(),
        ToolResultContent::Blocks(b) => b
            .iter()
            .filter_map(block_text)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// System and message text, tool results included: what input tokens are counted from.
fn all_text(req: &MessagesRequest) -> String {
    let mut out: Vec<String> = match &req.system {
        Some(SystemPrompt::Text(t)) => vec![t.clone()],
        Some(SystemPrompt::Blocks(b)) => b.iter().filter_map(block_text).collect(),
        None => Vec::new(),
    };
    for m in &req.messages {
        for b in m.content.blocks() {
            match &b {
                ContentBlock::ToolResult {
                    content: Some(c), ..
                } => out.push(result_text(c)),
                other => out.extend(block_text(other)),
            }
        }
    }
    out.join(" ")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Answer {
    fn message(self) -> MessagesResponse {
        MessagesResponse {
            id: self.id,
            kind: "message".into(),
            role: Role::Assistant,
            model: self.model,
            content: vec![self.block],
            stop_reason: Some(self.stop_reason.into()),
            stop_sequence: None,
            usage: self.usage,
        }
    }

    /// The documented sequence: `message_start`, `content_block_start`, `ping`, the deltas,
    /// `content_block_stop`, `message_delta`, `message_stop`.
    fn events(self, no_usage: bool) -> Vec<Bytes> {
        let is_tool = matches!(self.block, ContentBlock::ToolUse { .. });
        let start_block = match &self.block {
            ContentBlock::ToolUse { id, name, .. } => ContentBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: json!({}),
                cache_control: None,
            },
            _ => ContentBlock::text(""),
        };
        let mut start_usage = self.usage;
        // The real `message_start` already counts the first output token.
        start_usage.output_tokens = u64::from(!no_usage);
        let mut evs = vec![
            StreamEvent::MessageStart {
                message: MessagesResponse {
                    id: self.id,
                    kind: "message".into(),
                    role: Role::Assistant,
                    model: self.model,
                    content: Vec::new(),
                    stop_reason: None,
                    stop_sequence: None,
                    usage: start_usage,
                },
            },
            StreamEvent::ContentBlockStart {
                index: 0,
                content_block: start_block,
            },
            StreamEvent::Ping,
        ];
        // Tool input streams open with an empty fragment, as in the documented example.
        let first = is_tool.then(String::new);
        for piece in first.into_iter().chain(self.pieces) {
            let delta = if is_tool {
                BlockDelta::InputJsonDelta {
                    partial_json: piece,
                }
            } else {
                BlockDelta::TextDelta { text: piece }
            };
            evs.push(StreamEvent::ContentBlockDelta { index: 0, delta });
        }
        evs.push(StreamEvent::ContentBlockStop { index: 0 });
        evs.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(self.stop_reason.into()),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: self.usage.output_tokens,
                ..DeltaUsage::default()
            },
        });
        evs.push(StreamEvent::MessageStop);
        evs.iter().map(encode_event).collect()
    }
}
