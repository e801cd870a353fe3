//! Retries on one target: bounded attempts, exponential backoff with jitter, `Retry-After`
//! honoured up to a cap. This is the gateway's only retry layer (the HTTP client never retries).

use std::time::Duration;

use providers::{ErrorClass, ProviderError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per target, the first included (1 = no retry).
    pub attempts: u32,
    /// The first backoff; doubles per retry.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A `Retry-After` longer than this falls over to the next target instead of waiting.
    pub max_retry_after_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            backoff_ms: 200,
            max_backoff_ms: 2_000,
            max_retry_after_ms: 5_000,
        }
    }
}

/// Most attempts on one target, whatever the configuration says.
pub const MAX_ATTEMPTS_PER_TARGET: u32 = 5;

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.attempts == 0 || self.attempts > MAX_ATTEMPTS_PER_TARGET {
            return Err(format!(
                "attempts must be between 1 and {MAX_ATTEMPTS_PER_TARGET}"
            ));
        }
        if self.backoff_ms > self.max_backoff_ms {
            return Err("backoff_ms must not exceed max_backoff_ms".into());
        }
        if self.max_backoff_ms > 60_000 || self.max_retry_after_ms > 60_000 {
            return Err("waits above 60000 ms are not allowed".into());
        }
        Ok(())
    }

    /// How long to wait before trying the same target again after `made` attempts failed with
    /// `err`, or `None` when the request should move on. `jitter` is uniform in [0, 1).
    pub fn next_delay(&self, err: &ProviderError, made: u32, jitter: f64) -> Option<Duration> {
        if made >= self.attempts.min(MAX_ATTEMPTS_PER_TARGET) || !same_target_may_help(err.class) {
            return None;
        }
        let shift = made.saturating_sub(1).min(16);
        let exp = self
            .backoff_ms
            .saturating_mul(1 << shift)
            .min(self.max_backoff_ms);
        // Equal jitter: at least half the backoff, so retries stay spaced out.
        let backoff =
            Duration::from_millis(exp / 2 + (exp as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64);
        match err.retry_after {
            Some(ra) if ra > Duration::from_millis(self.max_retry_after_ms) => None,
            Some(ra) => Some(ra.max(backoff)),
            None => Some(backoff),
        }
    }
}

/// Failures a second attempt on the same target can get past. A timeout moves on (the
/// deadline is spent already), and so does anything the provider refused on purpose.
fn same_target_may_help(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::RateLimited
            | ErrorClass::Server
            | ErrorClass::Connect
            | ErrorClass::StreamBroken
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(class: ErrorClass, ra: Option<u64>) -> ProviderError {
        ProviderError::new("p", class, "x").with_retry_after(ra.map(Duration::from_millis))
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_attempt_bound() {
        let p = RetryPolicy {
            attempts: 3,
            ..Default::default()
        };
        let e = err(ErrorClass::Server, None);
        let first = p.next_delay(&e, 1, 0.0);
        let first_max = p.next_delay(&e, 1, 0.999);
        let second = p.next_delay(&e, 2, 0.0);
        assert_eq!(first, Some(Duration::from_millis(100)));
        assert!(first_max.is_some_and(|d| d < Duration::from_millis(200)));
        assert_eq!(second, Some(Duration::from_millis(200)));
        assert_eq!(p.next_delay(&e, 3, 0.0), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap_then_falls_over() {
        let p = RetryPolicy::default();
        let short = err(ErrorClass::RateLimited, Some(1_500));
        let long = err(ErrorClass::RateLimited, Some(30_000));
        assert_eq!(
            p.next_delay(&short, 1, 0.5),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(p.next_delay(&long, 1, 0.5), None);
    }

    #[test]
    fn refusals_and_timeouts_are_not_retried_on_the_same_target() {
        let p = RetryPolicy {
            attempts: 5,
            ..Default::default()
        };
        for c in [
            ErrorClass::BadRequest,
            ErrorClass::ContentFilter,
            ErrorClass::Auth,
            ErrorClass::ContextLength,
            ErrorClass::Timeout,
            ErrorClass::NotFound,
        ] {
            assert_eq!(p.next_delay(&err(c, None), 1, 0.5), None, "{c:?}");
        }
        assert!(
            p.next_delay(&err(ErrorClass::Connect, None), 1, 0.5)
                .is_some()
        );
    }
}
