//! Fallback chains per error class, and the attempt loop.
//!
//! A request first tries its route's targets in order while failures are retryable; then it
//! walks the fallback chain for the class of the last failure (`context_length: [...]`,
//! `rate_limited: [...]`, …, else `any`). A failure that no other model can fix (a bad request)
//! ends the walk at once.

use std::future::Future;

use providers::{ErrorClass, ProviderError};
use serde::{Deserialize, Serialize};

use crate::table::{RouteError, RoutingTable, Target};

/// The most upstream calls one request may make, whatever the configuration says.
pub const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    /// For any retryable failure without a list of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limited: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

/// Which target served the request, and why it was not the first.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub value: T,
    pub target: Target,
    /// The class of the failure that made the router leave the first target.
    pub fallback_reason: Option<ErrorClass>,
    pub attempts: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Attempt {
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The last failure after every allowed attempt.
    #[error(transparent)]
    Provider(ProviderError),
}

/// Calls `call` on targets until one succeeds, following the route's fallback chains.
pub async fn execute<T, F, Fut>(
    table: &RoutingTable,
    model: &str,
    mut call: F,
) -> Result<Outcome<T>, Attempt>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let primary = table.resolve(model)?;
    let mut attempts = 0;
    let mut first_failure: Option<ErrorClass> = None;
    let mut last: Option<ProviderError> = None;
    let mut tried: Vec<Target> = Vec::new();

    for target in primary.targets {
        match try_one(&mut call, target, &mut tried, &mut attempts).await {
            Some(Ok((value, target))) => {
                return Ok(Outcome {
                    value,
                    target,
                    fallback_reason: first_failure,
                    attempts,
                });
            }
            Some(Err(e)) => {
                first_failure.get_or_insert(e.class);
                let retryable = e.class.retryable();
                last = Some(e);
                if !retryable {
                    break;
                }
            }
            None => {}
        }
    }

    let Some(chain) = primary.fallbacks else {
        return Err(Attempt::Provider(last_or_unknown(last, model)));
    };
    let mut visited = vec![model.to_string()];
    let mut i = 0;
    while let Some(err) = &last {
        let names = chain.for_class(err.class);
        let Some(name) = names.get(i) else { break };
        i += 1;
        if visited.contains(name) {
            continue;
        }
        visited.push(name.clone());
        let Ok(resolved) = table.resolve(name) else {
            continue;
        };
        for target in resolved.targets {
            if attempts >= MAX_ATTEMPTS {
                break;
            }
            match try_one(&mut call, target, &mut tried, &mut attempts).await {
                Some(Ok((value, target))) => {
                    return Ok(Outcome {
                        value,
                        target,
                        fallback_reason: first_failure,
                        attempts,
                    });
                }
                Some(Err(e)) => {
                    let retryable = e.class.retryable();
                    // A new class picks its own chain from the start.
                    if last.as_ref().is_some_and(|l| l.class != e.class) {
                        i = 0;
                    }
                    last = Some(e);
                    if !retryable {
                        break;
                    }
                }
                None => {}
            }
        }
    }
    Err(Attempt::Provider(last_or_unknown(last, model)))
}

async fn try_one<T, F, Fut>(
    call: &mut F,
    target: Target,
    tried: &mut Vec<Target>,
    attempts: &mut usize,
) -> Option<Result<(T, Target), ProviderError>>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    if tried.contains(&target) || *attempts >= MAX_ATTEMPTS {
        return None;
    }
    tried.push(target.clone());
    *attempts += 1;
    Some(call(target.clone()).await.map(|v| (v, target)))
}

fn last_or_unknown(last: Option<ProviderError>, model: &str) -> ProviderError {
    last.unwrap_or_else(|| {
        ProviderError::new(
            "router",
            ErrorClass::NotFound,
            format!("no target could serve `{model}`"),
        )
    })
}

#[cfg(test)]
mod tests;
