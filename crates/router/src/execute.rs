//! The attempt loop. A request tries its route's targets in order (retrying each as its
//! [`RetryPolicy`](crate::retry::RetryPolicy) allows), then walks the fallback chain for the class
//! of the last failure, then the consumer's own `x-gateway-fallback` list. Every target is
//! visited at most once, at most `max_hops` targets are visited, and the whole walk, waits
//! included, ends at the route's total deadline. Fallback targets that cannot serve the request
//! (capabilities) or whose circuit is open are skipped without a call.

use std::future::Future;
use std::time::Duration;

use providers::{ErrorClass, ProviderError};
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use crate::balance;
use crate::caps::{Capabilities, Needs};
use crate::health::{Admission, Health};
use crate::policy::Policy;
use crate::rules::{Action, RuleContext, first_match};
use crate::table::{Resolved, RouteError, RoutingTable, Target};

/// What one request asks of the router.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub model: &'a str,
    pub needs: Needs,
    /// Model names the consumer allows as a last resort (`x-gateway-fallback`).
    pub extra_fallbacks: &'a [String],
    /// Targets not to call (a stream's continuation skips the one that broke).
    pub skip: &'a [Target],
    /// The failure that came before this walk, if any: with no primary target left to call,
    /// its class picks the fallback chain.
    pub after: Option<ErrorClass>,
    /// Ends the walk instead of the route's total timeout (a continuation keeps its request's).
    pub deadline: Option<Instant>,
    /// What routing rules may read of the request; without it no rule applies.
    pub context: Option<&'a RuleContext<'a>>,
}

impl<'a> Plan<'a> {
    pub fn new(model: &'a str) -> Self {
        Plan {
            model,
            needs: Needs::default(),
            extra_fallbacks: &[],
            skip: &[],
            after: None,
            deadline: None,
            context: None,
        }
    }
}

/// Why an attempt was made (or a target skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    Primary,
    /// Same target again after a retryable failure.
    Retry,
    /// Another model after the previous target failed with this class.
    Fallback,
    /// Not called: the circuit is open.
    CircuitOpen,
    /// Not called: the target cannot serve this request.
    Unfit,
}

/// One upstream attempt (or skipped target), kept with the request.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub model: String,
    /// The public name whose target this was.
    pub route: String,
    pub why: Why,
    /// The failure that led here (for retries and fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<&'static str>,
    /// Upstream HTTP status of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `None`: it succeeded (or was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Why a skipped target was not called (circuit open, cannot serve the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
    pub latency_ms: f64,
}

impl AttemptRecord {
    /// Whether this was a call to the upstream (not a skipped target).
    pub fn called(&self) -> bool {
        !matches!(self.why, Why::CircuitOpen | Why::Unfit)
    }
}

/// Which target served the request, and how it got there.
#[derive(Debug)]
pub struct Outcome<T> {
    pub value: T,
    pub target: Target,
    /// The public name whose target answered.
    pub route: String,
    /// The class of the failure that made the router leave the first target.
    pub fallback_reason: Option<ErrorClass>,
    /// The routing rule that redirected the request (its name, or `rules[i]`).
    pub rule: Option<String>,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Attempt {
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The last failure after every allowed attempt.
    #[error(transparent)]
    Provider(ProviderError),
}

/// Every attempt failed (or none could be made).
#[derive(Debug)]
pub struct Failure {
    pub error: Attempt,
    pub attempts: Vec<AttemptRecord>,
}

/// Calls `call(target, deadline, capabilities)` on targets until one succeeds. The call should
/// give up by `deadline` itself (the loop also stops waiting for it then); the capabilities are
/// the target's model's, from the catalogue.
pub async fn execute<T, F, Fut>(
    table: &RoutingTable,
    health: &Health,
    plan: &Plan<'_>,
    mut call: F,
) -> Result<Outcome<T>, Failure>
where
    F: FnMut(Target, Instant, Capabilities) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let primary = match table.resolve(plan.model) {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure {
                error: e.into(),
                attempts: Vec::new(),
            });
        }
    };
    let (primary, rule) = apply_rules(table, primary, plan.context);
    let mut walk = Walk {
        policy: primary.policy,
        deadline: plan
            .deadline
            .unwrap_or_else(|| Instant::now() + primary.policy.timeouts.total()),
        hops: 0,
        tried: plan.skip.to_vec(),
        attempts: Vec::new(),
        first_failure: None,
        last: None,
        out_of_time: false,
        rule,
    };
    let route_name = primary.route.map_or(plan.model, |r| r.name.as_str());

    for target in ordered(&primary, health).targets(&primary.targets) {
        let served = walk
            .visit(
                &mut call,
                health,
                target,
                (route_name, primary.caps),
                Why::Primary,
                plan.after,
            )
            .await;
        if let Some(v) = walk.settle(served, target, route_name) {
            return Ok(v);
        }
        // A refusal (context length, content policy) goes to its own chain, not to siblings.
        if walk.stopped() || walk.last.as_ref().is_some_and(|e| !e.class.retryable()) {
            break;
        }
    }

    // The chain for the class of the last failure; a new class starts its own chain.
    let chain = primary.fallbacks();
    let mut visited: Vec<&str> = vec![plan.model];
    let mut i = 0;
    let mut class = walk.last.as_ref().map(|e| e.class).or(plan.after);
    while let Some(c) = class {
        if walk.stopped() || walk.hops >= walk.policy.hops() {
            break;
        }
        let own = chain.map_or(&[][..], |f| f.for_class(c));
        let extra = if consumer_list_applies(c) {
            plan.extra_fallbacks
        } else {
            &[]
        };
        let Some(name) = own.iter().chain(extra).nth(i) else {
            break;
        };
        i += 1;
        if visited.contains(&name.as_str()) {
            continue;
        }
        visited.push(name);
        let Ok(next) = table.resolve(name) else {
            continue;
        };
        let next_name = next.route.map_or(name.as_str(), |r| r.name.as_str());
        if let Some(reason) = next.caps.unfit(&plan.needs) {
            for target in &next.targets {
                walk.skip(target, next_name, Why::Unfit, reason);
            }
            continue;
        }
        for target in ordered(&next, health).targets(&next.targets) {
            if walk.stopped() || walk.hops >= walk.policy.hops() {
                break;
            }
            let served = walk
                .visit(
                    &mut call,
                    health,
                    target,
                    (next_name, next.caps),
                    Why::Fallback,
                    Some(c),
                )
                .await;
            if let Some(v) = walk.settle(served, target, next_name) {
                return Ok(v);
            }
        }
        let now = walk.last.as_ref().map(|e| e.class);
        if now != class {
            class = now;
            i = 0;
        }
    }
    let error = walk.last.take().unwrap_or_else(|| {
        ProviderError::new(
            "router",
            ErrorClass::Server,
            format!("no target could serve `{}`", plan.model),
        )
    });
    Err(Failure {
        error: Attempt::Provider(error),
        attempts: walk.attempts,
    })
}

/// The first matching rule of the route, applied once (a model a rule names does not apply
/// its own rules). A rule naming a model that does not resolve is skipped, loudly.
fn apply_rules<'t>(
    table: &'t RoutingTable,
    primary: Resolved<'t>,
    context: Option<&RuleContext<'_>>,
) -> (Resolved<'t>, Option<String>) {
    let (Some(route), Some(ctx)) = (primary.route, context) else {
        return (primary, None);
    };
    if route.rules.is_empty() {
        return (primary, None);
    }
    let Some((i, rule)) = first_match(&route.rules, ctx) else {
        return (primary, None);
    };
    let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
    match &rule.then {
        Action::Model(m) => match table.resolve(m) {
            Ok(next) => (next, Some(name)),
            Err(e) => {
                tracing::warn!(route = %route.name, rule = %name, error = %e, "routing rule names a model that does not resolve; using the model's own targets");
                (primary, None)
            }
        },
        Action::Targets(t) => (
            Resolved {
                targets: t.clone(),
                ..primary
            },
            Some(name),
        ),
    }
}

/// The consumer's own list is a last resort for failures another model may get past; never for
/// refusals (a bad request, content policy).
fn consumer_list_applies(c: ErrorClass) -> bool {
    c.retryable() || c == ErrorClass::ContextLength
}

/// The route's targets in the order its strategy picks (open circuits last).
fn ordered(r: &Resolved<'_>, health: &Health) -> balance::Order {
    let strategy = r.route.map(|r| r.strategy).unwrap_or_default();
    balance::order(
        strategy,
        &r.targets,
        health,
        Instant::now(),
        &mut rand::thread_rng(),
    )
}

struct Walk<'p> {
    policy: &'p Policy,
    deadline: Instant,
    hops: usize,
    tried: Vec<Target>,
    attempts: Vec<AttemptRecord>,
    first_failure: Option<ErrorClass>,
    last: Option<ProviderError>,
    out_of_time: bool,
    rule: Option<String>,
}

impl Walk<'_> {
    /// Stop walking: the deadline passed, or the last failure was the request's own fault.
    fn stopped(&self) -> bool {
        self.out_of_time
            || self
                .last
                .as_ref()
                .is_some_and(|e| e.class == ErrorClass::BadRequest)
    }

    fn skip(&mut self, target: &Target, route: &str, why: Why, reason: &'static str) {
        let mut r = record(target, route, why, None, None, Duration::ZERO);
        r.skipped = Some(reason);
        self.attempts.push(r);
    }

    fn settle<T>(&mut self, served: Option<T>, target: &Target, route: &str) -> Option<Outcome<T>> {
        served.map(|value| Outcome {
            value,
            target: target.clone(),
            route: route.to_string(),
            fallback_reason: self.first_failure,
            rule: self.rule.take(),
            attempts: std::mem::take(&mut self.attempts),
        })
    }

    /// One target: its attempts and the waits between them; `None` when it did not serve (it
    /// failed, was visited already, or its circuit is open).
    async fn visit<T, F, Fut>(
        &mut self,
        call: &mut F,
        health: &Health,
        target: &Target,
        (route, caps): (&str, &Capabilities),
        first_why: Why,
        after: Option<ErrorClass>,
    ) -> Option<T>
    where
        F: FnMut(Target, Instant, Capabilities) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        if self.tried.iter().any(|t| t.same(target)) || self.hops >= self.policy.hops() {
            return None;
        }
        // Held until the attempts are recorded: a half-open probe slot is freed on drop.
        let admission = health.admit(target, Instant::now());
        if let Admission::Reject { .. } = admission {
            self.skip(target, route, Why::CircuitOpen, "circuit open");
            if self.last.is_none() {
                self.last = Some(ProviderError::new(
                    &target.provider,
                    ErrorClass::Server,
                    "the target is unavailable (circuit open after repeated failures)",
                ));
            }
            return None;
        }
        self.tried.push(target.clone());
        self.hops += 1;
        let mut why = first_why;
        let mut after = after;
        let mut made = 0;
        loop {
            made += 1;
            let started = Instant::now();
            let result = match tokio::time::timeout_at(
                self.deadline,
                call(target.clone(), self.deadline, *caps),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    self.out_of_time = true;
                    Err(ProviderError::new(
                        &target.provider,
                        ErrorClass::Timeout,
                        format!(
                            "no answer within the request's deadline of {} ms",
                            self.policy.timeouts.total_ms
                        ),
                    ))
                }
            };
            let latency = started.elapsed();
            match result {
                Ok(v) => {
                    health.record(target, latency, None, Instant::now());
                    drop(admission);
                    self.attempts
                        .push(record(target, route, why, after, None, latency));
                    return Some(v);
                }
                Err(e) => {
                    health.record(target, latency, Some(e.class), Instant::now());
                    self.attempts
                        .push(record(target, route, why, after, Some(&e), latency));
                    self.first_failure.get_or_insert(e.class);
                    let jitter = rand::thread_rng().r#gen::<f64>();
                    let wait = self.policy.retry.next_delay(&e, made, jitter);
                    after = Some(e.class);
                    self.last = Some(e);
                    let wait = wait?;
                    if self.out_of_time || Instant::now() + wait >= self.deadline {
                        return None;
                    }
                    tokio::time::sleep(wait).await;
                    why = Why::Retry;
                }
            }
        }
    }
}

fn record(
    target: &Target,
    route: &str,
    why: Why,
    after: Option<ErrorClass>,
    err: Option<&ProviderError>,
    latency: Duration,
) -> AttemptRecord {
    AttemptRecord {
        provider: target.provider.clone(),
        model: target.model.clone(),
        route: route.to_string(),
        why,
        after: after.map(ErrorClass::as_str),
        status: err.and_then(|e| e.status),
        error: err.map(|e| e.class.as_str()),
        skipped: None,
        latency_ms: latency.as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests;
