//! Upstream failures, classified once so the router can pick a fallback chain by class and the
//! pipeline can map each class to one consumer-facing status.

use std::time::Duration;

/// What kind of failure, as far as retrying and falling back is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 429 from the provider.
    RateLimited,
    /// 5xx (and Anthropic's 529) from the provider.
    Server,
    /// No answer (or no first byte) in time.
    Timeout,
    /// Could not connect, or the connection broke before a response.
    Connect,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The provider rejected the gateway's credential: an operator problem, never the consumer's.
    Auth,
    /// The provider rejected the request itself.
    BadRequest,
    /// The provider does not know the model.
    NotFound,
    /// The provider refused for content policy.
    ContentFilter,
    /// A stream ended without its terminator, or sent something unparseable.
    StreamBroken,
}

impl ErrorClass {
    /// Whether another attempt (same or other target) may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited
                | ErrorClass::Server
                | ErrorClass::Timeout
                | ErrorClass::Connect
                | ErrorClass::Auth
                | ErrorClass::NotFound
                | ErrorClass::StreamBroken
        )
    }

    /// A class the upstream's own error code pins down better than its status.
    pub fn from_code(code: &str) -> Option<ErrorClass> {
        match code {
            "context_length_exceeded" => Some(ErrorClass::ContextLength),
            "content_policy_violation" | "content_filter" => Some(ErrorClass::ContentFilter),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Server => "server_error",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect_error",
            ErrorClass::ContextLength => "context_length",
            ErrorClass::Auth => "upstream_auth",
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::NotFound => "model_not_found",
            ErrorClass::ContentFilter => "content_filter",
            ErrorClass::StreamBroken => "stream_broken",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("provider {provider}: {message}")]
pub struct ProviderError {
    pub class: ErrorClass,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
    /// Safe to show the consumer: never contains a credential.
    pub message: String,
    pub retry_after: Option<Duration>,
    pub provider: String,
    /// OpenAI-style `code`/`param` from the upstream body, passed on to the consumer.
    pub code: Option<String>,
    pub param: Option<String>,
}

impl ProviderError {
    pub fn new(provider: &str, class: ErrorClass, message: impl Into<String>) -> Self {
        ProviderError {
            class,
            status: None,
            message: message.into(),
            retry_after: None,
            provider: provider.to_string(),
            code: None,
            param: None,
        }
    }

    /// Classifies an upstream HTTP error status; `message` is the vendor's own text.
    pub fn from_status(provider: &str, status: u16, message: String) -> Self {
        let lower = message.to_ascii_lowercase();
        let class = match status {
            429 => ErrorClass::RateLimited,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            408 | 504 => ErrorClass::Timeout,
            500..=599 => ErrorClass::Server,
            _ if lower.contains("context length")
                || lower.contains("context_length")
                || lower.contains("prompt is too long")
                || lower.contains("too many tokens") =>
            {
                ErrorClass::ContextLength
            }
            _ if lower.contains("content management policy")
                || lower.contains("content filtering policy")
                || lower.contains("safety system")
                || lower.contains("content_filter") =>
            {
                ErrorClass::ContentFilter
            }
            _ => ErrorClass::BadRequest,
        };
        // The provider's complaint about our credential may echo part of the key.
        let message = if class == ErrorClass::Auth {
            "the provider rejected the gateway's credential for it".to_string()
        } else {
            message
        };
        ProviderError {
            status: Some(status),
            ..ProviderError::new(provider, class, message)
        }
    }

    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }
}

/// `Retry-After` as seconds or an HTTP date; also OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}
