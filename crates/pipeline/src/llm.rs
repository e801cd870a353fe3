//! The LLM stage: the router picks targets, retries and walks fallback chains; the provider
//! adapter makes the call. A stream is only committed once its first chunk has arrived, so a
//! target that fails before sending anything is still eligible for fallback; after that,
//! [`stream::guard`] watches it (idle, deadline, a missing terminator) and resumes a broken
//! answer on a fallback where it can.

mod stream;

use std::sync::Arc;

use axum::http::HeaderMap;
use futures::StreamExt;
use providers::{ChatOutput, ChunkStream, ErrorClass, Provider, ProviderError, StreamItem};
use router::rules::METADATA_HEADER_PREFIX;
use router::{AttemptRecord, Failure, Health, Needs, Outcome, Plan, RuleContext, Target};
use tokio::time::Instant;
use wire::openai::{ChatRequest, Content, ContentPart, EmbeddingsRequest, EmbeddingsResponse};

use crate::error::GatewayError;
use crate::settle;
use crate::state::Snapshot;

/// A value and who served it.
pub struct Served<T> {
    pub value: T,
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// Why the first target was left, when it was.
    pub fallback: Option<ErrorClass>,
    /// The routing rule that chose the target, if one did.
    pub rule: Option<String>,
    /// Every upstream attempt, the successful one last.
    pub attempts: Vec<AttemptRecord>,
}

impl<T> Served<T> {
    fn from(o: Outcome<T>) -> Self {
        Served {
            value: o.value,
            provider: o.target.provider,
            model: o.target.model,
            fallback: o.fallback_reason,
            rule: o.rule,
            attempts: o.attempts,
        }
    }

    /// The value, and the route facts without it (for the response headers).
    pub fn split(self) -> (T, Served<()>) {
        let facts = Served {
            value: (),
            provider: self.provider,
            model: self.model,
            fallback: self.fallback,
            rule: self.rule,
            attempts: self.attempts,
        };
        (self.value, facts)
    }

    /// Upstream calls made (skipped targets not counted).
    pub fn calls(&self) -> usize {
        self.attempts.iter().filter(|a| a.called()).count()
    }
}

/// What a request asks of the router, owned so that a stream can outlive its handler.
#[derive(Debug, Clone)]
pub struct Ask {
    pub model: String,
    pub needs: Needs,
    /// The consumer's `x-gateway-fallback` list.
    pub extra_fallbacks: Vec<String>,
    /// `response_format` asks for JSON (object or schema).
    pub json: bool,
    /// `x-gateway-meta-*` headers, for routing rules.
    pub metadata: Vec<(String, String)>,
    /// The consumer's plan, once consumers exist.
    pub plan: Option<String>,
}

const FALLBACK_HEADER: &str = "x-gateway-fallback";
/// More would only multiply the upstream calls one request can make.
const MAX_HEADER_FALLBACKS: usize = 4;

impl Ask {
    pub fn chat(req: &ChatRequest, headers: &HeaderMap) -> Result<Ask, GatewayError> {
        Ok(Ask {
            model: req.model.clone(),
            needs: needs(req),
            extra_fallbacks: fallback_header(headers)?,
            json: req
                .response_format
                .as_ref()
                .is_some_and(|f| f.kind == "json_object" || f.kind == "json_schema"),
            metadata: metadata(headers),
            plan: None,
        })
    }

    pub fn embeddings(req: &EmbeddingsRequest, headers: &HeaderMap) -> Result<Ask, GatewayError> {
        Ok(Ask {
            model: req.model.clone(),
            needs: Needs::default(),
            extra_fallbacks: fallback_header(headers)?,
            json: false,
            metadata: metadata(headers),
            plan: None,
        })
    }

    /// What routing rules read of this request, now.
    pub fn context(&self, snap: &Snapshot) -> RuleContext<'_> {
        RuleContext {
            est_input_tokens: self.needs.est_input_tokens,
            tools: self.needs.tools,
            json: self.json,
            plan: self.plan.as_deref(),
            metadata: &self.metadata,
            now: jiff::Timestamp::now(),
            monthly_spend_pct: snap.monthly_spend_pct,
        }
    }

    pub fn plan<'a>(&'a self, context: &'a RuleContext<'a>) -> Plan<'a> {
        Plan {
            needs: self.needs,
            extra_fallbacks: &self.extra_fallbacks,
            context: Some(context),
            ..Plan::new(&self.model)
        }
    }
}

/// The `x-gateway-meta-*` headers (names are lower-case already); a few, of bounded size.
fn metadata(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with(METADATA_HEADER_PREFIX))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .filter(|(_, v)| v.len() <= 256)
        .take(16)
        .collect()
}

/// `x-gateway-fallback: model-a, model-b`: model names only, never URLs.
fn fallback_header(headers: &HeaderMap) -> Result<Vec<String>, GatewayError> {
    let mut out = Vec::new();
    for v in headers.get_all(FALLBACK_HEADER) {
        let s = v.to_str().map_err(|_| bad_header("is not valid text"))?;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let ok = name.len() <= 256
                && !name.contains("://")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
            if !ok {
                return Err(bad_header("must list model names (no URLs)"));
            }
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    if out.len() > MAX_HEADER_FALLBACKS {
        return Err(bad_header("lists more than 4 models"));
    }
    Ok(out)
}

fn bad_header(why: &str) -> GatewayError {
    GatewayError::invalid(
        format!("The `{FALLBACK_HEADER}` header {why}."),
        Some(FALLBACK_HEADER),
    )
}

/// What the request uses, for picking fallbacks that can serve it. Tokens are estimated
/// (about four characters each, plus a little per message); an image counts as a thousand.
pub fn needs(req: &ChatRequest) -> Needs {
    let mut chars = 0usize;
    let mut images = 0u64;
    for m in &req.messages {
        chars += 16;
        match &m.content {
            Some(Content::Text(t)) => chars += t.len(),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    match p {
                        ContentPart::Text { text } => chars += text.len(),
                        ContentPart::ImageUrl { .. } => images += 1,
                        _ => {}
                    }
                }
            }
            None => {}
        }
        for c in m.tool_calls.iter().flatten() {
            chars += c.function.name.len() + c.function.arguments.len();
        }
    }
    let tools = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    if let Some(tools) = &req.tools {
        chars += tools
            .iter()
            .map(|t| {
                t.function
                    .parameters
                    .as_ref()
                    .map_or(0, |p| p.to_string().len())
                    + 64
            })
            .sum::<usize>();
    }
    Needs {
        tools,
        images: images > 0,
        json_schema: req
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind == "json_schema"),
        est_input_tokens: (chars / 4) as u64 + images * 1_000,
    }
}

fn missing(provider: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorClass::NotFound,
        "the route names a provider that is not configured",
    )
}

fn provider(snap: &Snapshot, t: &Target) -> Result<Arc<Provider>, ProviderError> {
    snap.providers
        .get(&t.provider)
        .cloned()
        .ok_or_else(|| missing(&t.provider))
}

fn failed(model: &str, f: Failure) -> GatewayError {
    settle::attempts(model, &f.attempts);
    f.error.into()
}

pub async fn complete(
    snap: &Snapshot,
    health: &Health,
    req: &ChatRequest,
    ask: &Ask,
) -> Result<Served<ChatOutput>, GatewayError> {
    route(snap, health, ask, |t, _deadline, _caps| {
        let p = provider(snap, &t);
        async move { p?.chat(req, &t.model).await }
    })
    .await
    .map(Served::from)
}

/// The router over this request: rules read its context, a failure is settled (its attempts
/// kept) and mapped to the one error table.
async fn route<T, F, Fut>(
    snap: &Snapshot,
    health: &Health,
    ask: &Ask,
    call: F,
) -> Result<Outcome<T>, GatewayError>
where
    F: FnMut(Target, Instant, router::Capabilities) -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let ctx = ask.context(snap);
    router::execute(&snap.table, health, &ask.plan(&ctx), call)
        .await
        .map_err(|f| failed(&ask.model, f))
}

/// A stream whose first chunk has arrived, and the rest of it.
pub type Opened = (StreamItem, ChunkStream);

/// Opens a stream and waits for its first chunk (within the route's first-token timeout),
/// falling back as for any other failure. The rest of the stream is guarded.
pub async fn open_stream(
    snap: Arc<Snapshot>,
    health: Arc<Health>,
    req: Arc<ChatRequest>,
    ask: Arc<Ask>,
) -> Result<Served<Opened>, GatewayError> {
    let policy = snap.table.policy_for(&ask.model).clone();
    let deadline = Instant::now() + policy.timeouts.total();
    let out = route(&snap, &health, &ask, |t, _deadline, _caps| {
        let p = provider(&snap, &t);
        let req = &*req;
        let first_token = policy.timeouts.first_token();
        async move { open_one(&*p?, req, &t.model, first_token).await }
    })
    .await?;
    let target = out.target.clone();
    let mut served = Served::from(out);
    let (first, rest) = served.value;
    let resume = stream::Resume {
        snap,
        health,
        req,
        ask,
        deadline,
        idle: policy.timeouts.idle(),
        first_token: policy.timeouts.first_token(),
    };
    let rest = stream::guard(target, &first, rest, resume);
    served.value = (first, rest);
    Ok(served)
}

/// One target: the stream's first chunk within `first_token`.
async fn open_one(
    p: &Provider,
    req: &ChatRequest,
    model: &str,
    first_token: std::time::Duration,
) -> Result<Opened, ProviderError> {
    let open = async {
        let mut s = p.chat_stream(req, model).await?;
        match s.next().await {
            Some(Ok(first)) => Ok((first, s)),
            Some(Err(e)) => Err(e),
            None => Err(ProviderError::new(
                p.name(),
                ErrorClass::StreamBroken,
                "upstream stream was empty",
            )),
        }
    };
    match tokio::time::timeout(first_token, open).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::new(
            p.name(),
            ErrorClass::Timeout,
            format!("no first token within {} ms", first_token.as_millis()),
        )),
    }
}

pub async fn embed(
    snap: &Snapshot,
    health: &Health,
    req: &EmbeddingsRequest,
    ask: &Ask,
) -> Result<Served<EmbeddingsResponse>, GatewayError> {
    route(snap, health, ask, |t, _deadline, _caps| {
        let p = provider(snap, &t);
        let mut r = req.clone();
        r.model = t.model;
        async move { p?.embeddings(&r).await }
    })
    .await
    .map(Served::from)
}
