//! Fallback chains per error class: after a route's own targets fail, the chain for the class
//! of the last failure (`"429"`, `"5xx"`, `timeout`, `context_length`, `content_filter`, else
//! `any`) names the models to try next. A failure no other model can fix (a bad request) has
//! no chain.

use providers::ErrorClass;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    /// For any retryable failure without a list of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,
    /// Also written `"429"`.
    #[serde(default, alias = "429", skip_serializing_if = "Vec::is_empty")]
    pub rate_limited: Vec<String>,
    /// Also written `"5xx"`.
    #[serde(default, alias = "5xx", skip_serializing_if = "Vec::is_empty")]
    pub server_error: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeout: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_length: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_filter: Vec<String>,
}

impl Fallbacks {
    pub fn for_class(&self, class: ErrorClass) -> &[String] {
        let own = match class {
            ErrorClass::RateLimited => &self.rate_limited,
            ErrorClass::Server | ErrorClass::StreamBroken => &self.server_error,
            ErrorClass::Timeout | ErrorClass::Connect => &self.timeout,
            ErrorClass::ContextLength => &self.context_length,
            ErrorClass::ContentFilter => &self.content_filter,
            // Another provider or key may serve the same model.
            ErrorClass::Auth | ErrorClass::NotFound => &self.any,
            // The request itself is wrong: every other model would refuse it too.
            ErrorClass::BadRequest => return &[],
        };
        if !own.is_empty() {
            own
        } else if class.retryable() {
            &self.any
        } else {
            &[]
        }
    }

    /// Every model name the chains mention, for validation.
    pub fn all_names(&self) -> impl Iterator<Item = &String> {
        self.any
            .iter()
            .chain(&self.rate_limited)
            .chain(&self.server_error)
            .chain(&self.timeout)
            .chain(&self.context_length)
            .chain(&self.content_filter)
    }
}
