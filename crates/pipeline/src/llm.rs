//! The LLM stage: the router picks targets and walks fallback chains; the provider adapter makes
//! the call. A stream is only committed once its first chunk has arrived, so a target that fails
//! before sending anything is still eligible for fallback.

use futures::StreamExt;
use providers::{ChatOutput, ChunkStream, ErrorClass, ProviderError, StreamItem};
use wire::openai::{ChatRequest, EmbeddingsRequest, EmbeddingsResponse, StreamOptions};

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
        let mut r = req.clone();
        r.model = t.model;
        r.stream = None;
        r.stream_options = None;
        async move {
            match provider {
                Some(p) => p.chat(&r).await,
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
        let mut r = req.clone();
        r.model = t.model;
        r.stream = Some(true);
        async move {
            let Some(p) = provider else {
                return Err(missing(&t.provider));
            };
            if p.kind().speaks_openai() {
                // Always ask for usage so the request can be billed; the egress drops the usage
                // chunk again if the consumer did not ask for it.
                let opts = r.stream_options.get_or_insert_with(StreamOptions::default);
                opts.include_usage = Some(true);
            }
            let mut s = p.chat_stream(&r).await?;
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
