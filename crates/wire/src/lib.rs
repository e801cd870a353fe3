//! Wire formats, with no I/O.
//!
//! - [`openai`]: the OpenAI Chat Completions / Embeddings / Models types. They double as the
//!   gateway's canonical types: every ingress format converts into them and every upstream
//!   adapter converts out of them.
//! - [`anthropic`]: the Anthropic Messages API types and conversions to and from canonical,
//!   both for an Anthropic upstream and for `POST /v1/messages` ingress.
//! - [`gemini`]: the Gemini `generateContent` types and conversions.
//! - [`sse`]: the server-sent-events parser and encoder every streaming path shares.
//! - [`error`]: the OpenAI error body.
//! - [`secret`]: the redacting string type for keys and tokens.

pub mod anthropic;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod secret;
pub mod sse;

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
