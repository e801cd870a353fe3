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

/// The fixed URLs of a provider that does not put the model in its path, parsed once.
#[derive(Debug, Clone)]
pub struct Urls {
    chat: Option<reqwest::Url>,
}

impl Urls {
    pub fn new(spec: &ProviderSpec) -> Urls {
        let chat = match spec.kind {
            ProviderKind::AzureOpenAi | ProviderKind::Anthropic | ProviderKind::Gemini => None,
            _ => reqwest::Url::parse(&format!("{}/chat/completions", spec.base_url)).ok(),
        };
        Urls { chat }
    }

    fn chat(&self, spec: &ProviderSpec, model: &str) -> Result<reqwest::Url, ProviderError> {
        match &self.chat {
            Some(u) => Ok(u.clone()),
            None => reqwest::Url::parse(&url(spec, Op::Chat, model)).map_err(|e| {
                ProviderError::new(
                    &spec.name,
                    ErrorClass::BadRequest,
                    format!("bad upstream URL: {e}"),
                )
            }),
        }
    }
}

fn post_json(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    url: impl reqwest::IntoUrl,
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

/// The request as JSON with `model` replaced by the upstream name, without cloning the request:
/// `model` is the struct's first field, so its JSON starts `{"model":"…",` and only that prefix
/// changes.
pub fn encode(provider: &str, req: &ChatRequest, model: &str) -> Result<Vec<u8>, ProviderError> {
    let bad =
        |e: serde_json::Error| ProviderError::new(provider, ErrorClass::BadRequest, e.to_string());
    let json = serde_json::to_vec(req).map_err(bad)?;
    if req.model == model {
        return Ok(json);
    }
    let old = serde_json::to_vec(&req.model).map_err(bad)?;
    let prefix_len = br#"{"model":"#.len() + old.len();
    if json.len() < prefix_len
        || !json.starts_with(br#"{"model":"#)
        || json[9..prefix_len] != old[..]
    {
        return Err(ProviderError::new(
            provider,
            ErrorClass::BadRequest,
            "request did not serialise with model first",
        ));
    }
    let new = serde_json::to_vec(model).map_err(bad)?;
    let mut out = Vec::with_capacity(json.len() + new.len());
    out.extend_from_slice(br#"{"model":"#);
    out.extend_from_slice(&new);
    out.extend_from_slice(&json[prefix_len..]);
    Ok(out)
}

pub async fn chat(
    http: &reqwest::Client,
    spec: &ProviderSpec,
    urls: &Urls,
    req: &ChatRequest,
    model: &str,
) -> Result<ChatOutput, ProviderError> {
    let body = encode(&spec.name, req, model)?;
    let rb = post_json(http, spec, urls.chat(spec, model)?, body).timeout(spec.timeout);
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
    urls: &Urls,
    req: &ChatRequest,
    model: &str,
) -> Result<ChunkStream, ProviderError> {
    let mut r = req.clone();
    r.stream = Some(true);
    // Always ask for usage so the request can be billed; the egress drops the usage chunk again
    // if the consumer did not ask for it.
    r.stream_options
        .get_or_insert_with(Default::default)
        .include_usage = Some(true);
    let body = encode(&spec.name, &r, model)?;
    let rb = post_json(http, spec, urls.chat(spec, model)?, body)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    let resp = http::send_within(&spec.name, rb, spec.timeout, error_parts).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_swaps_only_the_model() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"smart","messages":[{"role":"user","content":"say \"model\""}],"seed":1,"x":{"model":"keep"}}"#,
        )
        .unwrap_or_default();
        let out = encode("p", &req, "gpt-4o").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["x"]["model"], "keep");
        assert_eq!(v["messages"][0]["content"], "say \"model\"");
        assert_eq!(
            encode("p", &req, "smart").ok(),
            serde_json::to_vec(&req).ok()
        );
    }
}
