//! Admin-plane errors, rendered in the same OpenAI error shape as the data plane.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wire::error::ErrorBody;

use crate::catalog::{CatalogError, DefError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("A valid admin token is required (Authorization: Bearer <token>).")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] DefError),
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the store failed; see the gateway log")]
    Store(#[source] store::StoreError),
    #[error("the change was saved but the configuration did not reload: {0}")]
    Reload(String),
}

impl From<store::StoreError> for AdminError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound(w) => AdminError::NotFound(w),
            store::StoreError::Conflict(w) => AdminError::Conflict(w),
            store::StoreError::Invalid(w) => AdminError::BadBody(w),
            other => AdminError::Store(other),
        }
    }
}

impl From<CatalogError> for AdminError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(s) => s.into(),
            CatalogError::Invalid(d) => AdminError::Reload(d.to_string()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind, code) = match &self {
            AdminError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
            ),
            AdminError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "insufficient_role",
            ),
            AdminError::NotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
            }
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            AdminError::Invalid(_) | AdminError::BadBody(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            AdminError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "file_too_large",
            ),
            AdminError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable")
            }
            AdminError::Store(_) | AdminError::Reload(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
            ),
        };
        if let AdminError::Store(e) = &self {
            tracing::error!(error = %e, "admin store failure");
        }
        let mut body = ErrorBody::new(self.to_string(), kind, Some(code));
        if let AdminError::Invalid(d) = &self {
            body.error.param = Some(d.path.clone());
        }
        (status, axum::Json(body)).into_response()
    }
}
