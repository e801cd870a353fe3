//! The vocabulary shared by every backend: a validated [`Rate`], the [`Check`]s of one request,
//! and the [`Decision`] that carries what a 429 response and the `x-ratelimit-*` headers need.

use std::time::Duration;

/// What a limit counts. Requests and tokens of the same key are separate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Requests per period (RPM): each request usually costs 1.
    Requests,
    /// Tokens per period (TPM): a request reserves its estimate, settled later by `adjust`.
    Tokens,
}

impl Kind {
    /// The one-letter tag used in state keys (`r` or `t`).
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Kind::Requests => "r",
            Kind::Tokens => "t",
        }
    }
}

/// Why a [`Rate`] is refused. Configuration errors surface here, at construction, never later
/// as a panic on the hot path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("a rate limit must allow at least 1 per period")]
    ZeroLimit,
    #[error("a rate limit's period must be longer than zero")]
    ZeroPeriod,
    #[error("a rate limit's period must be at most {max:?}, got {period:?}")]
    PeriodTooLong { period: Duration, max: Duration },
    // The Redis backend keeps time in microseconds; finer rates would lose their precision.
    #[error(
        "a rate limit may allow at most one unit per microsecond: {limit} per {period:?} is finer"
    )]
    TooFine { limit: u64, period: Duration },
}

/// `limit` units per `period`, validated: 1 ≤ limit ≤ period in µs, 0 < period ≤ [`Rate::MAX_PERIOD`].
///
/// The burst is the limit: an idle key may spend all of it at once, after which capacity comes
/// back at a steady `limit / period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    limit: u64,
    period: Duration,
}

impl Rate {
    /// The longest period accepted (a leap year), which keeps every intermediate in range.
    pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

    /// `const`, so that fixed rates can be constants.
    pub const fn new(limit: u64, period: Duration) -> Result<Self, RateError> {
        if limit == 0 {
            return Err(RateError::ZeroLimit);
        }
        if period.is_zero() {
            return Err(RateError::ZeroPeriod);
        }
        if period.as_nanos() > Self::MAX_PERIOD.as_nanos() {
            return Err(RateError::PeriodTooLong {
                period,
                max: Self::MAX_PERIOD,
            });
        }
        if limit as u128 > period.as_micros() {
            return Err(RateError::TooFine { limit, period });
        }
        Ok(Rate { limit, period })
    }

    /// `limit` per minute.
    pub fn per_minute(limit: u64) -> Result<Self, RateError> {
        Self::new(limit, Duration::from_secs(60))
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The period in whole microseconds (the Redis script's unit); at least 1 by validation.
    pub(crate) fn period_micros(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// This rate's share on one of `instances` instances: `limit / instances`, at least 1.
    /// Used by degraded mode; the result is still a valid rate (a smaller limit, same period).
    pub(crate) fn share(&self, instances: u32) -> Rate {
        let limit = (self.limit / u64::from(instances.max(1))).max(1);
        Rate {
            limit,
            period: self.period,
        }
    }
}

/// One limit a request is checked against: `cost` units of `rate` for `key` of `kind`.
/// `cost` 0 reads the limit's state without consuming (for headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key: String,
    pub kind: Kind,
    pub rate: Rate,
    pub cost: u64,
}

impl Check {
    /// One request against a request limit.
    pub fn requests(key: impl Into<String>, rate: Rate) -> Self {
        Check {
            key: key.into(),
            kind: Kind::Requests,
            rate,
            cost: 1,
        }
    }

    /// A reservation of `cost` tokens against a token limit.
    pub fn tokens(key: impl Into<String>, rate: Rate, cost: u64) -> Self {
        Check {
            key: key.into(),
            kind: Kind::Tokens,
            rate,
            cost,
        }
    }
}

/// The state of one limit as the `x-ratelimit-*` headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `x-ratelimit-limit-*`: the limit per period.
    pub limit: u64,
    /// `x-ratelimit-remaining-*`: units that may be spent right now.
    pub remaining: u64,
    /// `x-ratelimit-reset-*`: time until the limit is back to its full capacity.
    pub reset: Duration,
}

/// Which limit refused a request, and when it may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Index of the denying check in the slice given to `check`.
    pub index: usize,
    pub key: String,
    pub kind: Kind,
    pub limit: u64,
    /// `retry-after`: the earliest time the same check could pass (when several checks deny,
    /// the longest of their waits).
    pub retry_after: Duration,
    /// The cost is larger than the limit itself: no wait will ever admit it
    /// (`retry_after` is then the period).
    pub exceeds_limit: bool,
}

/// The outcome of checking a request against all its limits at once. Either every limit
/// consumed its cost, or (when `denied` is set) none did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub denied: Option<Denial>,
    /// The most restrictive request limit (fewest remaining), after this decision.
    pub requests: Option<Quota>,
    /// The most restrictive token limit (fewest remaining), after this decision.
    pub tokens: Option<Quota>,
    /// Taken by the degraded-mode fallback rather than the shared backend.
    pub degraded: bool,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.denied.is_none()
    }

    /// Folds one limit's state into the headers: per kind, the one with the fewest remaining
    /// (ties: the later full reset) is the one a client must respect.
    pub(crate) fn observe(&mut self, kind: Kind, quota: Quota) {
        let slot = match kind {
            Kind::Requests => &mut self.requests,
            Kind::Tokens => &mut self.tokens,
        };
        let tighter = match slot {
            None => true,
            Some(seen) => {
                (quota.remaining, std::cmp::Reverse(quota.reset))
                    < (seen.remaining, std::cmp::Reverse(seen.reset))
            }
        };
        if tighter {
            *slot = Some(quota);
        }
    }

    pub(crate) fn empty(degraded: bool) -> Self {
        Decision {
            denied: None,
            requests: None,
            tokens: None,
            degraded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rates_are_typed_errors() {
        assert_eq!(
            Rate::new(0, Duration::from_secs(1)),
            Err(RateError::ZeroLimit)
        );
        assert_eq!(Rate::new(1, Duration::ZERO), Err(RateError::ZeroPeriod));
        assert!(matches!(
            Rate::new(1, Duration::from_secs(400 * 86_400)),
            Err(RateError::PeriodTooLong { .. })
        ));
        assert!(matches!(
            Rate::new(2_000_001, Duration::from_secs(2)),
            Err(RateError::TooFine { .. })
        ));
        assert!(Rate::new(2_000_000, Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn share_never_drops_to_zero() -> Result<(), RateError> {
        let rate = Rate::per_minute(60)?;
        assert_eq!(rate.share(3).limit(), 20);
        assert_eq!(rate.share(0).limit(), 60);
        assert_eq!(Rate::per_minute(2)?.share(3).limit(), 1);
        Ok(())
    }

    #[test]
    fn headers_follow_the_fewest_remaining() {
        let mut d = Decision::empty(false);
        let q = |remaining, reset| Quota {
            limit: 10,
            remaining,
            reset: Duration::from_secs(reset),
        };
        d.observe(Kind::Requests, q(5, 1));
        d.observe(Kind::Requests, q(3, 1));
        d.observe(Kind::Requests, q(3, 7));
        d.observe(Kind::Requests, q(4, 9));
        d.observe(Kind::Tokens, q(9, 0));
        assert_eq!(d.requests, Some(q(3, 7)));
        assert_eq!(d.tokens, Some(q(9, 0)));
    }
}
