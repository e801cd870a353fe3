//! The latency estimate the latency balancer compares: an exponentially weighted moving average
//! whose weight also depends on time.
//!
//! - Each sample weighs at least [`ALPHA`]; after an idle gap it weighs `1 − 2^(−gap/HALF_LIFE)`
//!   if that is more, so a target not heard from in a while is judged mostly by its newest sample.
//! - [`Ewma::score`] halves the estimate every [`HALF_LIFE`] without samples. A target the
//!   balancer avoids because it was slow therefore looks better and better until it gets a
//!   request again: exploration that costs about one request per target every
//!   `HALF_LIFE × log2(slowdown)`, whatever the traffic.
//! - A failure counts as a sample of at least twice the current estimate (and at least
//!   [`FAILURE_FLOOR_MS`]), so a target that fails fast never looks fast.

use std::time::Duration;

use tokio::time::Instant;

/// The least weight of a new sample: about the last five to ten requests matter.
pub(super) const ALPHA: f64 = 0.2;
/// How fast an estimate loses its meaning without new samples.
pub(super) const HALF_LIFE: Duration = Duration::from_secs(10);
/// The least latency a failure counts as.
pub(super) const FAILURE_FLOOR_MS: f64 = 1000.0;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ewma {
    /// Milliseconds, and when the last sample came.
    value: Option<(f64, Instant)>,
}

impl Ewma {
    pub(super) fn observe(&mut self, ms: f64, now: Instant) {
        self.value = Some(match self.value {
            None => (ms, now),
            Some((old, at)) => {
                let fade = 1.0 - halvings(at, now).exp2().recip();
                let a = fade.max(ALPHA);
                (old + a * (ms - old), now.max(at))
            }
        });
    }

    pub(super) fn observe_failure(&mut self, ms: f64, now: Instant) {
        let old = self.value.map_or(0.0, |(v, _)| v);
        self.observe(ms.max(2.0 * old).max(FAILURE_FLOOR_MS), now);
    }

    /// The estimate as measured (ms).
    pub(super) fn value(&self) -> Option<f64> {
        self.value.map(|(v, _)| v)
    }

    /// The estimate faded by idle time (ms): what the balancer compares.
    pub(super) fn score(&self, now: Instant) -> Option<f64> {
        self.value.map(|(v, at)| v / halvings(at, now).exp2())
    }
}

fn halvings(at: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(at).as_secs_f64() / HALF_LIFE.as_secs_f64()
}
