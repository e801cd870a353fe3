//! The data plane's one error enum and its one mapping to HTTP: a stable snake_case code, an
//! OpenAI error `type` and a status. Anthropic-format ingress renders the same errors in
//! Anthropic's body shape.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use providers::{ErrorClass, ProviderError};
use wire::error::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error(
        "The field `{0}` is not allowed: the gateway chooses the upstream, its URL and credentials."
    )]
    ForbiddenField(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error("The request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    #[error("{0}")]
    Upstream(ProviderError),
    #[error("The gateway is still loading its configuration.")]
    NotReady,
    /// No credential, or one that is not a valid key or token. The message never echoes it.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed here (`code` says why: `ip_not_allowed`,
    /// `key_scope`, `consumer_suspended`).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("No gateway API is published at `/{0}`.")]
    ApiNotFound(String),
    #[error("Credentials cannot be checked right now; retry shortly.")]
    AuthUnavailable,
    /// The consumer's prepaid balance cannot cover the request's worst case.
    #[error("{0}")]
    PaymentRequired(String),
    /// A limit of the consumer's key, plan or API (`code`: `rate_limit_exceeded`,
    /// `token_cap_reached`), with the headers that say when to come back.
    #[error("{message}")]
    Limited {
        code: &'static str,
        message: String,
        retry_after: Option<u64>,
        headers: Box<axum::http::HeaderMap>,
    },
    /// Plans and wallets cannot be checked right now (the store is unreachable).
    #[error("Billing cannot be checked right now; retry shortly.")]
    BillingUnavailable,
    /// Input moderation in block mode found the prompt unsafe.
    #[error("The request was blocked by the gateway's content policy (categories: {0}).")]
    ContentPolicy(String),
    /// The classifier failed and the API fails closed.
    #[error("Content moderation is unavailable right now and this API requires it; retry shortly.")]
    ModerationUnavailable,
    /// Retrieval from the knowledge base failed and the API fails closed.
    #[error("The knowledge base is unavailable right now and this API requires it; retry shortly.")]
    RetrievalUnavailable,
    /// Retrieval failed (why, for logs and the admin's test query; the stage goes on without it).
    #[error("knowledge base: {0}")]
    Knowledge(String),
    /// The pre-hook rejected the request with its own status (4xx) and message.
    #[error("{message}")]
    HookRejected { status: StatusCode, message: String },
    /// A fail-closed hook failed (timeout, error answer, invalid JSON, refused address).
    #[error("The request's {0} failed and it fails closed.")]
    HookFailed(&'static str),
    /// The function backing the API failed.
    #[error("The function serving this API failed: {0}.")]
    FunctionFailed(String),
    #[error("The function serving this API did not answer within its deadline.")]
    FunctionTimeout,
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// `(status, OpenAI type, code)`: the one table every error goes through.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use GatewayError as E;
        match self {
            E::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json".into(),
            ),
            E::InvalidRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request".into(),
            ),
            E::ForbiddenField(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "forbidden_field".into(),
            ),
            E::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found".into(),
            ),
            E::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "body_too_large".into(),
            ),
            E::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key".into(),
            ),
            E::Forbidden { code, .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                (*code).to_string(),
            ),
            E::ApiNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "api_not_found".into(),
            ),
            E::AuthUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "auth_unavailable".into(),
            ),
            E::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "not_ready".into(),
            ),
            E::PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_balance".into(),
            ),
            E::Limited { code, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                (*code).to_string(),
            ),
            E::BillingUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "billing_unavailable".into(),
            ),
            E::ContentPolicy(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "content_policy_violation".into(),
            ),
            E::RetrievalUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "retrieval_unavailable".into(),
            ),
            E::Knowledge(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "knowledge_base_unavailable".into(),
            ),
            E::ModerationUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "moderation_unavailable".into(),
            ),
            E::HookRejected { status, .. } => {
                (*status, "invalid_request_error", "hook_rejected".into())
            }
            E::HookFailed(_) => (StatusCode::BAD_GATEWAY, "api_error", "hook_failed".into()),
            E::FunctionFailed(_) => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "function_failed".into(),
            ),
            E::FunctionTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "function_timeout".into(),
            ),
            E::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error".into(),
            ),
            E::Upstream(e) => {
                let own = e.code.clone();
                let (status, kind, code) = match e.class {
                    ErrorClass::RateLimited => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        "rate_limit_exceeded",
                    ),
                    ErrorClass::ContextLength => (
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "context_length_exceeded",
                    ),
                    ErrorClass::BadRequest => (
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "upstream_bad_request",
                    ),
                    ErrorClass::ContentFilter => (
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "content_filter",
                    ),
                    ErrorClass::NotFound => (
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        "model_not_found",
                    ),
                    ErrorClass::Timeout => {
                        (StatusCode::GATEWAY_TIMEOUT, "api_error", "upstream_timeout")
                    }
                    ErrorClass::Auth => {
                        (StatusCode::BAD_GATEWAY, "api_error", "upstream_auth_failed")
                    }
                    ErrorClass::Connect => {
                        (StatusCode::BAD_GATEWAY, "api_error", "upstream_unreachable")
                    }
                    ErrorClass::StreamBroken => (
                        StatusCode::BAD_GATEWAY,
                        "api_error",
                        "upstream_stream_broken",
                    ),
                    ErrorClass::Server if matches!(e.status, Some(503 | 529)) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        "upstream_overloaded",
                    ),
                    ErrorClass::Server => (StatusCode::BAD_GATEWAY, "api_error", "upstream_error"),
                };
                // Keep the upstream's own code for request errors (e.g. `invalid_value`).
                let code = match (e.class, own) {
                    (ErrorClass::BadRequest, Some(c)) => c,
                    _ => code.to_string(),
                };
                (status, kind, code)
            }
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::Upstream(e) if e.provider == "gateway" => e.message.clone(),
            GatewayError::Upstream(e) => format!("{} (provider: {})", e.message, e.provider),
            other => other.to_string(),
        }
    }

    pub fn param(&self) -> Option<String> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
            GatewayError::ForbiddenField(f) => Some(f.clone()),
            GatewayError::ModelNotFound(_) => Some("model".into()),
            GatewayError::Upstream(e) => e.param.clone(),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.parts();
        let mut b = ErrorBody::new(self.message(), kind, Some(&code));
        b.error.param = self.param();
        b
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::Upstream(e) => e.retry_after.map(|d| d.as_secs_f64().ceil() as u64),
            GatewayError::Limited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The same error as Anthropic's SDK expects it.
    pub fn into_anthropic_response(self) -> Response {
        let (status, _, _) = self.parts();
        let body = wire::anthropic::error_response(status.as_u16(), &self.message());
        self.finish(status, serde_json::to_vec(&body).unwrap_or_default())
    }

    fn finish(&self, status: StatusCode, body: Vec<u8>) -> Response {
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        resp.extensions_mut()
            .insert(crate::log::ErrorCode(self.parts().2));
        if let Some(s) = self.retry_after()
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        if let GatewayError::Limited { headers, .. } = self {
            resp.headers_mut().extend(headers.as_ref().clone());
        }
        if let GatewayError::Upstream(e) = self
            && let Ok(v) = HeaderValue::from_str(&e.provider)
        {
            resp.headers_mut().insert("x-gateway-provider", v);
        }
        resp
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %self.message(), status = status.as_u16(), "request failed");
        }
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        self.finish(status, body)
    }
}

impl From<ProviderError> for GatewayError {
    fn from(e: ProviderError) -> Self {
        GatewayError::Upstream(e)
    }
}

impl From<router::Attempt> for GatewayError {
    fn from(e: router::Attempt) -> Self {
        match e {
            router::Attempt::Route(r) => GatewayError::ModelNotFound(r.to_string()),
            router::Attempt::Provider(p) => GatewayError::Upstream(p),
        }
    }
}
