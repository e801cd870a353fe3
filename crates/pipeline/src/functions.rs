//! Functions: operators' HTTP endpoints the pipeline calls as a pre-hook, a post-hook or the
//! backend of a function-backed API (the JSON contract is in `docs/hooks.md`).
//!
//! Every call is a signed POST (`x-gateway-signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//! "t.body")>`, the billing webhook's scheme) through the gateway's egress-guarded client: no
//! redirects (a 3xx is a failure), private and loopback targets refused unless the operator
//! allowed them (`GATEWAY_EGRESS_ALLOW`), request and answer at most [`MAX_BYTES`], the whole
//! exchange within the function's deadline (default 2 s, at most 30 s). A failure is a
//! [`CallError`]; what it does depends on the stage and the function's failure mode.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use wire::secret::Secret;

/// Requests to and answers from a function are refused past this size.
pub const MAX_BYTES: usize = 1024 * 1024;
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);

/// What happens when a hook fails (a function backend always fails the request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// The request goes on as if the hook had said `continue`.
    #[default]
    FailOpen,
    /// The request fails (502 `hook_failed`).
    FailClosed,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::FailOpen => "fail_open",
            FailureMode::FailClosed => "fail_closed",
        }
    }

    pub fn parse(s: &str) -> Option<FailureMode> {
        match s {
            "fail_open" => Some(FailureMode::FailOpen),
            "fail_closed" => Some(FailureMode::FailClosed),
            _ => None,
        }
    }
}

/// A function as the data plane calls it.
pub struct Function {
    pub name: String,
    pub url: String,
    secret: Secret,
    pub deadline: Duration,
    pub failure: FailureMode,
    http: providers::http::Client,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("deadline", &self.deadline)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// Why a function call did not give a usable answer. Never names the secret.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Fetch(String),
    #[error("the request to the function would be larger than {MAX_BYTES} bytes")]
    RequestTooLarge,
    #[error("the function answered invalid JSON")]
    InvalidJson,
    #[error("the function answered HTTP {0}")]
    Status(u16),
    #[error("the function's answer is not what its stage expects: {0}")]
    Contract(String),
    /// Named by the API but gone from the configuration (deleted since it was validated).
    #[error("the function is not configured")]
    NotConfigured,
}

impl CallError {
    /// The outcome word in `x-gateway-hooks` and the log.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            _ => "error",
        }
    }
}

impl Function {
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        secret: Secret,
        deadline: Duration,
        failure: FailureMode,
        http: providers::http::Client,
    ) -> Function {
        Function {
            name: name.into(),
            url: url.into(),
            secret,
            deadline: deadline.min(MAX_DEADLINE),
            failure,
            http,
        }
    }

    fn headers(&self, stage: &'static str, request_id: &str, body: &[u8]) -> Vec<(&str, String)> {
        let t = jiff::Timestamp::now().as_second();
        vec![
            (
                "x-gateway-signature",
                crate::events::signature(self.secret.expose(), t, body),
            ),
            ("x-gateway-stage", stage.to_string()),
            ("x-gateway-function", self.name.clone()),
            ("x-request-id", request_id.to_string()),
        ]
    }

    fn encode(body: &Value) -> Result<Bytes, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|_| CallError::InvalidJson)?;
        if bytes.len() > MAX_BYTES {
            return Err(CallError::RequestTooLarge);
        }
        Ok(Bytes::from(bytes))
    }

    /// One call whose answer is a JSON object, within the deadline.
    pub async fn call_json(
        &self,
        stage: &'static str,
        request_id: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let bytes = Self::encode(body)?;
        let headers = self.headers(stage, request_id, &bytes);
        let answer = self
            .http
            .post_limited(&self.url, &headers, bytes, self.deadline, MAX_BYTES)
            .await
            .map_err(|e| self.fetch_error(e))?;
        serde_json::from_slice(&answer).map_err(|_| CallError::InvalidJson)
    }

    /// One call whose answer is handed back once its head arrived (within the deadline).
    pub async fn open(
        &self,
        stage: &'static str,
        request_id: &str,
        body: &Value,
    ) -> Result<providers::http::Response, CallError> {
        let bytes = Self::encode(body)?;
        let headers = self.headers(stage, request_id, &bytes);
        self.http
            .post_open(&self.url, &headers, bytes, self.deadline)
            .await
            .map_err(|e| self.fetch_error(e))
    }

    fn fetch_error(&self, e: providers::http::FetchError) -> CallError {
        use providers::http::FetchError as F;
        match e {
            F::Timeout(d) => CallError::Timeout(d.as_millis()),
            F::Status(s) => CallError::Status(s),
            F::Refused(r) => {
                // The operator's log gets the address; the consumer a generic message.
                tracing::warn!(target: "gateway::hooks", function = %self.name, refusal = %r,
                    "function call refused by the egress guard");
                CallError::Fetch(
                    "the function's address is not allowed by the egress policy".into(),
                )
            }
            other => CallError::Fetch(other.to_string()),
        }
    }
}

/// One stage's call (a span): for `x-gateway-hooks`, the `gateway::hooks` log and the request
/// log's `hooks` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageOutcome {
    /// `pre_hook`, `post_hook`, `function`.
    pub stage: &'static str,
    pub function: String,
    /// `ok`, `rewrite`, `reject`, `error`, `timeout`, `cancelled` (the consumer left first).
    pub outcome: String,
    /// From the call's start to its answer (a function backend's stream: to the stream's end).
    pub latency_ms: u64,
    /// What went wrong ([`CallError`]'s message), on `error` and `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a failure, what it did to the request: `fail_open` (it went on without the hook) or
    /// `fail_closed` (it failed). None for a post-hook, whose failure never touches the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
}

impl StageOutcome {
    pub fn new(stage: &'static str, function: &str, outcome: &str, started: Instant) -> Self {
        let o = StageOutcome {
            stage,
            function: function.to_string(),
            outcome: outcome.to_string(),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error: None,
            failure: None,
        };
        tracing::info!(target: "gateway::hooks", stage, function, outcome,
            latency_ms = o.latency_ms, "function call");
        o
    }

    /// A call that failed with `e`, which `failure` then applied to the request (if anything).
    pub fn failed(
        stage: &'static str,
        function: &str,
        e: &CallError,
        failure: Option<FailureMode>,
        started: Instant,
    ) -> Self {
        StageOutcome {
            error: Some(e.to_string()),
            failure: failure.map(FailureMode::as_str),
            ..StageOutcome::new(stage, function, e.outcome(), started)
        }
    }

    /// `pre=ok;12ms`.
    pub fn header_part(&self) -> String {
        let short = match self.stage {
            "pre_hook" => "pre",
            "post_hook" => "post",
            other => other,
        };
        format!("{short}={};{}ms", self.outcome, self.latency_ms)
    }
}

/// Metadata a post-hook returned for a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookMetadata {
    pub request_id: String,
    pub api: String,
    pub function: String,
    pub metadata: Value,
}

/// The most recent post-hook metadata (bounded; the request log will take it over).
#[derive(Debug, Default)]
pub struct MetadataRing(Mutex<VecDeque<HookMetadata>>);

const RING: usize = 1024;

impl MetadataRing {
    pub fn push(&self, m: HookMetadata) {
        if let Ok(mut r) = self.0.lock() {
            if r.len() == RING {
                r.pop_front();
            }
            r.push_back(m);
        }
    }

    /// The metadata recorded for a request, if any.
    pub fn get(&self, request_id: &str) -> Option<HookMetadata> {
        self.0
            .lock()
            .ok()?
            .iter()
            .rev()
            .find(|m| m.request_id == request_id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_finds_the_latest() {
        let r = MetadataRing::default();
        for i in 0..RING + 5 {
            r.push(HookMetadata {
                request_id: format!("r{i}"),
                api: "a".into(),
                function: "f".into(),
                metadata: Value::from(i),
            });
        }
        assert!(r.get("r0").is_none());
        assert_eq!(
            r.get(&format!("r{}", RING + 4)).map(|m| m.metadata),
            Some(Value::from(RING + 4))
        );
    }

    #[test]
    fn outcomes_render_for_the_header() {
        let o = StageOutcome {
            stage: "pre_hook",
            function: "f".into(),
            outcome: "ok".into(),
            latency_ms: 12,
            error: None,
            failure: None,
        };
        assert_eq!(o.header_part(), "pre=ok;12ms");
    }

    #[test]
    fn a_failed_span_says_what_went_wrong_and_what_it_did() {
        let started = Instant::now();
        let o = StageOutcome::failed(
            "pre_hook",
            "f",
            &CallError::Status(500),
            Some(FailureMode::FailOpen),
            started,
        );
        assert_eq!(o.header_part().split(';').next(), Some("pre=error"));
        let v = serde_json::to_value(&o).unwrap_or_default();
        assert_eq!(v["error"], "the function answered HTTP 500");
        assert_eq!(v["failure"], "fail_open");
        // An answered call carries neither.
        let v = serde_json::to_value(StageOutcome::new("post_hook", "f", "ok", started))
            .unwrap_or_default();
        assert!(
            v.get("error").is_none() && v.get("failure").is_none(),
            "{v}"
        );
    }
}
