//! The gateway calling Anthropic: a canonical request becomes a Messages request and the
//! response becomes canonical again (streamed events: [`super::StreamToChunks`]).

use serde_json::{Map, Value, json};

use super::types::{self as an, ContentBlock, ImageSource, InputMessage, MessageContent};
use super::types::{AnthropicUsage, MessagesRequest, MessagesResponse};
use super::{ConvertError, JSON_TOOL};
use crate::openai::{self as oa, ChatCompletion, ChatRequest, Choice, Content, ContentPart};
use crate::openai::{FinishReason, FunctionCall, ResponseMessage, ToolCall, Usage};

/// Anthropic requires `max_tokens`; OpenAI callers usually leave it out.
const DEFAULT_MAX_TOKENS: u32 = 4096;

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::Invalid(msg.into())
}

/// Whether the request asks for JSON output, which [`request_from_chat`] turns into a forced
/// [`JSON_TOOL`] call; pass the answer to [`chat_from_response`] / [`StreamToChunks::new`].
pub fn json_mode(req: &ChatRequest) -> bool {
    matches!(
        req.response_format.as_ref().map(|f| f.kind.as_str()),
        Some("json_object" | "json_schema")
    )
}

/// The Messages request for a canonical request. `stream` is left unset for the caller.
///
/// System and developer messages are hoisted into `system`; tool messages become `tool_result`
/// blocks of a user turn; consecutive turns of one role are merged, since the API wants them
/// to alternate.
pub fn request_from_chat(
    req: &ChatRequest,
    upstream_model: &str,
) -> Result<MessagesRequest, ConvertError> {
    if req.messages.is_empty() {
        return Err(invalid("messages: must not be empty"));
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid("n: Anthropic returns a single choice; n must be 1"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(an::Role, Vec<ContentBlock>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            oa::Role::System | oa::Role::Developer => {
                let text = m
                    .content
                    .as_ref()
                    .map(Content::joined_text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            oa::Role::User => (an::Role::User, user_blocks(i, m.content.as_ref())?),
            oa::Role::Assistant => (an::Role::Assistant, assistant_blocks(i, m)?),
            oa::Role::Tool => (an::Role::User, vec![tool_result(i, m)?]),
            oa::Role::Function => {
                return Err(invalid(format!(
                    "messages[{i}].role: legacy function messages are not supported; use tool messages"
                )));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(invalid("messages: no user or assistant content"));
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // The API wants a user turn's tool results before anything else in it.
            blocks.sort_by_key(|b| !matches!(b, ContentBlock::ToolResult { .. }));
            InputMessage {
                role,
                content: compact(blocks),
            }
        })
        .collect();

    let (tools, tool_choice) = tools_and_choice(req)?;
    Ok(MessagesRequest {
        model: upstream_model.to_string(),
        messages,
        system: match system.len() {
            0 => None,
            1 => system.pop().map(an::SystemPrompt::Text),
            _ => Some(an::SystemPrompt::Blocks(
                system.into_iter().map(ContentBlock::text).collect(),
            )),
        },
        max_tokens: req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        // OpenAI allows 0–2, Anthropic 0–1.
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        // Not an OpenAI field, but OpenAI-SDK users send it as an extra body field.
        top_k: req
            .extra
            .get("top_k")
            .and_then(Value::as_u64)
            .and_then(|k| u32::try_from(k).ok()),
        stop_sequences: req
            .stop
            .as_ref()
            .map(oa::Stop::to_vec)
            .filter(|s| !s.is_empty()),
        stream: None,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        metadata: req.user.clone().map(|u| an::Metadata { user_id: Some(u) }),
        extra: Map::new(),
    })
}

/// A single plain text block is sent in the string shorthand.
fn compact(blocks: Vec<ContentBlock>) -> MessageContent {
    match <[ContentBlock; 1]>::try_from(blocks) {
        Ok(
            [
                ContentBlock::Text {
                    text,
                    cache_control: None,
                },
            ],
        ) => MessageContent::Text(text),
        Ok([block]) => MessageContent::Blocks(vec![block]),
        Err(blocks) => MessageContent::Blocks(blocks),
    }
}

fn user_blocks(i: usize, content: Option<&Content>) -> Result<Vec<ContentBlock>, ConvertError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => return Ok(Vec::new()),
        Some(Content::Text(t)) => return Ok(vec![ContentBlock::text(t.clone())]),
        Some(Content::Parts(p)) => p,
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            // The API rejects empty text blocks.
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => out.push(ContentBlock::text(text.clone())),
            ContentPart::ImageUrl { image_url } => {
                let source = image_source(&image_url.url).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}].content[{j}].image_url.url: expected a data:<type>;base64, or http(s) URL"
                    ))
                })?;
                out.push(ContentBlock::Image {
                    source,
                    cache_control: None,
                });
            }
            ContentPart::InputAudio { .. } | ContentPart::File { .. } => {
                return Err(invalid(format!(
                    "messages[{i}].content[{j}]: audio and file parts are not supported by Anthropic"
                )));
            }
        }
    }
    Ok(out)
}

fn image_source(url: &str) -> Option<ImageSource> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64").filter(|m| !m.is_empty())?;
        return Some(ImageSource::Base64 {
            media_type: media_type.to_string(),
            data: data.to_string(),
        });
    }
    (url.starts_with("https://") || url.starts_with("http://")).then(|| ImageSource::Url {
        url: url.to_string(),
    })
}

fn assistant_blocks(i: usize, m: &oa::Message) -> Result<Vec<ContentBlock>, ConvertError> {
    let mut out = Vec::new();
    let text = m
        .content
        .as_ref()
        .map(Content::joined_text)
        .unwrap_or_default();
    if !text.is_empty() {
        out.push(ContentBlock::text(text));
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = call.function.arguments.trim();
        let input: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: not valid JSON ({e})"
                ))
            })?
        };
        if !input.is_object() {
            return Err(invalid(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: must be a JSON object"
            )));
        }
        out.push(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            cache_control: None,
        });
    }
    Ok(out)
}

fn tool_result(i: usize, m: &oa::Message) -> Result<ContentBlock, ConvertError> {
    let id = m.tool_call_id.clone().ok_or_else(|| {
        invalid(format!(
            "messages[{i}].tool_call_id: required on tool messages"
        ))
    })?;
    let content = match &m.content {
        None => None,
        Some(Content::Text(t)) => Some(an::ToolResultContent::Text(t.clone())),
        Some(c @ Content::Parts(_)) => {
            let blocks = user_blocks(i, Some(c))?;
            if blocks
                .iter()
                .all(|b| matches!(b, ContentBlock::Text { .. }))
            {
                Some(an::ToolResultContent::Text(c.joined_text()))
            } else {
                Some(an::ToolResultContent::Blocks(blocks))
            }
        }
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id: id,
        content,
        is_error: None,
        cache_control: None,
    })
}

/// Tools, the tool choice, and the JSON-mode tool. `parallel_tool_calls: false` (an OpenAI
/// extra) becomes `disable_parallel_tool_use`.
fn tools_and_choice(
    req: &ChatRequest,
) -> Result<(Vec<an::Tool>, Option<an::ToolChoice>), ConvertError> {
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(invalid(format!(
                "tools[{i}].type: only function tools are supported"
            )));
        }
        tools.push(an::Tool {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            input_schema: Some(
                t.function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            ),
            extra: Map::new(),
        });
    }
    let no_parallel =
        (req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false))).then_some(true);
    let mut choice = match &req.tool_choice {
        None if no_parallel.is_some() => Some(an::ToolChoice::Auto {
            disable_parallel_tool_use: no_parallel,
        }),
        None => None,
        Some(oa::ToolChoice::Mode(m)) => Some(match m.as_str() {
            "none" => an::ToolChoice::None,
            "auto" => an::ToolChoice::Auto {
                disable_parallel_tool_use: no_parallel,
            },
            "required" => an::ToolChoice::Any {
                disable_parallel_tool_use: no_parallel,
            },
            other => return Err(invalid(format!("tool_choice: unknown mode {other:?}"))),
        }),
        Some(oa::ToolChoice::Named(n)) => Some(an::ToolChoice::Tool {
            name: n.function.name.clone(),
            disable_parallel_tool_use: no_parallel,
        }),
    };
    if tools.is_empty() {
        choice = None;
    }
    if let Some(json_tool) = json_tool(req)? {
        let user_tools_callable =
            !tools.is_empty() && !matches!(choice, Some(an::ToolChoice::None));
        choice = Some(match choice {
            // A named tool stays forced; otherwise the model must call some tool, and the JSON
            // tool is the way to answer without one.
            Some(named @ an::ToolChoice::Tool { .. }) if user_tools_callable => named,
            _ if user_tools_callable => an::ToolChoice::Any {
                disable_parallel_tool_use: no_parallel,
            },
            _ => an::ToolChoice::Tool {
                name: JSON_TOOL.into(),
                disable_parallel_tool_use: None,
            },
        });
        tools.push(json_tool);
    }
    Ok((tools, choice))
}

fn json_tool(req: &ChatRequest) -> Result<Option<an::Tool>, ConvertError> {
    let Some(format) = &req.response_format else {
        return Ok(None);
    };
    let (schema, description) = match format.kind.as_str() {
        "text" => return Ok(None),
        "json_object" => (json!({"type": "object"}), None),
        "json_schema" => {
            let s = format.json_schema.as_ref().ok_or_else(|| {
                invalid("response_format.json_schema: required when type is json_schema")
            })?;
            let schema = s
                .schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            (schema, s.description.clone())
        }
        other => {
            return Err(invalid(format!(
                "response_format.type: unknown type {other:?}"
            )));
        }
    };
    Ok(Some(an::Tool {
        name: JSON_TOOL.into(),
        description: Some(
            description.unwrap_or_else(|| "Give the answer as this tool's input.".into()),
        ),
        input_schema: Some(schema),
        extra: Map::new(),
    }))
}

/// The canonical completion for a Messages response. In `json_mode` the [`JSON_TOOL`] call's
/// input is the answer text (any text around it is dropped).
pub fn chat_from_response(resp: MessagesResponse, json_mode: bool) -> ChatCompletion {
    let mut text = String::new();
    let mut json_text = None;
    let mut calls = Vec::new();
    for block in resp.content {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(&t),
            ContentBlock::ToolUse { name, input, .. } if json_mode && name == JSON_TOOL => {
                json_text = Some(input.to_string());
            }
            ContentBlock::ToolUse {
                id, name, input, ..
            } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            _ => {}
        }
    }
    if let Some(j) = json_text {
        text = j;
    }
    let finish_reason = resp
        .stop_reason
        .as_deref()
        .map(|r| finish_reason(r, !calls.is_empty()));
    ChatCompletion {
        id: resp.id,
        object: "chat.completion".into(),
        created: crate::unix_now(),
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: oa::Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                refusal: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
            },
            finish_reason,
            logprobs: None,
        }],
        usage: Some(usage(&resp.usage)),
        system_fingerprint: None,
    }
}

/// `tool_use` means tool calls only if some call survived JSON mode.
pub(super) fn finish_reason(stop_reason: &str, has_calls: bool) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" if has_calls => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// OpenAI's prompt tokens include cached ones; Anthropic counts them apart.
pub(super) fn usage(u: &AnthropicUsage) -> Usage {
    let cache_read = u.cache_read_input_tokens;
    let prompt =
        u.input_tokens + cache_read.unwrap_or(0) + u.cache_creation_input_tokens.unwrap_or(0);
    Usage::new(prompt, u.output_tokens, cache_read)
}
