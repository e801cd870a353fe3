//! OpenAI wire format: OpenAI itself, Azure OpenAI (deployment URLs, `api-version`, `api-key`
//! header) and every OpenAI-compatible vendor. Requests go out as the canonical type (unknown
//! fields included); non-streaming bodies come back untouched with only their usage read.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ::http::Uri;
use ::http::header::{AUTHORIZATION, HeaderName};
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use wire::openai::{ChatRequest, EmbeddingsRequest, EmbeddingsResponse, Usage, UsageOnly};

use crate::error::{ErrorClass, ProviderError};
use crate::events::Events;
use crate::http::{self, ErrorParts, Upstream};
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

/// The client with this provider's credential header (`Authorization: Bearer …`, or Azure's
/// `api-key`), built once.
pub fn upstream(spec: &ProviderSpec, client: http::Client) -> Upstream {
    let credential = spec.api_key.as_ref().map(|k| match spec.kind {
        ProviderKind::AzureOpenAi => (HeaderName::from_static("api-key"), k.expose().to_string()),
        _ => (AUTHORIZATION, format!("Bearer {}", k.expose())),
    });
    Upstream::new(client, &spec.base_url, credential, &[])
}

/// The chat URL of a provider that does not put the model in its path, parsed once.
pub fn fixed_chat_uri(spec: &ProviderSpec) -> Option<Uri> {
    match spec.kind {
        ProviderKind::AzureOpenAi | ProviderKind::Anthropic | ProviderKind::Gemini => None,
        _ => Uri::try_from(url(spec, Op::Chat, "")).ok(),
    }
}

fn chat_uri(spec: &ProviderSpec, fixed: Option<&Uri>, model: &str) -> Result<Uri, ProviderError> {
    match fixed {
        Some(u) => Ok(u.clone()),
        None => http::uri(&spec.name, url(spec, Op::Chat, model)),
    }
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
    up: &Upstream,
    spec: &ProviderSpec,
    chat_uri_fixed: Option<&Uri>,
    req: &ChatRequest,
    model: &str,
) -> Result<ChatOutput, ProviderError> {
    let body = encode(&spec.name, req, model)?;
    let uri = chat_uri(spec, chat_uri_fixed, model)?;
    let r = up.post(&spec.name, uri, body, false)?;
    let body = up.fetch(&spec.name, r, spec.timeout, error_parts).await?;
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
    up: &Upstream,
    spec: &ProviderSpec,
    chat_uri_fixed: Option<&Uri>,
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
    let uri = chat_uri(spec, chat_uri_fixed, model)?;
    let rq = up.post(&spec.name, uri, body, true)?;
    let resp = up
        .send_within(&spec.name, rq, spec.timeout, error_parts)
        .await?;
    Ok(Box::pin(Chunks {
        events: Events::new(spec.name.clone(), resp, STREAM_IDLE),
        done: false,
    }))
}

/// The chunks of an OpenAI event stream, ending at `[DONE]`; an end of events before it means
/// the stream was cut.
struct Chunks {
    events: Events,
    done: bool,
}

impl Stream for Chunks {
    type Item = Result<StreamItem, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match ready!(this.events.poll_event(cx)) {
            None => Err(ProviderError::new(
                this.events.provider(),
                ErrorClass::StreamBroken,
                "upstream stream ended before [DONE]",
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(ev)) if ev.data == "[DONE]" => {
                this.done = true;
                this.events.release(cx);
                return Poll::Ready(None);
            }
            Some(Ok(ev)) => probe_chunk(this.events.provider(), ev.data),
        };
        this.done = item.is_err();
        Poll::Ready(Some(item))
    }
}

/// Reads only what the gateway needs of a chunk (whether it has choices, its usage) and keeps
/// the JSON to forward as is.
fn probe_chunk(provider: &str, data: String) -> Result<StreamItem, ProviderError> {
    match serde_json::from_str::<Probe>(&data) {
        Ok(p) => Ok(StreamItem::Raw {
            json: Bytes::from(data),
            usage: p.usage,
            has_choices: p.choices.0,
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

/// The two fields of a `chat.completion.chunk` the gateway reads; everything else is skipped
/// unparsed. `choices` is required, as in the typed chunk (an error object has none).
#[derive(Deserialize)]
struct Probe {
    choices: NonEmpty,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Whether a JSON array has any element (the elements are skipped, not built).
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
        }
        d.deserialize_seq(Visit)
    }
}

pub async fn embeddings(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ProviderError> {
    let body = serde_json::to_vec(req)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    let uri = http::uri(&spec.name, url(spec, Op::Embeddings, &req.model))?;
    let r = up.post(&spec.name, uri, body, false)?;
    let body = up.fetch(&spec.name, r, spec.timeout, error_parts).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ProviderError::new(
            &spec.name,
            ErrorClass::StreamBroken,
            format!("upstream sent unreadable embeddings: {e}"),
        )
    })
}

/// `POST {base}/moderations` with the body as given; the answer's bytes (OpenAI's moderation
/// object). Azure OpenAI has no moderation endpoint.
pub async fn moderations(
    up: &Upstream,
    spec: &ProviderSpec,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, ProviderError> {
    if spec.kind == ProviderKind::AzureOpenAi {
        return Err(ProviderError::new(
            &spec.name,
            ErrorClass::BadRequest,
            "Azure OpenAI has no moderation endpoint; use an `openai` provider",
        ));
    }
    let uri = http::uri(&spec.name, format!("{}/moderations", spec.base_url))?;
    let r = up.post(&spec.name, uri, body, false)?;
    up.fetch(&spec.name, r, timeout, error_parts).await
}

pub async fn health(up: &Upstream, spec: &ProviderSpec) -> Result<(), ProviderError> {
    let uri = http::uri(&spec.name, url(spec, Op::Models, ""))?;
    let r = up.get(&spec.name, uri)?;
    up.fetch(&spec.name, r, Duration::from_secs(10), error_parts)
        .await
        .map(|_| ())
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
