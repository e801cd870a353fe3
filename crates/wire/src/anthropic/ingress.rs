//! An Anthropic SDK calling the gateway (`POST /v1/messages`): the Messages request becomes
//! canonical, so any provider can serve it, and the canonical answer becomes a Messages
//! response again (streamed: [`super::ChunksToStream`]).
//!
//! Lost on the way in: `top_k`, `thinking` and other Anthropic-only settings, `cache_control`,
//! a tool result's `is_error` flag, and thinking blocks in the history.

use serde_json::{Map, Value, json};

use super::ConvertError;
use super::types::{self as an, ContentBlock, ImageSource, MessageContent, MessagesRequest};
use super::types::{AnthropicUsage, MessagesResponse, ToolResultContent};
use crate::openai::{self as oa, ChatCompletion, ChatRequest, Content, ContentPart};
use crate::openai::{FinishReason, FunctionCall, FunctionDef, ImageUrl, Message, ToolCall, Usage};

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::Invalid(msg.into())
}

/// The canonical request for a Messages request. A streamed request also asks for usage, which
/// the closing `message_delta` needs.
pub fn chat_from_messages_request(req: &MessagesRequest) -> Result<ChatRequest, ConvertError> {
    if req.messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut messages = Vec::new();
    match &req.system {
        Some(an::SystemPrompt::Text(t)) if !t.is_empty() => {
            messages.push(Message::text(oa::Role::System, t.clone()));
        }
        Some(an::SystemPrompt::Blocks(blocks)) => {
            for b in blocks {
                if let ContentBlock::Text { text, .. } = b {
                    messages.push(Message::text(oa::Role::System, text.clone()));
                }
            }
        }
        _ => {}
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            an::Role::User => user_messages(i, &m.content, &mut messages)?,
            an::Role::Assistant => messages.push(assistant_message(i, &m.content)?),
        }
    }

    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        match t.extra.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(kind) => {
                return Err(invalid(format!(
                    "tools[{i}].type: server tool {kind:?} is not supported"
                )));
            }
        }
        tools.push(oa::Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.input_schema.clone(),
                strict: None,
            },
        });
    }
    let mut extra = Map::new();
    let tool_choice = req.tool_choice.as_ref().map(|c| {
        let (choice, no_parallel) = match c {
            an::ToolChoice::Auto {
                disable_parallel_tool_use: p,
            } => (mode("auto"), p),
            an::ToolChoice::Any {
                disable_parallel_tool_use: p,
            } => (mode("required"), p),
            an::ToolChoice::None => (mode("none"), &None),
            an::ToolChoice::Tool {
                name,
                disable_parallel_tool_use: p,
            } => {
                let named = oa::NamedToolChoice {
                    kind: "function".into(),
                    function: oa::NamedFunction { name: name.clone() },
                };
                (oa::ToolChoice::Named(named), p)
            }
        };
        if *no_parallel == Some(true) && !tools.is_empty() {
            extra.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
        choice
    });

    let stream = req.is_stream();
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        stream: req.stream,
        stream_options: stream.then(|| oa::StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: Some(req.max_tokens),
        stop: req
            .stop_sequences
            .clone()
            .filter(|s| !s.is_empty())
            .map(oa::Stop::Many),
        tool_choice: tool_choice.filter(|_| !tools.is_empty()),
        tools: (!tools.is_empty()).then_some(tools),
        user: req.metadata.as_ref().and_then(|m| m.user_id.clone()),
        extra,
        ..ChatRequest::default()
    })
}

fn mode(m: &str) -> oa::ToolChoice {
    oa::ToolChoice::Mode(m.into())
}

/// A user turn: its tool results become tool messages (first, as they answer the previous
/// assistant turn), the rest one user message.
fn user_messages(
    i: usize,
    content: &MessageContent,
    out: &mut Vec<Message>,
) -> Result<(), ConvertError> {
    let blocks = match content {
        MessageContent::Text(t) => {
            out.push(Message::text(oa::Role::User, t.clone()));
            return Ok(());
        }
        MessageContent::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                let at = format!("messages[{i}].content[{j}].content");
                let mut m = Message::text(oa::Role::Tool, "");
                m.content = Some(tool_result_content(&at, content.as_ref())?);
                m.tool_call_id = Some(tool_use_id.clone());
                out.push(m);
            }
            other => parts.push(user_part(&format!("messages[{i}].content[{j}]"), other)?),
        }
    }
    if !parts.is_empty() {
        let mut m = Message::text(oa::Role::User, "");
        m.content = Some(parts_content(parts));
        out.push(m);
    }
    Ok(())
}

fn user_part(at: &str, b: &ContentBlock) -> Result<ContentPart, ConvertError> {
    match b {
        ContentBlock::Text { text, .. } => Ok(ContentPart::Text { text: text.clone() }),
        ContentBlock::Image { source, .. } => {
            let url = match source {
                ImageSource::Base64 { media_type, data } => {
                    format!("data:{media_type};base64,{data}")
                }
                ImageSource::Url { url } => url.clone(),
                ImageSource::Other(v) => {
                    let kind = v.get("type").and_then(Value::as_str).unwrap_or("unknown");
                    return Err(invalid(format!(
                        "{at}.source.type: {kind:?} is not supported"
                    )));
                }
            };
            Ok(ContentPart::ImageUrl {
                image_url: ImageUrl { url, detail: None },
            })
        }
        other => Err(invalid(format!(
            "{at}: {:?} blocks are not supported here (or the block is malformed)",
            other.kind()
        ))),
    }
}

/// Text parts only collapse to a string; with images they stay parts.
fn parts_content(parts: Vec<ContentPart>) -> Content {
    if parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) {
        Content::Text(Content::Parts(parts).joined_text())
    } else {
        Content::Parts(parts)
    }
}

fn tool_result_content(at: &str, c: Option<&ToolResultContent>) -> Result<Content, ConvertError> {
    Ok(match c {
        None => Content::Text(String::new()),
        Some(ToolResultContent::Text(t)) => Content::Text(t.clone()),
        Some(ToolResultContent::Blocks(blocks)) => {
            let parts = blocks
                .iter()
                .enumerate()
                .map(|(k, b)| user_part(&format!("{at}[{k}]"), b))
                .collect::<Result<Vec<_>, _>>()?;
            parts_content(parts)
        }
    })
}

fn assistant_message(i: usize, content: &MessageContent) -> Result<Message, ConvertError> {
    let blocks = match content {
        MessageContent::Text(t) => return Ok(Message::text(oa::Role::Assistant, t.clone())),
        MessageContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => calls.push(ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: input.to_string(),
                },
            }),
            // Reasoning from an earlier turn: no canonical slot, and no provider needs it back.
            b if matches!(b.kind(), "thinking" | "redacted_thinking") => {}
            other => {
                return Err(invalid(format!(
                    "messages[{i}].content[{j}].type: {:?} is not supported in assistant turns",
                    other.kind()
                )));
            }
        }
    }
    let mut m = Message::text(oa::Role::Assistant, "");
    m.content = (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text));
    m.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(m)
}

/// The Messages response for a canonical completion.
pub fn messages_response_from_chat(c: &ChatCompletion, model: &str) -> MessagesResponse {
    let choice = c.choices.first();
    let msg = choice.map(|ch| &ch.message);
    let mut content = Vec::new();
    let text = msg.and_then(|m| m.content.as_deref()).unwrap_or("");
    if !text.is_empty() {
        content.push(ContentBlock::text(text));
    }
    let refusal = msg
        .and_then(|m| m.refusal.as_deref())
        .filter(|r| !r.is_empty());
    if let Some(r) = refusal {
        content.push(ContentBlock::text(r));
    }
    for call in msg
        .and_then(|m| m.tool_calls.as_ref())
        .into_iter()
        .flatten()
    {
        content.push(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input: tool_input(&call.function.arguments),
            cache_control: None,
        });
    }
    let finish = choice.and_then(|ch| ch.finish_reason);
    MessagesResponse {
        id: message_id(&c.id),
        kind: "message".into(),
        role: an::Role::Assistant,
        model: model.to_string(),
        content,
        stop_reason: Some(stop_reason(finish, refusal.is_some()).into()),
        stop_sequence: None,
        usage: anthropic_usage(c.usage.as_ref()),
    }
}

pub(super) fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Arguments as the object Anthropic clients expect; text that is not JSON is passed on as a
/// string rather than dropped.
fn tool_input(args: &str) -> Value {
    let args = args.trim();
    if args.is_empty() {
        return json!({});
    }
    serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_string()))
}

pub(super) fn stop_reason(finish: Option<FinishReason>, refused: bool) -> &'static str {
    match finish {
        _ if refused => "refusal",
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::Stop) | None => "end_turn",
    }
}

/// Anthropic's `input_tokens` leaves out the cached tokens OpenAI's prompt count includes.
pub(super) fn anthropic_usage(u: Option<&Usage>) -> AnthropicUsage {
    let Some(u) = u else {
        return AnthropicUsage::default();
    };
    let cached = u.cached_tokens();
    AnthropicUsage {
        input_tokens: u.prompt_tokens.saturating_sub(cached),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: Some(0),
        cache_read_input_tokens: Some(cached),
    }
}
