//! The provider handle the data plane calls: one type, dispatching on the wire format.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use wire::openai::{
    ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest, EmbeddingsResponse, Usage,
};

use crate::error::ProviderError;
use crate::spec::{ProviderKind, ProviderSpec};
use crate::{anthropic, gemini, openai};

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

/// One streamed chunk; `raw` is the upstream's own JSON when it spoke OpenAI's format, so the
/// OpenAI egress can forward it without re-encoding.
#[derive(Debug, Clone)]
pub struct StreamItem {
    pub chunk: ChatChunk,
    pub raw: Option<Bytes>,
}

/// Ends with `Err(StreamBroken)` if the upstream stops without its terminator.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ProviderError>> + Send>>;

pub struct Provider {
    pub spec: ProviderSpec,
    http: reqwest::Client,
    /// Parsed once, so a request does not re-parse its URL.
    urls: openai::Urls,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Provider {
    pub fn new(spec: ProviderSpec, http: reqwest::Client) -> Self {
        let urls = openai::Urls::new(&spec);
        Provider { spec, http, urls }
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
            ProviderKind::Anthropic => anthropic::chat(&self.http, &self.spec, req, model).await,
            ProviderKind::Gemini => gemini::chat(&self.http, &self.spec, req, model).await,
            _ => openai::chat(&self.http, &self.spec, &self.urls, req, model).await,
        }
    }

    /// As [`Provider::chat`], streamed; the adapter sets the stream fields itself.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<ChunkStream, ProviderError> {
        match self.spec.kind {
            ProviderKind::Anthropic => {
                anthropic::chat_stream(&self.http, &self.spec, req, model).await
            }
            ProviderKind::Gemini => gemini::chat_stream(&self.http, &self.spec, req, model).await,
            _ => openai::chat_stream(&self.http, &self.spec, &self.urls, req, model).await,
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
            ProviderKind::Gemini => gemini::embeddings(&self.http, &self.spec, req).await,
            _ => openai::embeddings(&self.http, &self.spec, req).await,
        }
    }

    /// A cheap authenticated call (the model list) that proves the base URL and key work.
    pub async fn health(&self) -> Result<(), ProviderError> {
        match self.spec.kind {
            ProviderKind::Anthropic => anthropic::health(&self.http, &self.spec).await,
            ProviderKind::Gemini => gemini::health(&self.http, &self.spec).await,
            _ => openai::health(&self.http, &self.spec).await,
        }
    }
}
