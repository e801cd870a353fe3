//! Settle: after the response, never blocking it. The request's [`Account`] is settled (cost,
//! usage record, plan charge, wallet), and a typed usage event is logged.

use std::sync::Arc;

use billing::{Picos, PriceTable};
use bytes::Bytes;
use providers::ErrorClass;
use router::AttemptRecord;
use wire::openai::Usage;

use crate::account::{Account, Outcome};
use crate::egress::{OnEnd, StreamEnd};
use crate::llm::Served;
use crate::state::Gateway;

/// Settles a request that was answered in one piece; returns its provider cost.
pub fn record<T>(
    gw: &Gateway,
    account: Account,
    prices: &PriceTable,
    served: &Served<T>,
    requested: &str,
    usage: Option<Usage>,
) -> Picos {
    attempts(requested, &served.attempts);
    emit(
        &served.provider,
        &served.model,
        requested,
        served.fallback,
        usage,
        true,
    );
    account.settle(
        gw,
        prices,
        Outcome {
            status: 200,
            provider: Some(&served.provider),
            model: Some(&served.model),
            usage,
            delivered_chunks: 0,
            attempts: &served.attempts,
        },
    )
}

/// A request every attempt of which failed (or that was refused upstream): nothing is
/// charged, the hold is released, the record keeps the status.
pub fn failed(gw: &Gateway, account: Account, status: u16) {
    account.settle(
        gw,
        &PriceTable::default(),
        Outcome {
            status,
            provider: None,
            model: None,
            usage: None,
            delivered_chunks: 0,
            attempts: &[],
        },
    );
}

/// Every upstream attempt of a request that needed more than one (one success is the norm and
/// is covered by the usage event).
pub fn attempts(requested: &str, tried: &[AttemptRecord]) {
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

/// The end-of-stream hook: runs when the stream completes, breaks, or the consumer leaves;
/// bills what was delivered and writes the cost as a final SSE comment.
pub fn on_stream_end<T>(
    gw: Arc<Gateway>,
    account: Account,
    prices: Arc<PriceTable>,
    served: &Served<T>,
    requested: &str,
) -> OnEnd {
    attempts(requested, &served.attempts);
    let (provider, model, requested, fallback, tried) = (
        served.provider.clone(),
        served.model.clone(),
        requested.to_string(),
        served.fallback,
        served.attempts.clone(),
    );
    Box::new(move |end: StreamEnd| {
        emit(
            &provider,
            &model,
            &requested,
            fallback,
            end.usage,
            end.complete,
        );
        // Cut or abandoned before a single chunk: the consumer got nothing, so it is a failure.
        let delivered = end.usage.is_some() || end.chunks > 0 || end.complete;
        if let Some(t) = account.trace.as_ref().filter(|_| !end.complete) {
            let why = if end.abandoned {
                "client_disconnected"
            } else {
                "stream_cut"
            };
            t.set(|r| r.error = Some(why.into()));
        }
        let cost = account.settle(
            &gw,
            &prices,
            Outcome {
                status: if delivered { 200 } else { 502 },
                provider: Some(&provider),
                model: Some(&model),
                usage: end.usage,
                delivered_chunks: end.chunks,
                attempts: &tried,
            },
        );
        Some(Bytes::from(format!(": x-gateway-cost-usd={cost}\n\n")))
    })
}
