//! Gemini API wire types (generativelanguage `v1beta`) and conversions to and from canonical.
//!
//! In order: the request types (`models/{m}:generateContent`, `:streamGenerateContent?alt=sse`),
//! the response types, embeddings (`:embedContent`, `:batchEmbedContents`), `GET /v1beta/models`,
//! the error body; then the conversions: [`request_from_chat`], [`chat_from_response`], the
//! stream converter [`StreamToChunks`] (each SSE `data:` is a whole `GenerateContentResponse`),
//! [`embed_request_from_openai`] / [`embeddings_from_gemini`], and [`parse_error`].
//!
//! JSON is camelCase as the API documents it. Fields we do not model are kept in flattened
//! `extra` maps, so a response parses whatever Google adds next.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::openai;

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// `POST /v1beta/models/{model}:generateContent` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// Defaulted so a missing field reaches the caller's own validation, not a serde error.
    #[serde(default)]
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_settings: Option<Vec<Value>>,
    /// `cachedContents/{id}`: the name of a cache, not its content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One turn: `role` is `user` or `model` (absent in `systemInstruction` and embeddings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Defaulted: a candidate cut by MAX_TOKENS can come back as `{"role":"model"}` alone.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// A part holds exactly one kind of data; a struct of options is simpler than an enum and keeps
/// `thoughtSignature` next to the data it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
    /// A thought summary, not answer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Default::default()
        }
    }

    pub fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }
}

/// `inlineData`: base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
}

/// `fileData`: a URI the API fetches (Files API, or a public URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub file_uri: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// Must be a JSON object (a protobuf `Struct`).
    pub response: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
    /// `googleSearch`, `codeExecution`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The OpenAPI-subset `Schema` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Plain JSON Schema; mutually exclusive with `parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_calling_config: Option<FunctionCallingConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY`, `NONE` (or `VALIDATED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// The OpenAPI-subset `Schema` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// Plain JSON Schema; needs `responseMimeType: application/json`, excludes `responseSchema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// `thinkingConfig`, `responseModalities`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// The `generateContent` response, and each streamed event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// `{"blockReason": …}` when the prompt itself was blocked (and `candidates` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Kept as text: the enum keeps growing (`STOP`, `MAX_TOKENS`, `SAFETY`, `RECITATION`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Omitted for candidate 0 in practice (proto3 JSON drops zero values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// `safetyRatings`, `citationMetadata`, `finishMessage`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Includes the cached tokens, like OpenAI's `prompt_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
    /// Billed as output but not part of `candidatesTokenCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_token_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UsageMetadata {
    /// Streams repeat a usage block holding only `trafficType` on every event; only one with
    /// counts means anything.
    pub fn has_counts(&self) -> bool {
        self.prompt_token_count.is_some()
            || self.candidates_token_count.is_some()
            || self.total_token_count.is_some()
    }

    pub fn to_usage(&self) -> openai::Usage {
        let completion =
            self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count.unwrap_or(0);
        openai::Usage::new(
            self.prompt_token_count.unwrap_or(0),
            completion,
            self.cached_content_token_count,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------

/// `:embedContent` body, and one entry of `:batchEmbedContents`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{model}`: required inside a batch, where it must match the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsRequest {
    pub requests: Vec<EmbedContentRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentEmbedding {
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentResponse {
    pub embedding: ContentEmbedding,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsResponse {
    #[serde(default)]
    pub embeddings: Vec<ContentEmbedding>,
}

/// `GET /v1beta/models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListModelsResponse {
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `models/{model}`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_token_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_token_limit: Option<u64>,
    #[serde(default)]
    pub supported_generation_methods: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED","details":[…]}}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub error: ErrorStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorStatus {
    pub code: u16,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

impl ErrorResponse {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorStatus {
                code,
                message: message.into(),
                status: status_name(code).to_string(),
                details: Vec::new(),
            },
        }
    }

    /// The `google.rpc.RetryInfo` delay (`"27s"`, `"1.5s"`) a 429 carries, in seconds.
    pub fn retry_delay_secs(&self) -> Option<f64> {
        self.error.details.iter().find_map(|d| {
            let kind = d.get("@type")?.as_str()?;
            if !kind.ends_with("google.rpc.RetryInfo") {
                return None;
            }
            d.get("retryDelay")?
                .as_str()?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
    }
}

/// The canonical `google.rpc.Code` name Google pairs with an HTTP status.
pub fn status_name(http: u16) -> &'static str {
    match http {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A Gemini error body. Non-SSE streaming endpoints wrap it in a one-element array.
pub fn parse_error(body: &[u8]) -> Option<ErrorResponse> {
    if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
        return Some(e);
    }
    serde_json::from_slice::<Vec<ErrorResponse>>(body)
        .ok()?
        .into_iter()
        .next()
}

/// A canonical request Gemini cannot express.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid request for Gemini: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Canonical request → Gemini
// ---------------------------------------------------------------------------------------------

/// Converts a Chat Completions request. System/developer text becomes `systemInstruction`; tool
/// results become `functionResponse` parts of a user turn; consecutive same-role turns merge.
pub fn request_from_chat(
    req: &openai::ChatRequest,
) -> Result<GenerateContentRequest, ConvertError> {
    use openai::Role;
    if req.messages.is_empty() {
        return Err(invalid("messages: must not be empty"));
    }
    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // tool_call_id → function name, from the assistant turns seen so far.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.content.as_ref().map(openai::Content::joined_text);
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    system.push(Part::text(text));
                }
            }
            Role::User => push_turn(&mut contents, "user", user_parts(m, i)?),
            Role::Assistant => {
                for c in m.tool_calls.iter().flatten() {
                    call_names.insert(c.id.as_str(), c.function.name.as_str());
                }
                push_turn(&mut contents, "model", model_parts(m, i)?);
            }
            Role::Tool | Role::Function => {
                let part = tool_result_part(m, i, &call_names)?;
                push_turn(&mut contents, "user", vec![part]);
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages: no user, assistant or tool content to send",
        ));
    }
    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools: tools(req)?,
        tool_config: tool_config(req.tool_choice.as_ref())?,
        generation_config: generation_config(req)?,
        ..Default::default()
    })
}

/// Gemini wants a turn's parts together, so a turn with the same role as the last one joins it.
fn push_turn(contents: &mut Vec<Content>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
        _ => contents.push(Content {
            role: Some(role.to_string()),
            parts,
        }),
    }
}

fn user_parts(m: &openai::Message, i: usize) -> Result<Vec<Part>, ConvertError> {
    use openai::ContentPart;
    let parts = match &m.content {
        None => Vec::new(),
        Some(openai::Content::Text(t)) => vec![Part::text(t.clone())],
        Some(openai::Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Ok(Part::text(text.clone())),
                ContentPart::ImageUrl { image_url } => url_part(&image_url.url, i),
                ContentPart::InputAudio { input_audio } => audio_part(input_audio, i),
                ContentPart::File { file } => file_part(file, i),
            })
            .collect::<Result<_, _>>()?,
    };
    // The API rejects empty text parts.
    Ok(parts
        .into_iter()
        .filter(|p| p.text.as_deref() != Some(""))
        .collect())
}

fn model_parts(m: &openai::Message, i: usize) -> Result<Vec<Part>, ConvertError> {
    let mut parts = Vec::new();
    let text = m.content.as_ref().map(openai::Content::joined_text);
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        parts.push(Part::text(text));
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let raw = call.function.arguments.trim();
        // Some clients send "" for a call without arguments.
        let args = if raw.is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(raw).map_err(|e| {
                invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: not valid JSON ({e})"
                ))
            })?
        };
        if !args.is_object() {
            return Err(invalid(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: must be a JSON object"
            )));
        }
        parts.push(Part {
            function_call: Some(FunctionCall {
                id: None,
                name: call.function.name.clone(),
                args: Some(args),
            }),
            ..Default::default()
        });
    }
    Ok(parts)
}

/// Gemini matches a result to its call by function name, so the name comes from the assistant
/// turn that made the call.
fn tool_result_part(
    m: &openai::Message,
    i: usize,
    call_names: &HashMap<&str, &str>,
) -> Result<Part, ConvertError> {
    let name = match (&m.role, m.tool_call_id.as_deref()) {
        // The legacy `function` role names the function itself.
        (openai::Role::Function, _) => m
            .name
            .clone()
            .ok_or_else(|| invalid(format!("messages[{i}].name: missing")))?,
        (_, Some(id)) => call_names
            .get(id)
            .map(|n| n.to_string())
            .or_else(|| m.name.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "messages[{i}].tool_call_id: no earlier assistant tool call has id {id:?}"
                ))
            })?,
        (_, None) => return Err(invalid(format!("messages[{i}].tool_call_id: missing"))),
    };
    let text = m
        .content
        .as_ref()
        .map(openai::Content::joined_text)
        .unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "content": text }),
    };
    Ok(Part {
        function_response: Some(FunctionResponse {
            id: None,
            name,
            response,
        }),
        ..Default::default()
    })
}

/// `data:` URLs travel inline; http(s) URLs as `fileData` for the API to fetch.
fn url_part(url: &str, i: usize) -> Result<Part, ConvertError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(invalid(format!(
                "messages[{i}].content: only base64 data: URLs are supported"
            )));
        };
        return Ok(Part {
            inline_data: Some(Blob {
                mime_type: mime.to_string(),
                data: data.to_string(),
            }),
            ..Default::default()
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: mime_from_path(url).map(str::to_string),
                file_uri: url.to_string(),
            }),
            ..Default::default()
        });
    }
    Err(invalid(format!(
        "messages[{i}].content: image_url must be a data: or http(s) URL"
    )))
}

fn mime_from_path(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// OpenAI `input_audio`: `{"data": base64, "format": "wav" | "mp3"}`.
fn audio_part(audio: &Value, i: usize) -> Result<Part, ConvertError> {
    let data = audio.get("data").and_then(Value::as_str);
    let format = audio.get("format").and_then(Value::as_str);
    let (Some(data), Some(format)) = (data, format) else {
        return Err(invalid(format!(
            "messages[{i}].content: input_audio needs data and format"
        )));
    };
    Ok(Part {
        inline_data: Some(Blob {
            mime_type: format!("audio/{format}"),
            data: data.to_string(),
        }),
        ..Default::default()
    })
}

/// OpenAI `file`: only inline `file_data` (a data: URL) has a Gemini form; `file_id`s are
/// OpenAI's own storage.
fn file_part(file: &Value, i: usize) -> Result<Part, ConvertError> {
    match file.get("file_data").and_then(Value::as_str) {
        Some(url) if url.starts_with("data:") => url_part(url, i),
        _ => Err(invalid(format!(
            "messages[{i}].content: file parts need file_data as a data: URL"
        ))),
    }
}

fn tools(req: &openai::ChatRequest) -> Result<Option<Vec<Tool>>, ConvertError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let decls = tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.kind != "function" {
                return Err(invalid(format!(
                    "tools[{i}].type: only function tools are supported, got {:?}",
                    t.kind
                )));
            }
            Ok(FunctionDeclaration {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                parameters: None,
                // OpenAI parameters are JSON Schema, which this field takes as is.
                parameters_json_schema: t.function.parameters.clone(),
                extra: Map::new(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(vec![Tool {
        function_declarations: Some(decls),
        extra: Map::new(),
    }]))
}

fn tool_config(choice: Option<&openai::ToolChoice>) -> Result<Option<ToolConfig>, ConvertError> {
    let (mode, names) = match choice {
        None => return Ok(None),
        Some(openai::ToolChoice::Mode(m)) => match m.as_str() {
            "none" => ("NONE", None),
            "auto" => ("AUTO", None),
            "required" => ("ANY", None),
            other => return Err(invalid(format!("tool_choice: unknown mode {other:?}"))),
        },
        Some(openai::ToolChoice::Named(n)) => ("ANY", Some(vec![n.function.name.clone()])),
    };
    Ok(Some(ToolConfig {
        function_calling_config: Some(FunctionCallingConfig {
            mode: Some(mode.to_string()),
            allowed_function_names: names,
        }),
        extra: Map::new(),
    }))
}

fn generation_config(req: &openai::ChatRequest) -> Result<Option<GenerationConfig>, ConvertError> {
    let mut g = GenerationConfig {
        stop_sequences: req
            .stop
            .as_ref()
            .map(openai::Stop::to_vec)
            .filter(|s| !s.is_empty()),
        candidate_count: req.n,
        max_output_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..Default::default()
    };
    if let Some(rf) = &req.response_format {
        match rf.kind.as_str() {
            "text" => {}
            "json_object" => g.response_mime_type = Some("application/json".into()),
            "json_schema" => {
                let schema = rf.json_schema.as_ref().and_then(|s| s.schema.clone());
                let schema =
                    schema.ok_or_else(|| invalid("response_format.json_schema.schema: missing"))?;
                g.response_mime_type = Some("application/json".into());
                g.response_json_schema = Some(schema);
            }
            other => return Err(invalid(format!("response_format.type: unknown {other:?}"))),
        }
    }
    Ok((g != GenerationConfig::default()).then_some(g))
}

// ---------------------------------------------------------------------------------------------
// Gemini response → canonical
// ---------------------------------------------------------------------------------------------

/// Converts a whole `generateContent` response. `model` is the name the consumer asked for.
pub fn chat_from_response(resp: GenerateContentResponse, model: &str) -> openai::ChatCompletion {
    let usage = resp.usage_metadata.as_ref().map(UsageMetadata::to_usage);
    let mut choices: Vec<openai::Choice> = resp
        .candidates
        .into_iter()
        .enumerate()
        .map(|(pos, c)| choice_from_candidate(c, pos))
        .collect();
    // A blocked prompt has no candidates at all; say so the way OpenAI clients understand.
    if choices.is_empty() && prompt_blocked(resp.prompt_feedback.as_ref()) {
        choices.push(openai::Choice {
            index: 0,
            message: openai::ResponseMessage {
                role: openai::Role::Assistant,
                content: Some(String::new()),
                ..Default::default()
            },
            finish_reason: Some(openai::FinishReason::ContentFilter),
            logprobs: None,
        });
    }
    openai::ChatCompletion {
        id: resp.response_id.unwrap_or_else(generated_id),
        object: "chat.completion".into(),
        created: crate::unix_now(),
        model: model.to_string(),
        choices,
        usage,
        system_fingerprint: None,
    }
}

fn choice_from_candidate(c: Candidate, pos: usize) -> openai::Choice {
    let index = c.index.unwrap_or(pos as u32);
    let parts = c.content.map(|c| c.parts).unwrap_or_default();
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts.iter().filter(|p| !p.is_thought()) {
        if let Some(t) = &p.text {
            text.push_str(t);
        }
        if let Some(fc) = &p.function_call {
            calls.push(tool_call(index, calls.len(), fc));
        }
    }
    let has_calls = !calls.is_empty();
    openai::Choice {
        index,
        message: openai::ResponseMessage {
            role: openai::Role::Assistant,
            // OpenAI sends null content beside tool calls, "" for an empty answer.
            content: (!text.is_empty() || !has_calls).then_some(text),
            refusal: None,
            tool_calls: has_calls.then_some(calls),
        },
        finish_reason: finish_reason(c.finish_reason.as_deref(), has_calls),
        logprobs: None,
    }
}

/// Gemini has no call ids (or optional ones), so ids are made from the position: stable within
/// a response, which is all a client needs to match results to calls.
fn call_id(candidate: u32, n: usize) -> String {
    format!("call_{candidate}_{n}")
}

fn compact_args(fc: &FunctionCall) -> String {
    match &fc.args {
        Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
        None => "{}".into(),
    }
}

fn tool_call(candidate: u32, n: usize, fc: &FunctionCall) -> openai::ToolCall {
    openai::ToolCall {
        id: call_id(candidate, n),
        kind: "function".into(),
        function: openai::FunctionCall {
            name: fc.name.clone(),
            arguments: compact_args(fc),
        },
    }
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> Option<openai::FinishReason> {
    use openai::FinishReason as F;
    Some(match reason? {
        "MAX_TOKENS" => F::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            F::ContentFilter
        }
        // STOP, and the reasons OpenAI has no word for (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL).
        _ if has_calls => F::ToolCalls,
        _ => F::Stop,
    })
}

fn prompt_blocked(feedback: Option<&Value>) -> bool {
    feedback.is_some_and(|f| f.get("blockReason").is_some())
}

fn generated_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("chatcmpl-{nanos:x}{:x}", N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Stream: GenerateContentResponse events → chat.completion.chunk
// ---------------------------------------------------------------------------------------------

/// Turns each streamed `GenerateContentResponse` into chunks. Gemini sends whole function calls
/// (never argument fragments), so each becomes one complete tool-call delta.
#[derive(Debug)]
pub struct StreamToChunks {
    id: Option<String>,
    model: String,
    created: u64,
    /// Candidates whose first chunk (carrying the role) has gone out.
    started: HashSet<u32>,
    /// Tool calls sent so far, per candidate.
    calls: HashMap<u32, usize>,
    usage: Option<openai::Usage>,
    saw_finish: bool,
}

impl StreamToChunks {
    pub fn new(model: &str) -> Self {
        StreamToChunks {
            id: None,
            model: model.to_string(),
            created: crate::unix_now(),
            started: HashSet::new(),
            calls: HashMap::new(),
            usage: None,
            saw_finish: false,
        }
    }

    pub fn on_response(&mut self, r: GenerateContentResponse) -> Vec<openai::ChatChunk> {
        if self.id.is_none() {
            self.id = Some(r.response_id.clone().unwrap_or_else(generated_id));
        }
        if let Some(u) = r.usage_metadata.as_ref().filter(|u| u.has_counts()) {
            self.usage = Some(u.to_usage());
        }
        let mut out = Vec::new();
        for (pos, c) in r.candidates.into_iter().enumerate() {
            let index = c.index.unwrap_or(pos as u32);
            let parts = c.content.map(|c| c.parts).unwrap_or_default();
            let mut text = String::new();
            for p in parts.iter().filter(|p| !p.is_thought()) {
                if let Some(t) = &p.text {
                    text.push_str(t);
                }
                if let Some(fc) = &p.function_call {
                    // Keep the order: text before the call goes out first.
                    if !text.is_empty() {
                        let delta = self.delta(index, Some(std::mem::take(&mut text)), None);
                        out.push(self.chunk(index, delta, None));
                    }
                    let n = self.calls.entry(index).or_insert(0);
                    let k = *n;
                    *n += 1;
                    let call = openai::ToolCallDelta {
                        index: k as u32,
                        id: Some(call_id(index, k)),
                        kind: Some("function".into()),
                        function: Some(openai::FunctionCallDelta {
                            name: Some(fc.name.clone()),
                            arguments: Some(compact_args(fc)),
                        }),
                    };
                    let delta = self.delta(index, None, Some(vec![call]));
                    out.push(self.chunk(index, delta, None));
                }
            }
            if !text.is_empty() {
                let delta = self.delta(index, Some(text), None);
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = c.finish_reason.as_deref() {
                self.saw_finish = true;
                let has_calls = self.calls.get(&index).is_some_and(|n| *n > 0);
                let delta = self.delta(index, None, None);
                let reason = finish_reason(Some(reason), has_calls);
                out.push(self.chunk(index, delta, reason));
            }
        }
        out
    }

    /// The closing chunk: no choices, the last usage seen (nothing if there was none).
    pub fn finish(&mut self) -> Vec<openai::ChatChunk> {
        let Some(usage) = self.usage.take() else {
            return Vec::new();
        };
        let mut chunk = self.chunk(0, openai::Delta::default(), None);
        chunk.choices.clear();
        chunk.usage = Some(usage);
        vec![chunk]
    }

    /// False at the end of a stream means it was cut short.
    pub fn saw_finish_reason(&self) -> bool {
        self.saw_finish
    }

    fn delta(
        &mut self,
        index: u32,
        content: Option<String>,
        tool_calls: Option<Vec<openai::ToolCallDelta>>,
    ) -> openai::Delta {
        let first = self.started.insert(index);
        openai::Delta {
            role: first.then_some(openai::Role::Assistant),
            content,
            refusal: None,
            tool_calls,
        }
    }

    fn chunk(
        &self,
        index: u32,
        delta: openai::Delta,
        finish_reason: Option<openai::FinishReason>,
    ) -> openai::ChatChunk {
        openai::ChatChunk {
            id: self.id.clone().unwrap_or_default(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![openai::ChunkChoice {
                index,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

/// One `batchEmbedContents` entry per input text. `model` is the upstream model name.
pub fn embed_request_from_openai(
    req: &openai::EmbeddingsRequest,
    model: &str,
) -> Result<BatchEmbedContentsRequest, ConvertError> {
    let texts = req
        .input
        .texts()
        .ok_or_else(|| invalid("input: token arrays are not supported by Gemini embeddings"))?;
    if texts.is_empty() {
        return Err(invalid("input: must not be empty"));
    }
    let model = model_resource(model);
    Ok(BatchEmbedContentsRequest {
        requests: texts
            .into_iter()
            .map(|t| EmbedContentRequest {
                model: Some(model.clone()),
                content: Content {
                    role: None,
                    parts: vec![Part::text(t)],
                },
                output_dimensionality: req.dimensions,
                ..Default::default()
            })
            .collect(),
    })
}

/// `prompt_tokens` comes from the caller: the batch response carries no usage.
pub fn embeddings_from_gemini(
    resp: BatchEmbedContentsResponse,
    model: &str,
    prompt_tokens: u64,
) -> openai::EmbeddingsResponse {
    openai::EmbeddingsResponse {
        object: "list".into(),
        data: resp
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| openai::Embedding {
                object: "embedding".into(),
                index: i as u32,
                embedding: Value::from(e.values),
            })
            .collect(),
        model: model.to_string(),
        usage: openai::EmbeddingsUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }
}

/// `gemini-embedding-001` → `models/gemini-embedding-001` (left alone if already prefixed).
pub fn model_resource(model: &str) -> String {
    if model.starts_with("models/") {
        model.to_string()
    } else {
        format!("models/{model}")
    }
}

#[cfg(test)]
mod tests;
