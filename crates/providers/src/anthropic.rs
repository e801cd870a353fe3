//! Anthropic Messages API adapter: `x-api-key` and `anthropic-version` headers, requests and
//! answers translated through `wire::anthropic`, the event stream turned into canonical chunks.

use std::time::Duration;

use ::http::Request;
use ::http::header::{HeaderName, HeaderValue};

use wire::anthropic::{self as wa, MessagesResponse, StreamEvent, StreamToChunks};
use wire::openai::ChatRequest;

use crate::error::{ErrorClass, ProviderError};
use crate::http::{self, ErrorParts, Upstream};
use crate::provider::{ChatOutput, ChunkStream};
use crate::spec::ProviderSpec;
use crate::translated;

pub const API_VERSION: &str = "2023-06-01";

/// The client with `x-api-key` and `anthropic-version`, built once.
pub fn upstream(spec: &ProviderSpec, client: http::Client) -> Upstream {
    let credential = spec
        .api_key
        .as_ref()
        .map(|k| (HeaderName::from_static("x-api-key"), k.expose().to_string()));
    let version = (
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    );
    Upstream::new(client, &spec.base_url, credential, &[version])
}

fn error_parts(body: &[u8]) -> Option<ErrorParts> {
    let e = wa::parse_error(body)?;
    Some(ErrorParts {
        message: e.error.message,
        code: Some(e.error.kind),
        param: None,
    })
}

fn build(
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
    stream: bool,
) -> Result<(Vec<u8>, bool), ProviderError> {
    let mut m = wa::request_from_chat(req, model)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    m.stream = stream.then_some(true);
    let body = serde_json::to_vec(&m)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    Ok((body, wa::json_mode(req)))
}

fn post(
    up: &Upstream,
    spec: &ProviderSpec,
    body: Vec<u8>,
    stream: bool,
) -> Result<Request<http::Body>, ProviderError> {
    let uri = http::uri(&spec.name, format!("{}/v1/messages", spec.base_url))?;
    up.post(&spec.name, uri, body, stream)
}

pub async fn chat(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChatOutput, ProviderError> {
    let (body, json_mode) = build(spec, req, model, false)?;
    let r = post(up, spec, body, false)?;
    let bytes = up.fetch(&spec.name, r, spec.timeout, error_parts).await?;
    let m: MessagesResponse = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(
            &spec.name,
            ErrorClass::StreamBroken,
            format!("upstream sent an unreadable message: {e}"),
        )
    })?;
    Ok(ChatOutput::Completion(wa::chat_from_response(m, json_mode)))
}

pub async fn chat_stream(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChunkStream, ProviderError> {
    let (body, json_mode) = build(spec, req, model, true)?;
    let r = post(up, spec, body, true)?;
    let resp = up
        .send_within(&spec.name, r, spec.timeout, error_parts)
        .await?;
    Ok(translated::stream(
        spec.name.clone(),
        resp,
        Events(StreamToChunks::new(json_mode)),
    ))
}

struct Events(StreamToChunks);

impl translated::Translate for Events {
    fn event(
        &mut self,
        provider: &str,
        ev: wire::sse::SseEvent,
    ) -> Result<Vec<wire::openai::ChatChunk>, ProviderError> {
        let event: StreamEvent = serde_json::from_str(&ev.data).map_err(|e| {
            ProviderError::new(
                provider,
                ErrorClass::StreamBroken,
                format!("upstream sent a malformed event: {e}"),
            )
        })?;
        self.0.on_event(event).map_err(|e| match e {
            wa::ConvertError::Upstream { kind, message } => {
                let class = match kind.as_str() {
                    "overloaded_error" | "api_error" => ErrorClass::Server,
                    "rate_limit_error" => ErrorClass::RateLimited,
                    _ => ErrorClass::StreamBroken,
                };
                ProviderError::new(provider, class, message)
            }
            wa::ConvertError::Invalid(m) => {
                ProviderError::new(provider, ErrorClass::StreamBroken, m)
            }
        })
    }

    fn finished(&self) -> bool {
        self.0.is_finished()
    }

    fn end(&mut self, provider: &str) -> Result<Vec<wire::openai::ChatChunk>, ProviderError> {
        Err(ProviderError::new(
            provider,
            ErrorClass::StreamBroken,
            "upstream stream ended before message_stop",
        ))
    }
}

pub async fn health(up: &Upstream, spec: &ProviderSpec) -> Result<(), ProviderError> {
    let uri = http::uri(&spec.name, format!("{}/v1/models", spec.base_url))?;
    let r = up.get(&spec.name, uri)?;
    up.fetch(&spec.name, r, Duration::from_secs(10), error_parts)
        .await
        .map(|_| ())
}
