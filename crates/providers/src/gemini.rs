//! Gemini adapter: `generateContent`, `streamGenerateContent?alt=sse` and `batchEmbedContents`
//! on the v1beta API. The key travels in the `x-goog-api-key` header, never in the URL, so it
//! cannot leak through a logged URL.

use std::time::Duration;

use ::http::Request;
use ::http::header::HeaderName;

use wire::gemini::{
    self as wg, BatchEmbedContentsResponse, GenerateContentResponse, StreamToChunks,
};
use wire::openai::{ChatRequest, EmbeddingsRequest, EmbeddingsResponse};

use crate::error::{ErrorClass, ProviderError};
use crate::http::{self, ErrorParts, Upstream};
use crate::provider::{ChatOutput, ChunkStream};
use crate::spec::ProviderSpec;
use crate::translated;

/// The client with `x-goog-api-key`, built once.
pub fn upstream(spec: &ProviderSpec, client: http::Client) -> Upstream {
    let credential = spec.api_key.as_ref().map(|k| {
        (
            HeaderName::from_static("x-goog-api-key"),
            k.expose().to_string(),
        )
    });
    Upstream::new(client, &spec.base_url, credential, &[])
}

fn error_parts(body: &[u8]) -> Option<ErrorParts> {
    let e = wg::parse_error(body)?;
    Some(ErrorParts {
        message: e.error.message,
        code: Some(e.error.status),
        param: None,
    })
}

fn url(spec: &ProviderSpec, model: &str, action: &str) -> String {
    format!(
        "{}/v1beta/{}:{action}",
        spec.base_url,
        wg::model_resource(model)
    )
}

fn post(
    up: &Upstream,
    spec: &ProviderSpec,
    url: String,
    body: Vec<u8>,
    stream: bool,
) -> Result<Request<http::Body>, ProviderError> {
    up.post(&spec.name, http::uri(&spec.name, url)?, body, stream)
}

fn encode(spec: &ProviderSpec, req: &ChatRequest) -> Result<Vec<u8>, ProviderError> {
    let g = wg::request_from_chat(req)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    serde_json::to_vec(&g)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))
}

pub async fn chat(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChatOutput, ProviderError> {
    let body = encode(spec, req)?;
    let r = post(up, spec, url(spec, model, "generateContent"), body, false)?;
    let bytes = up.fetch(&spec.name, r, spec.timeout, error_parts).await?;
    let g: GenerateContentResponse = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(
            &spec.name,
            ErrorClass::StreamBroken,
            format!("upstream sent an unreadable response: {e}"),
        )
    })?;
    if g.candidates.is_empty() {
        // A prompt blocked by safety settings comes back with no candidates.
        return Err(ProviderError::new(
            &spec.name,
            ErrorClass::ContentFilter,
            "the provider blocked the prompt",
        ));
    }
    Ok(ChatOutput::Completion(wg::chat_from_response(g, model)))
}

pub async fn chat_stream(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChunkStream, ProviderError> {
    let body = encode(spec, req)?;
    let u = format!("{}?alt=sse", url(spec, model, "streamGenerateContent"));
    let r = post(up, spec, u, body, true)?;
    let resp = up
        .send_within(&spec.name, r, spec.timeout, error_parts)
        .await?;
    Ok(translated::stream(
        spec.name.clone(),
        resp,
        Events(StreamToChunks::new(model)),
    ))
}

struct Events(StreamToChunks);

impl translated::Translate for Events {
    fn event(
        &mut self,
        provider: &str,
        ev: wire::sse::SseEvent,
    ) -> Result<Vec<wire::openai::ChatChunk>, ProviderError> {
        match serde_json::from_str::<GenerateContentResponse>(&ev.data) {
            Ok(r) => Ok(self.0.on_response(r)),
            Err(e) => Err(match wg::parse_error(ev.data.as_bytes()) {
                Some(g) => ProviderError::from_status(provider, g.error.code, g.error.message),
                None => ProviderError::new(
                    provider,
                    ErrorClass::StreamBroken,
                    format!("upstream sent a malformed event: {e}"),
                ),
            }),
        }
    }

    /// Gemini has no terminator event: the stream is read to its end.
    fn finished(&self) -> bool {
        false
    }

    fn end(&mut self, provider: &str) -> Result<Vec<wire::openai::ChatChunk>, ProviderError> {
        if self.0.saw_finish_reason() {
            Ok(self.0.finish())
        } else {
            Err(ProviderError::new(
                provider,
                ErrorClass::StreamBroken,
                "upstream stream ended without a finish reason",
            ))
        }
    }
}

pub async fn embeddings(
    up: &Upstream,
    spec: &ProviderSpec,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ProviderError> {
    let batch = wg::embed_request_from_openai(req, &req.model)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    let body = serde_json::to_vec(&batch)
        .map_err(|e| ProviderError::new(&spec.name, ErrorClass::BadRequest, e.to_string()))?;
    let r = post(
        up,
        spec,
        url(spec, &req.model, "batchEmbedContents"),
        body,
        false,
    )?;
    let bytes = up.fetch(&spec.name, r, spec.timeout, error_parts).await?;
    let b: BatchEmbedContentsResponse = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(
            &spec.name,
            ErrorClass::StreamBroken,
            format!("upstream sent unreadable embeddings: {e}"),
        )
    })?;
    // The batch API reports no usage: estimate at four characters a token.
    let chars: usize = req
        .input
        .texts()
        .unwrap_or_default()
        .iter()
        .map(|t| t.len())
        .sum();
    Ok(wg::embeddings_from_gemini(
        b,
        &req.model,
        chars.div_ceil(4) as u64,
    ))
}

pub async fn health(up: &Upstream, spec: &ProviderSpec) -> Result<(), ProviderError> {
    let uri = http::uri(&spec.name, format!("{}/v1beta/models", spec.base_url))?;
    let r = up.get(&spec.name, uri)?;
    up.fetch(&spec.name, r, Duration::from_secs(10), error_parts)
        .await
        .map(|_| ())
}
