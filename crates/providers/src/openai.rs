//! OpenAI wire format: OpenAI itself, Azure OpenAI (deployment URLs, `api-version`, `api-key`
//! header) and every OpenAI-compatible vendor. Requests go out as the canonical type (unknown
//! fields included); non-streaming bodies come back untouched with only their usage read.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use wire::openai::{ChatChunk, ChatRequest, EmbeddingsRequest, EmbeddingsResponse, UsageOnly};

use crate::error::{ErrorClass, ProviderError};
use crate::http::{self, ErrorParts};
use crate::provider::{ChatOutput, ChunkStream, StreamItem};
use crate::spec::{ProviderKind, ProviderSpec};

/// Longest silence allowed between two stream reads.
pub const STREAM_IDLE: Duration = Duration::from_secs(300);

enum Op {
    Chat,
    Embeddings,
    Models,
}

fn url(spec: &ProviderSpec, op: Op, model: &str) -> String {
    match spec.kind {
        ProviderKind::AzureOpenAi => {
            let version = spec.api_version.as_deref().unwrap_or("2024-10-21");
            let dep = spec.deployment_for(model);
            match op {
                Op::Chat => format!(
                    "{}/openai/deployments/{dep}/chat/completions?api-version={version}",
                    spec.base_url
                ),
                Op::Embeddings => format!(
                    "{}/openai/deployments/{dep}/embeddings?api-version={version}",
                    spec.base_url
                ),
                Op::Models => format!("{}/openai/models?api-version={version}", spec.base_url),
            }
        }
        _ => match op {
            Op::Chat => format!("{}/chat/completions", spec.base_url),
            Op::Embeddings => format!("{}/embeddings", spec.base_url),
            Op::Models => format!("{}/models", spec.base_url),
        },
    }
}

fn authed(rb: reqwest::RequestBuilder, spec: &ProviderSpec) -> reqwest::RequestBuilder {
    match (&spec.api_key, spec.kind) {
        (Some(k), ProviderKind::AzureOpenAi) => rb.header("api-key", k.expose()),
        (Some(k), _) => rb.bearer_auth(k.expose()),
        (None, _) => rb,
    }
}

fn post_json(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    url: String,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    authed(http.post(url), spec)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
}

/// OpenAI's error body: `{"error":{"message","type","code","param"}}` (Azure's is the same shape).
pub fn error_parts(body: &[u8]) -> Option<ErrorParts> {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: Option<String>,
        code: Option<serde_json::Value>,
        param: Option<String>,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    Some(ErrorParts {
        message: b.error.message.unwrap_or_default(),
        code: b.error.code.map(|c| match c {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }),
        param: b.error.param,
    })
}

fn encode(provider: &str, req: &ChatRequest) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(req)
        .map_err(|e| ProviderError::new(provider, ErrorClass::BadRequest, e.to_string()))
}

pub async fn chat(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    req: &ChatRequest,
) -> Result<ChatOutput, ProviderError> {
    let body = encode(&spec.name, req)?;
    let rb = post_json(http, spec, url(spec, Op::Chat, &req.model), body).timeout(spec.timeout);
    let resp = http::send(&spec.name, rb, error_parts).await?;
    let body = http::body(&spec.name, resp).await?;
    let usage = serde_json::from_slice::<UsageOnly>(&body)
        .map_err(|e| {
            ProviderError::new(
                &spec.name,
                ErrorClass::StreamBroken,
                format!("upstream sent an unreadable chat completion: {e}"),
            )
        })?
        .usage;
    Ok(ChatOutput::Raw { body, usage })
}

pub async fn chat_stream(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    req: &ChatRequest,
) -> Result<ChunkStream, ProviderError> {
    let body = encode(&spec.name, req)?;
    let rb = post_json(http, spec, url(spec, Op::Chat, &req.model), body)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    let resp = tokio::time::timeout(spec.timeout, http::send(&spec.name, rb, error_parts))
        .await
        .map_err(|_| {
            ProviderError::new(
                &spec.name,
                ErrorClass::Timeout,
                "no response from upstream in time",
            )
        })??;
    let provider = spec.name.clone();
    let events = http::sse_events(provider.clone(), resp, STREAM_IDLE);
    // `done` flips on `[DONE]`; an end of events before it means the stream was cut.
    let stream = futures::stream::unfold(
        (Box::pin(events), false, provider),
        |(mut events, done, provider)| async move {
            if done {
                return None;
            }
            match events.next().await {
                None => {
                    let e = ProviderError::new(
                        &provider,
                        ErrorClass::StreamBroken,
                        "upstream stream ended before [DONE]",
                    );
                    Some((Err(e), (events, true, provider)))
                }
                Some(Err(e)) => Some((Err(e), (events, true, provider))),
                Some(Ok(ev)) if ev.data == "[DONE]" => None,
                Some(Ok(ev)) => {
                    let item = parse_chunk(&provider, ev.data);
                    let stop = item.is_err();
                    Some((item, (events, stop, provider)))
                }
            }
        },
    );
    Ok(Box::pin(stream))
}

fn parse_chunk(provider: &str, data: String) -> Result<StreamItem, ProviderError> {
    match serde_json::from_str::<ChatChunk>(&data) {
        Ok(chunk) => Ok(StreamItem {
            chunk,
            raw: Some(Bytes::from(data)),
        }),
        Err(e) => match error_parts(data.as_bytes()) {
            // Some servers report a failure mid-stream as an error object.
            Some(p) => Err(ProviderError::new(provider, ErrorClass::Server, p.message)),
            None => Err(ProviderError::new(
                provider,
                ErrorClass::StreamBroken,
                format!("upstream sent a malformed chunk: {e}"),
            )),
        },
    }
}

pub async fn embeddings(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ProviderError> {
    let body = serde_json::to_vec(req)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    let rb =
        post_json(http, spec, url(spec, Op::Embeddings, &req.model), body).timeout(spec.timeout);
    let resp = http::send(&spec.name, rb, error_parts).await?;
    let body = http::body(&spec.name, resp).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ProviderError::new(
            &spec.name,
            ErrorClass::StreamBroken,
            format!("upstream sent unreadable embeddings: {e}"),
        )
    })
}

pub async fn health(http: &reqwest::Client, spec: &ProviderSpec) -> Result<(), ProviderError> {
    let rb = authed(http.get(url(spec, Op::Models, "")), spec).timeout(Duration::from_secs(10));
    http::send(&spec.name, rb, error_parts).await.map(|_| ())
}
