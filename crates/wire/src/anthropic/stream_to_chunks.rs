//! The gateway calling Anthropic, streamed: each Messages stream event becomes canonical
//! chunks.

use std::collections::HashMap;

use super::types::{AnthropicUsage, BlockDelta, ContentBlock, StreamEvent};
use super::upstream::{finish_reason, usage};
use super::{ConvertError, JSON_TOOL};
use crate::openai::ToolCallDelta;
use crate::openai::{self as oa, ChatChunk, ChunkChoice, Delta, FinishReason, FunctionCallDelta};

#[derive(Debug, Clone, Copy)]
enum Block {
    Text,
    /// A tool call, with its index among the message's tool calls.
    Tool(u32),
    /// The JSON-mode tool: its input streams as content.
    Json,
    Ignored,
}

/// Turns Anthropic stream events into canonical chunks, one event at a time.
#[derive(Debug)]
pub struct StreamToChunks {
    json_mode: bool,
    id: String,
    model: String,
    created: u64,
    blocks: HashMap<u32, Block>,
    tool_calls: u32,
    usage: AnthropicUsage,
    finished: bool,
}

impl StreamToChunks {
    pub fn new(json_mode: bool) -> Self {
        StreamToChunks {
            json_mode,
            id: String::new(),
            model: String::new(),
            created: crate::unix_now(),
            blocks: HashMap::new(),
            tool_calls: 0,
            usage: AnthropicUsage::default(),
            finished: false,
        }
    }

    /// True once `message_stop` arrived: a stream ending before that was cut.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The chunks for one event (often none). An `error` event is an error.
    pub fn on_event(&mut self, ev: StreamEvent) -> Result<Vec<ChatChunk>, ConvertError> {
        Ok(match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage = message.usage;
                let delta = Delta {
                    role: Some(oa::Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                vec![self.chunk(delta, None)]
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block),
            StreamEvent::ContentBlockDelta { index, delta } => {
                match (self.blocks.get(&index).copied(), delta) {
                    (_, BlockDelta::TextDelta { text }) if !text.is_empty() => {
                        vec![self.content(text)]
                    }
                    (Some(Block::Json), BlockDelta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        vec![self.content(partial_json)]
                    }
                    (Some(Block::Tool(n)), BlockDelta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        let call = ToolCallDelta {
                            index: n,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            }),
                            ..ToolCallDelta::default()
                        };
                        vec![self.tool_chunk(call)]
                    }
                    _ => Vec::new(),
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                // Delta usage is cumulative: a field present replaces the running value.
                self.usage.output_tokens = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    self.usage.input_tokens = n;
                }
                if usage.cache_read_input_tokens.is_some() {
                    self.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
                }
                if usage.cache_creation_input_tokens.is_some() {
                    self.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
                }
                match delta.stop_reason {
                    Some(r) => {
                        let finish = finish_reason(&r, self.tool_calls > 0);
                        vec![self.chunk(Delta::default(), Some(finish))]
                    }
                    None => Vec::new(),
                }
            }
            StreamEvent::MessageStop => {
                self.finished = true;
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(usage(&self.usage));
                vec![last]
            }
            StreamEvent::Error { error } => {
                return Err(ConvertError::Upstream {
                    kind: error.kind,
                    message: error.message,
                });
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown => {
                Vec::new()
            }
        })
    }

    fn block_start(&mut self, index: u32, block: ContentBlock) -> Vec<ChatChunk> {
        match block {
            ContentBlock::Text { text, .. } => {
                self.blocks.insert(index, Block::Text);
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![self.content(text)]
                }
            }
            ContentBlock::ToolUse { name, .. } if self.json_mode && name == JSON_TOOL => {
                self.blocks.insert(index, Block::Json);
                Vec::new()
            }
            ContentBlock::ToolUse { id, name, .. } => {
                let n = self.tool_calls;
                self.tool_calls += 1;
                self.blocks.insert(index, Block::Tool(n));
                vec![self.tool_chunk(ToolCallDelta {
                    index: n,
                    id: Some(id),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    }),
                })]
            }
            _ => {
                self.blocks.insert(index, Block::Ignored);
                Vec::new()
            }
        }
    }

    fn content(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    fn tool_chunk(&self, call: ToolCallDelta) -> ChatChunk {
        self.chunk(
            Delta {
                tool_calls: Some(vec![call]),
                ..Delta::default()
            },
            None,
        )
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
        }
    }
}
