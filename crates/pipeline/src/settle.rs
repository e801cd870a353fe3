//! Settle: after the response, never blocking it. For now usage is reported as a typed tracing
//! event; billing, wallets and the request log build on this hook.

use providers::ErrorClass;
use wire::openai::Usage;

use crate::egress::OnEnd;
use crate::llm::Served;

pub fn record<T>(served: &Served<T>, requested: &str, usage: Option<Usage>, complete: bool) {
    emit(
        &served.provider,
        &served.model,
        requested,
        served.fallback,
        usage,
        complete,
    );
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
    let (provider, model, requested, fallback) = (
        served.provider.clone(),
        served.model.clone(),
        requested.to_string(),
        served.fallback,
    );
    Box::new(move |usage, complete| emit(&provider, &model, &requested, fallback, usage, complete))
}
