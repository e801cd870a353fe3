//! The LLM stage: the router picks targets and walks fallback chains; the provider adapter makes
//! the call. A stream is only committed once its first chunk has arrived, so a target that fails
//! before sending anything is still eligible for fallback.

use futures::StreamExt;
use providers::{ChatOutput, ChunkStream, ErrorClass, ProviderError, StreamItem};
use wire::openai::{ChatRequest, EmbeddingsRequest, EmbeddingsResponse};

use crate::error::GatewayError;
use crate::state::Snapshot;

/// A value and who served it.
pub struct Served<T> {
    pub value: T,
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// Why the first target was left, when it was.
    pub fallback: Option<ErrorClass>,
}

fn missing(provider: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorClass::NotFound,
        "the route names a provider that is not configured",
    )
}

pub async fn complete(
    snap: &Snapshot,
    req: &ChatRequest,
) -> Result<Served<ChatOutput>, GatewayError> {
    let out = router::execute(&snap.table, &req.model, |t| {
        let provider = snap.providers.get(&t.provider).cloned();
        async move {
            match provider {
                Some(p) => p.chat(req, &t.model).await,
                None => Err(missing(&t.provider)),
            }
        }
    })
    .await?;
    Ok(Served {
        value: out.value,
        provider: out.target.provider,
        model: out.target.model,
        fallback: out.fallback_reason,
    })
}

pub async fn open_stream(
    snap: &Snapshot,
    req: &ChatRequest,
) -> Result<Served<(StreamItem, ChunkStream)>, GatewayError> {
    let out = router::execute(&snap.table, &req.model, |t| {
        let provider = snap.providers.get(&t.provider).cloned();
        async move {
            let Some(p) = provider else {
                return Err(missing(&t.provider));
            };
            let mut s = p.chat_stream(req, &t.model).await?;
            match s.next().await {
                Some(Ok(first)) => Ok((first, s)),
                Some(Err(e)) => Err(e),
                None => Err(ProviderError::new(
                    p.name(),
                    ErrorClass::StreamBroken,
                    "upstream stream was empty",
                )),
            }
        }
    })
    .await?;
    Ok(Served {
        value: out.value,
        provider: out.target.provider,
        model: out.target.model,
        fallback: out.fallback_reason,
    })
}

pub async fn embed(
    snap: &Snapshot,
    req: &EmbeddingsRequest,
) -> Result<Served<EmbeddingsResponse>, GatewayError> {
    let out = router::execute(&snap.table, &req.model, |t| {
        let provider = snap.providers.get(&t.provider).cloned();
        let mut r = req.clone();
        r.model = t.model;
        async move {
            match provider {
                Some(p) => p.embeddings(&r).await,
                None => Err(missing(&t.provider)),
            }
        }
    })
    .await?;
    Ok(Served {
        value: out.value,
        provider: out.target.provider,
        model: out.target.model,
        fallback: out.fallback_reason,
    })
}
