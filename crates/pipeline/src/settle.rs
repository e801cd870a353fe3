//! Settle: after the response, never blocking it. For now usage is reported as a typed tracing
//! event; billing, wallets and the request log build on this hook.

use providers::ErrorClass;
use router::AttemptRecord;
use wire::openai::Usage;

use crate::egress::OnEnd;
use crate::llm::Served;

pub fn record<T>(served: &Served<T>, requested: &str, usage: Option<Usage>, complete: bool) {
    attempts(requested, &served.attempts);
    emit(
        &served.provider,
        &served.model,
        requested,
        served.fallback,
        usage,
        complete,
    );
}

/// A request every attempt of which failed: nothing to bill, the attempts are still kept.
pub fn failed(requested: &str, tried: &[AttemptRecord]) {
    attempts(requested, tried);
}

/// Every upstream attempt of a request that needed more than one (one success is the norm and
/// is covered by the usage event).
fn attempts(requested: &str, tried: &[AttemptRecord]) {
    if tried.len() > 1 || tried.iter().any(|a| a.error.is_some()) {
        tracing::info!(
            target: "gateway::attempts",
            requested,
            attempts = %serde_json::to_string(tried).unwrap_or_default(),
            "upstream attempts"
        );
    }
}

fn emit(
    provider: &str,
    model: &str,
    requested: &str,
    fallback: Option<ErrorClass>,
    usage: Option<Usage>,
    complete: bool,
) {
    tracing::debug!(
        target: "gateway::usage",
        provider,
        model,
        requested,
        fallback = fallback.map(ErrorClass::as_str),
        prompt_tokens = usage.map(|u| u.prompt_tokens),
        completion_tokens = usage.map(|u| u.completion_tokens),
        cached_tokens = usage.map(|u| u.cached_tokens()),
        usage_missing = usage.is_none(),
        complete,
        "usage"
    );
}

/// The end-of-stream hook: runs when the stream completes, breaks, or the consumer leaves.
pub fn on_stream_end<T>(served: &Served<T>, requested: &str) -> OnEnd {
    attempts(requested, &served.attempts);
    let (provider, model, requested, fallback) = (
        served.provider.clone(),
        served.model.clone(),
        requested.to_string(),
        served.fallback,
    );
    Box::new(move |usage, complete| emit(&provider, &model, &requested, fallback, usage, complete))
}
