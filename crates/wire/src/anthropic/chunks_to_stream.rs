//! An Anthropic SDK calling the gateway, streamed: canonical chunks become the Messages event
//! sequence.

use std::collections::HashSet;

use serde_json::json;

use super::ingress::{anthropic_usage, message_id, stop_reason};
use super::types::{self as an, BlockDelta, ContentBlock, DeltaUsage, MessageDelta};
use super::types::{MessagesResponse, StreamEvent};
use crate::openai::{ChatChunk, FinishReason, ToolCallDelta, Usage};

#[derive(Debug, Clone)]
enum Open {
    Text(u32),
    Tool { index: u32, call: u32, id: String },
}

/// Turns canonical chunks into the Anthropic event sequence: `message_start`, then per block
/// `content_block_start` / `content_block_delta`… / `content_block_stop`, then at
/// [`finish`](Self::finish) `message_delta` and `message_stop`.
#[derive(Debug)]
pub struct ChunksToStream {
    model: String,
    started: bool,
    done: bool,
    next_index: u32,
    open: Option<Open>,
    /// Canonical tool-call indexes whose block is already closed.
    closed_calls: HashSet<u32>,
    finish: Option<FinishReason>,
    refused: bool,
    usage: Option<Usage>,
}

impl ChunksToStream {
    pub fn new(model: &str) -> Self {
        ChunksToStream {
            model: model.to_string(),
            started: false,
            done: false,
            next_index: 0,
            open: None,
            closed_calls: HashSet::new(),
            finish: None,
            refused: false,
            usage: None,
        }
    }

    pub fn on_chunk(&mut self, c: &ChatChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if c.usage.is_some() {
            self.usage = c.usage;
        }
        self.start(&c.id, &mut out);
        for ch in c.choices.iter().filter(|ch| ch.index == 0) {
            if let Some(t) = ch.delta.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(t, &mut out);
            }
            if let Some(r) = ch.delta.refusal.as_deref().filter(|r| !r.is_empty()) {
                self.refused = true;
                self.text(r, &mut out);
            }
            for call in ch.delta.tool_calls.iter().flatten() {
                self.tool(call, &mut out);
            }
            if ch.finish_reason.is_some() {
                self.finish = ch.finish_reason;
            }
        }
        out
    }

    /// Closes the stream; call once the upstream stream ended. Later calls return nothing.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        self.start("unknown", &mut out);
        self.close(&mut out);
        let usage = self.usage.unwrap_or_default();
        let cached = usage.cached_tokens();
        out.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop_reason(self.finish, self.refused).into()),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: usage.completion_tokens,
                // Only when known: SDKs overwrite the `message_start` numbers with these.
                input_tokens: self.usage.map(|u| u.prompt_tokens.saturating_sub(cached)),
                cache_creation_input_tokens: None,
                cache_read_input_tokens: self.usage.map(|_| cached),
            },
        });
        out.push(StreamEvent::MessageStop);
        out
    }

    fn start(&mut self, id: &str, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut usage = anthropic_usage(self.usage.as_ref());
        usage.output_tokens = 0;
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: message_id(id),
                kind: "message".into(),
                role: an::Role::Assistant,
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage,
            },
        });
    }

    fn open_block(&mut self, block: ContentBlock, out: &mut Vec<StreamEvent>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        index
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        let index = match self.open.take() {
            None => return,
            Some(Open::Text(index)) => index,
            Some(Open::Tool { index, call, .. }) => {
                self.closed_calls.insert(call);
                index
            }
        };
        out.push(StreamEvent::ContentBlockStop { index });
    }

    fn text(&mut self, text: &str, out: &mut Vec<StreamEvent>) {
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                let index = self.open_block(ContentBlock::text(""), out);
                self.open = Some(Open::Text(index));
                index
            }
        };
        let delta = BlockDelta::TextDelta {
            text: text.to_string(),
        };
        out.push(StreamEvent::ContentBlockDelta { index, delta });
    }

    fn tool(&mut self, call: &ToolCallDelta, out: &mut Vec<StreamEvent>) {
        // A delta continues the open call unless it names another index or a new id (some
        // OpenAI-compatible servers reuse index 0 for every call).
        let continues = matches!(&self.open, Some(Open::Tool { call: c, id, .. })
            if *c == call.index && call.id.as_deref().is_none_or(|new| new == id));
        let index = match &self.open {
            Some(Open::Tool { index, .. }) if continues => *index,
            _ => {
                // Blocks cannot reopen: a late fragment for a closed call has nowhere to go.
                if call.id.is_none() && self.closed_calls.contains(&call.index) {
                    return;
                }
                let id = call
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("toolu_{}", self.next_index));
                let name = call
                    .function
                    .as_ref()
                    .and_then(|f| f.name.clone())
                    .unwrap_or_default();
                let block = ContentBlock::ToolUse {
                    id: id.clone(),
                    name,
                    input: json!({}),
                    cache_control: None,
                };
                let index = self.open_block(block, out);
                self.open = Some(Open::Tool {
                    index,
                    call: call.index,
                    id,
                });
                index
            }
        };
        let args = call.function.as_ref().and_then(|f| f.arguments.as_deref());
        if let Some(args) = args.filter(|a| !a.is_empty()) {
            let delta = BlockDelta::InputJsonDelta {
                partial_json: args.to_string(),
            };
            out.push(StreamEvent::ContentBlockDelta { index, delta });
        }
    }
}
