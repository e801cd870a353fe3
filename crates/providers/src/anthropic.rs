//! Anthropic Messages API adapter (wire conversions live in `wire::anthropic`).

use wire::openai::ChatRequest;

use crate::error::{ErrorClass, ProviderError};
use crate::provider::{ChatOutput, ChunkStream};
use crate::spec::ProviderSpec;

pub async fn chat(_http: &reqwest::Client, spec: &ProviderSpec, _req: &ChatRequest) -> Result<ChatOutput, ProviderError> {
    Err(ProviderError::new(&spec.name, ErrorClass::BadRequest, "anthropic adapter not built yet"))
}

pub async fn chat_stream(_http: &reqwest::Client, spec: &ProviderSpec, _req: &ChatRequest) -> Result<ChunkStream, ProviderError> {
    Err(ProviderError::new(&spec.name, ErrorClass::BadRequest, "anthropic adapter not built yet"))
}

pub async fn health(_http: &reqwest::Client, spec: &ProviderSpec) -> Result<(), ProviderError> {
    Err(ProviderError::new(&spec.name, ErrorClass::BadRequest, "anthropic adapter not built yet"))
}
