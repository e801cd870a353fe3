//! Provider adapters.
//!
//! - [`spec`]: a provider's kind, base URL, credential and options, validated.
//! - [`vendors`]: the table of OpenAI-compatible vendors (data, not code).
//! - [`provider`]: the handle the data plane calls; dispatches on the wire format to
//!   [`openai`] (OpenAI, Azure, every compatible vendor), [`anthropic`], [`gemini`] or
//!   [`local`] (the built-in CPU models).
//! - [`egress`]: the guard every outbound connection passes (public addresses only, unless
//!   allow-listed; metadata never; the resolved address pinned).
//! - [`http`]: the shared hyper client (no redirects, proxies or retries), each provider's
//!   request parts built once ([`http::Upstream`]), error mapping.
//! - [`events`]: the SSE events of a response body, with the stream idle bound.
//! - [`translated`]: the event loop of the translating adapters (Anthropic, Gemini).
//! - [`error`]: `ProviderError` and its `ErrorClass`, which the router falls back on.
//!
//! Adapters never touch the store: they get a `ProviderSpec` and a canonical request.

pub mod anthropic;
pub mod egress;
pub mod error;
pub mod events;
pub mod gemini;
pub mod http;
pub mod local;
pub mod openai;
pub mod provider;
pub mod spec;
pub mod translated;
pub mod vendors;

pub use error::{ErrorClass, ProviderError};
pub use provider::{ChatOutput, ChunkStream, Provider, StreamItem};
pub use spec::{ProviderKind, ProviderSpec, SpecError};
