//! Scripted faults: what can go wrong ([`Fault`]), which requests it hits ([`FaultRule`]), and the
//! queue of active rules the vendor handlers take from.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Vendor;

/// What goes wrong with the next matching request. JSON: `{"kind": "<snake_case variant>", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and the vendor's own error body. `code` and `error_type` override
    /// what the status implies (OpenAI `code`/`type`, Anthropic `error.type`, Google
    /// `error.status` plus an `ErrorInfo` reason); a known `code` (`context_length_exceeded`,
    /// `content_policy_violation`, `content_filter`) also picks the vendor's own wording.
    /// `retry_after` is sent as `retry-after` seconds, `retry_after_ms` as `retry-after-ms`.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        error_type: Option<String>,
        #[serde(default)]
        retry_after_ms: Option<u64>,
    },
    /// Wait this long before answering at all.
    Delay { ms: u64 },
    /// Read the request, then close the connection without a byte of response.
    Reset,
    /// Never answer; the connection stays open until the client goes away.
    Hang,
    /// Stream: send the headers, then wait this long before the first event.
    SlowFirstToken { ms: u64 },
    /// Stream: send this many events, then drop the connection with no terminator.
    CutMidStream { after_events: usize },
    /// Stream: send every event (finish reason and usage included) but not the terminator
    /// (`data: [DONE]`, Anthropic's `message_stop`), then end the body cleanly. Gemini streams
    /// have no terminator, so they are unchanged; non-streaming answers are unchanged.
    NoDone,
    /// Stream: send this many events, then stall for `ms`, then go on.
    Stall { after_events: usize, ms: u64 },
    /// Stream: send this many events, then one that is not valid JSON, then go on.
    MalformedChunk { after_events: usize },
    /// Answer without any usage numbers.
    NoUsage,
    /// Refuse a request whose last message is the assistant's (a prefill) with the vendor's 400
    /// invalid-request error. Only matches such requests: others pass it by, leaving it queued.
    RejectPrefill,
}

impl Fault {
    /// `Status { status }` with nothing else set.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        }
    }

    /// The parts of a `Status` fault, borrowed; `None` for any other fault.
    pub fn as_status(&self) -> Option<ErrorSpec<'_>> {
        match self {
            Fault::Status {
                status,
                retry_after,
                message,
                code,
                error_type,
                retry_after_ms,
            } => Some(ErrorSpec {
                status: *status,
                retry_after: *retry_after,
                retry_after_ms: *retry_after_ms,
                message: message.as_deref(),
                code: code.as_deref(),
                error_type: error_type.as_deref(),
            }),
            _ => None,
        }
    }
}

/// A `Status` fault as the vendor modules build their error from it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorSpec<'a> {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub retry_after_ms: Option<u64>,
    pub message: Option<&'a str>,
    pub code: Option<&'a str>,
    pub error_type: Option<&'a str>,
}

impl ErrorSpec<'_> {
    /// `retry-after` (seconds) and `retry-after-ms`, when scripted.
    pub fn retry_headers(&self, headers: &mut Vec<(&'static str, String)>) {
        if let Some(secs) = self.retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        if let Some(ms) = self.retry_after_ms {
            headers.push(("retry-after-ms", ms.to_string()));
        }
    }
}

/// Which requests a fault hits, and for how long. JSON: `{"fault": {…}, "model"?, "vendor"?,
/// "times"? (default 1), "for_ms"?}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only requests for this (upstream) model; any model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Only requests to this vendor's routes; any when absent.
    #[serde(default)]
    pub vendor: Option<Vendor>,
    /// How many matching requests it applies to (ignored when `for_ms` is set).
    #[serde(default = "one")]
    pub times: usize,
    /// Apply to every matching request until this many milliseconds after the rule was pushed,
    /// then expire: a provider that is down for a while and then recovers.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

fn one() -> usize {
    1
}

impl FaultRule {
    /// `fault` for the next request of any vendor and model.
    pub fn once(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            model: None,
            vendor: None,
            times: 1,
            for_ms: None,
        }
    }
}

/// What a request offers for matching against rules.
#[derive(Debug, Clone, Copy)]
pub struct Matching<'a> {
    pub vendor: Vendor,
    pub model: &'a str,
    /// The request ends with an assistant message (what `RejectPrefill` hits).
    pub prefill: bool,
}

/// A pushed rule; a windowed one carries its end.
struct Active {
    rule: FaultRule,
    until: Option<Instant>,
}

/// The rules in the order they were pushed; the first matching one wins.
#[derive(Default)]
pub(super) struct FaultQueue {
    rules: VecDeque<Active>,
}

impl FaultQueue {
    pub(super) fn push(&mut self, rule: FaultRule) {
        let until = rule
            .for_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        self.rules.push_back(Active { rule, until });
    }

    pub(super) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Takes the first rule matching this request, counting one use unless it is windowed;
    /// expired windows are dropped on the way.
    pub(super) fn take(&mut self, m: Matching<'_>) -> Option<Fault> {
        // The bench runs with no rules: skip the clock read.
        if self.rules.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.rules.retain(|a| a.until.is_none_or(|u| now < u));
        let pos = self.rules.iter().position(|a| {
            let r = &a.rule;
            r.model.as_deref().is_none_or(|model| model == m.model)
                && r.vendor.is_none_or(|v| v == m.vendor)
                && (m.prefill || r.fault != Fault::RejectPrefill)
        })?;
        let active = self.rules.get_mut(pos)?;
        let fault = active.rule.fault.clone();
        if active.until.is_none() {
            active.rule.times = active.rule.times.saturating_sub(1);
            if active.rule.times == 0 {
                self.rules.remove(pos);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prefill: bool) -> Matching<'static> {
        Matching {
            vendor: Vendor::Openai,
            model: "gpt-4o",
            prefill,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_windowed_rule_applies_to_every_request_until_it_expires() {
        let mut q = FaultQueue::default();
        q.push(FaultRule {
            for_ms: Some(60_000),
            ..FaultRule::once(Fault::status(503))
        });
        for _ in 0..5 {
            assert_eq!(q.take(req(false)), Some(Fault::status(503)));
        }
        tokio::time::advance(Duration::from_millis(59_999)).await;
        assert_eq!(q.take(req(false)), Some(Fault::status(503)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(q.take(req(false)), None);
        assert!(q.rules.is_empty());
    }

    #[test]
    fn reject_prefill_waits_for_a_request_that_ends_with_the_assistant() {
        let mut q = FaultQueue::default();
        q.push(FaultRule::once(Fault::RejectPrefill));
        assert_eq!(q.take(req(false)), None);
        assert_eq!(q.take(req(true)), Some(Fault::RejectPrefill));
        assert_eq!(q.take(req(true)), None);
    }

    #[test]
    fn status_json_accepts_the_old_and_the_new_shapes() {
        let old: Result<Fault, _> =
            serde_json::from_str(r#"{"kind":"status","status":429,"retry_after":7}"#);
        let want = Fault::Status {
            status: 429,
            retry_after: Some(7),
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        };
        assert_eq!(old.ok(), Some(want));
        let rule: FaultRule = match serde_json::from_str(
            r#"{"fault":{"kind":"status","status":400,"code":"context_length_exceeded","error_type":"invalid_request_error","retry_after_ms":1500},"for_ms":60000}"#,
        ) {
            Ok(r) => r,
            Err(e) => unreachable!("{e}"),
        };
        assert_eq!(rule.for_ms, Some(60_000));
        assert_eq!(rule.times, 1);
        let spec = rule.fault.as_status();
        assert_eq!(spec.and_then(|s| s.code), Some("context_length_exceeded"));
        assert_eq!(spec.and_then(|s| s.retry_after_ms), Some(1500));
        for kind in ["reset", "hang", "no_done", "reject_prefill"] {
            let f: Result<Fault, _> = serde_json::from_str(&format!(r#"{{"kind":"{kind}"}}"#));
            assert!(f.is_ok(), "{kind}");
        }
    }
}
