//! The Anthropic Messages API (`POST /v1/messages`): wire types and conversions to and from the
//! canonical (OpenAI Chat Completions) types, in both directions.
//!
//! - `types`: the serde types: [`MessagesRequest`], [`ContentBlock`], [`MessagesResponse`],
//!   [`AnthropicUsage`], [`StreamEvent`], [`ErrorResponse`].
//! - `upstream`: the gateway calling Anthropic for an OpenAI-shaped request:
//!   [`request_from_chat`] → (Anthropic) → [`chat_from_response`]; `stream_to_chunks`: streamed,
//!   each event through [`StreamToChunks`].
//! - `ingress`: an Anthropic SDK calling the gateway: [`chat_from_messages_request`] →
//!   (any provider) → [`messages_response_from_chat`]; `chunks_to_stream`: streamed, each chunk
//!   through [`ChunksToStream`], each event out through [`encode_event`].
//! - here: the error table ([`error_type_for_status`], [`error_response`], [`parse_error`]) and
//!   [`ConvertError`].

use bytes::Bytes;

mod chunks_to_stream;
mod ingress;
mod stream_to_chunks;
mod types;
mod upstream;

pub use chunks_to_stream::ChunksToStream;
pub use ingress::{chat_from_messages_request, messages_response_from_chat};
pub use stream_to_chunks::StreamToChunks;
pub use types::*;
pub use upstream::{chat_from_response, json_mode, request_from_chat};

/// The tool that stands in for `response_format`: Anthropic has no JSON mode, so the request
/// forces a call to this tool with the wanted schema, and its input becomes the answer text.
pub const JSON_TOOL: &str = "json_response";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The request cannot be expressed in the other format; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// An `error` event in an upstream stream (e.g. `overloaded_error` after the 200).
    #[error("upstream {kind}: {message}")]
    Upstream { kind: String, message: String },
}

/// The documented error `type` for an HTTP status. Other 4xx are `invalid_request_error` (as
/// the docs say); other 5xx are `api_error`.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The Anthropic error body for a status, as the ingress route answers it.
pub fn error_response(status: u16, message: &str) -> ErrorResponse {
    ErrorResponse {
        kind: "error".into(),
        error: ErrorDetail {
            kind: error_type_for_status(status).into(),
            message: message.into(),
        },
        request_id: None,
    }
}

/// An upstream error body, if it is one.
pub fn parse_error(body: &[u8]) -> Option<ErrorResponse> {
    serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .filter(|e| e.kind == "error")
}

/// `event: <type>\ndata: <json>\n\n`
pub fn encode_event(ev: &StreamEvent) -> Bytes {
    // Serialising these types cannot fail (string keys, no non-finite floats).
    let json = serde_json::to_vec(ev).unwrap_or_default();
    crate::sse::named_event(ev.event_type(), &json)
}

#[cfg(test)]
mod tests;
