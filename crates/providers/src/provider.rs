//! The provider handle the data plane calls: one type, dispatching on the wire format.

use std::pin::Pin;

use ::http::Uri;
use bytes::Bytes;
use futures::Stream;
use wire::openai::{
    ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest, EmbeddingsResponse, Usage,
};

use crate::error::ProviderError;
use crate::http::{self, Upstream};
use crate::spec::{ProviderKind, ProviderSpec};
use crate::{anthropic, gemini, local, openai};

/// A non-streaming answer.
#[derive(Debug, Clone)]
pub enum ChatOutput {
    /// An OpenAI-shaped body, forwarded byte for byte (unknown fields kept), with its usage.
    Raw { body: Bytes, usage: Option<Usage> },
    /// A body translated from another format.
    Completion(ChatCompletion),
}

impl ChatOutput {
    pub fn usage(&self) -> Option<Usage> {
        match self {
            ChatOutput::Raw { usage, .. } => *usage,
            ChatOutput::Completion(c) => c.usage,
        }
    }

    /// The typed completion (parses a raw body).
    pub fn into_completion(self, provider: &str) -> Result<ChatCompletion, ProviderError> {
        match self {
            ChatOutput::Completion(c) => Ok(c),
            ChatOutput::Raw { body, .. } => serde_json::from_slice(&body).map_err(|e| {
                ProviderError::new(
                    provider,
                    crate::ErrorClass::StreamBroken,
                    format!("upstream sent an unreadable chat completion: {e}"),
                )
            }),
        }
    }
}

/// One streamed chunk.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// The upstream's own OpenAI-shaped JSON, forwarded without re-encoding; only whether it
    /// has choices and its usage were read.
    Raw {
        json: Bytes,
        usage: Option<Usage>,
        has_choices: bool,
    },
    /// A chunk translated from another format.
    Chunk(ChatChunk),
}

impl StreamItem {
    pub fn usage(&self) -> Option<Usage> {
        match self {
            StreamItem::Raw { usage, .. } => *usage,
            StreamItem::Chunk(c) => c.usage,
        }
    }

    /// A chunk with usage and no choices: the one the gateway asked for to bill the request.
    pub fn is_usage_only(&self) -> bool {
        let has_choices = match self {
            StreamItem::Raw { has_choices, .. } => *has_choices,
            StreamItem::Chunk(c) => !c.choices.is_empty(),
        };
        !has_choices && self.usage().is_some()
    }

    /// The typed chunk (parses a raw one).
    pub fn into_chunk(self, provider: &str) -> Result<ChatChunk, ProviderError> {
        match self {
            StreamItem::Chunk(c) => Ok(c),
            StreamItem::Raw { json, .. } => serde_json::from_slice(&json).map_err(|e| {
                ProviderError::new(
                    provider,
                    crate::ErrorClass::StreamBroken,
                    format!("upstream sent a malformed chunk: {e}"),
                )
            }),
        }
    }
}

/// Ends with `Err(StreamBroken)` if the upstream stops without its terminator.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ProviderError>> + Send>>;

pub struct Provider {
    pub spec: ProviderSpec,
    /// The client with this provider's headers, built once.
    up: Upstream,
    /// The chat URL when it does not name the model (OpenAI and compatible vendors), parsed
    /// once, so a request does not re-parse its URL.
    chat_uri: Option<Uri>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Provider {
    pub fn new(spec: ProviderSpec, client: http::Client) -> Self {
        let up = match spec.kind {
            ProviderKind::Anthropic => anthropic::upstream(&spec, client),
            ProviderKind::Gemini => gemini::upstream(&spec, client),
            _ => openai::upstream(&spec, client),
        };
        let chat_uri = openai::fixed_chat_uri(&spec);
        Provider { spec, up, chat_uri }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn kind(&self) -> ProviderKind {
        self.spec.kind
    }

    /// `model` is the upstream model name; the consumer's `req.model` is not sent.
    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatOutput, ProviderError> {
        match self.spec.kind {
            ProviderKind::Local => local::chat(&self.spec, req, model).await,
            ProviderKind::Anthropic => anthropic::chat(&self.up, &self.spec, req, model).await,
            ProviderKind::Gemini => gemini::chat(&self.up, &self.spec, req, model).await,
            _ => openai::chat(&self.up, &self.spec, self.chat_uri.as_ref(), req, model).await,
        }
    }

    /// As [`Provider::chat`], streamed; the adapter sets the stream fields itself.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<ChunkStream, ProviderError> {
        match self.spec.kind {
            ProviderKind::Local => local::chat_stream(&self.spec, req, model).await,
            ProviderKind::Anthropic => {
                anthropic::chat_stream(&self.up, &self.spec, req, model).await
            }
            ProviderKind::Gemini => gemini::chat_stream(&self.up, &self.spec, req, model).await,
            _ => {
                openai::chat_stream(&self.up, &self.spec, self.chat_uri.as_ref(), req, model).await
            }
        }
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, ProviderError> {
        match self.spec.kind {
            ProviderKind::Anthropic => Err(ProviderError::new(
                &self.spec.name,
                crate::ErrorClass::BadRequest,
                "Anthropic offers no embeddings API; route this model to an embeddings provider",
            )),
            ProviderKind::Gemini => gemini::embeddings(&self.up, &self.spec, req).await,
            ProviderKind::Local => local::embeddings(&self.spec, req).await,
            _ => openai::embeddings(&self.up, &self.spec, req).await,
        }
    }

    /// OpenAI's moderation API (`body` is its request object), within `timeout`.
    pub async fn moderations(
        &self,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Bytes, ProviderError> {
        match self.spec.kind {
            ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Local => {
                Err(ProviderError::new(
                    &self.spec.name,
                    crate::ErrorClass::BadRequest,
                    "this provider offers no OpenAI moderation API",
                ))
            }
            _ => openai::moderations(&self.up, &self.spec, body, timeout).await,
        }
    }

    /// A cheap authenticated call (the model list) that proves the base URL and key work.
    pub async fn health(&self) -> Result<(), ProviderError> {
        match self.spec.kind {
            ProviderKind::Local => local::health(&self.spec).await,
            ProviderKind::Anthropic => anthropic::health(&self.up, &self.spec).await,
            ProviderKind::Gemini => gemini::health(&self.up, &self.spec).await,
            _ => openai::health(&self.up, &self.spec).await,
        }
    }
}
