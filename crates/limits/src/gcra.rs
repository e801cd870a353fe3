//! GCRA arithmetic for the in-process backend, exact in fixed point.
//!
//! Times are `u128` in units of 2⁻³² ns ([`Fp`]), so the emission interval `period / limit` keeps
//! 32 fractional bits of a nanosecond: a burst of `limit` cells fits the period exactly and
//! `limit + 1` does not, for any rate [`Rate::new`] accepts. The state of a limit is its
//! theoretical arrival time (TAT); its *lag* `max(TAT − now, 0)` is how much of the period is
//! in use, and a cost `c` fits when `lag + c · interval ≤ period`.

use std::time::Duration;

use crate::rate::{Quota, Rate};

/// A time or an interval in units of 2⁻³² ns.
pub(crate) type Fp = u128;

const FRAC_BITS: u32 = 32;

pub(crate) fn from_nanos(ns: u64) -> Fp {
    Fp::from(ns) << FRAC_BITS
}

/// Rounds up, so a reported wait is never too short.
pub(crate) fn to_duration(fp: Fp) -> Duration {
    let ns = fp.div_ceil(1 << FRAC_BITS);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A rate in fixed point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    limit: u64,
    period: Fp,
    interval: Fp,
}

impl Params {
    pub(crate) fn new(rate: Rate) -> Self {
        // ≤ 366 days in ns is < 2^55, so the shift stays far below u128::MAX.
        let period =
            Fp::from(u64::try_from(rate.period().as_nanos()).unwrap_or(u64::MAX)) << FRAC_BITS;
        Params {
            limit: rate.limit(),
            period,
            interval: period / Fp::from(rate.limit()),
        }
    }

    /// `units` emission intervals, saturating (a cost beyond the limit never fits anyway).
    fn span(&self, units: u64) -> Fp {
        self.interval.saturating_mul(Fp::from(units))
    }

    /// What the headers show for a limit whose lag is `lag`.
    pub(crate) fn quota(&self, lag: Fp) -> Quota {
        let free = self.period.saturating_sub(lag);
        let remaining = u64::try_from(free / self.interval.max(1)).unwrap_or(u64::MAX);
        Quota {
            limit: self.limit,
            remaining: remaining.min(self.limit),
            reset: to_duration(lag),
        }
    }
}

/// The outcome for one limit of spending `cost` at `now` on a limit whose TAT is `tat`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Fits: the new TAT, to be stored only if every other limit of the request fits too.
    Fits { tat: Fp },
    /// Does not fit: the wait until it would.
    Waits { wait: Fp },
}

pub(crate) fn step(params: &Params, tat: Fp, now: Fp, cost: u64) -> Step {
    let lag = tat.saturating_sub(now);
    let after = lag.saturating_add(params.span(cost));
    if after <= params.period {
        Step::Fits { tat: now + after }
    } else {
        Step::Waits {
            wait: after - params.period,
        }
    }
}

/// Settlement: moves the TAT by `delta` units, never before `now` (a refund cannot create more
/// than a full burst), and without a ceiling (usage that already happened is owed).
pub(crate) fn adjust(params: &Params, tat: Fp, now: Fp, delta: i64) -> Fp {
    let base = tat.max(now);
    let span = params.span(delta.unsigned_abs());
    if delta >= 0 {
        base.saturating_add(span)
    } else {
        base.saturating_sub(span).max(now)
    }
}

pub(crate) fn lag(tat: Fp, now: Fp) -> Fp {
    tat.saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: u64, period_ms: u64) -> Params {
        match Rate::new(limit, Duration::from_millis(period_ms)) {
            Ok(rate) => Params::new(rate),
            Err(e) => panic!("{e}"),
        }
    }

    /// Spends `cost` repeatedly at one instant; returns how many fit.
    fn burst(p: &Params, cost: u64) -> u64 {
        let now = from_nanos(1_000);
        let mut tat = now;
        let mut n = 0;
        while let Step::Fits { tat: next } = step(p, tat, now, cost) {
            tat = next;
            n += 1;
        }
        n
    }

    #[test]
    fn bursts_are_exact_for_awkward_rates() {
        for (limit, period) in [(7, 60_000), (60, 60_000), (1_000_000, 60_000), (3, 1)] {
            assert_eq!(
                burst(&params(limit, period), 1),
                limit,
                "{limit}/{period}ms"
            );
        }
        assert_eq!(burst(&params(100, 1_000), 30), 3);
    }

    #[test]
    fn capacity_returns_at_the_steady_rate() {
        let p = params(10, 1_000); // one per 100 ms
        let t0 = from_nanos(0);
        let mut tat = t0;
        for _ in 0..10 {
            if let Step::Fits { tat: next } = step(&p, tat, t0, 1) {
                tat = next;
            }
        }
        let at = |ms: u64| from_nanos(ms * 1_000_000);
        assert!(matches!(step(&p, tat, at(99), 1), Step::Waits { .. }));
        let Step::Fits { tat } = step(&p, tat, at(100), 1) else {
            panic!("one cell is back after one interval");
        };
        assert!(matches!(step(&p, tat, at(100), 1), Step::Waits { .. }));
        match step(&p, tat, at(150), 1) {
            Step::Waits { wait } => assert_eq!(to_duration(wait), Duration::from_millis(50)),
            Step::Fits { .. } => panic!("half an interval is not a cell"),
        }
    }

    #[test]
    fn refunds_stop_at_now_and_overdraft_is_kept() {
        let p = params(10, 1_000);
        let now = from_nanos(5_000_000_000);
        assert_eq!(adjust(&p, now, now, -100), now);
        let owed = adjust(&p, now, now, 25);
        assert_eq!(to_duration(lag(owed, now)), Duration::from_millis(2_500));
        assert_eq!(p.quota(lag(owed, now)).remaining, 0);
        assert_eq!(p.quota(0).remaining, 10);
    }
}
