//! The circuit breaker of one target: when to stop sending it traffic and how to test whether it
//! recovered.
//!
//! ```text
//!            failure rate ≥ failure_rate (≥ min_requests in the window)
//!            or consecutive_failures in a row
//!   Closed ───────────────────────────────────────────────▶ Open (open_for)
//!     ▲                                                      │ open_for elapsed
//!     │ a probe succeeds                                     ▼
//!     └──────────────────────────────────────────────── HalfOpen: at most half_open_probes
//!                                                           │      requests in flight
//!                     a probe fails: Open again, for twice   │
//!                     as long each time, at most max_open_for ┘
//! ```
//!
//! The backoff cap is what keeps the promise that traffic returns to a recovered target within
//! 30 s: a recovered target is probed at most `max_open_for` (default 20 s) after it recovered,
//! as long as requests keep coming. An `open_for` above the cap is used as is, never doubled.
//!
//! Probe slots are released by the [`super::ProbeGuard`] (on drop, whether the request
//! succeeded, failed or was cancelled); a slot still taken after [`PROBE_EXPIRY`] (a leaked
//! guard) is given up, so a circuit can never stay half-open forever.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// After this long, a probe that never reported is presumed lost and its slot freed.
pub const PROBE_EXPIRY: Duration = Duration::from_secs(30);
/// What a request turned away because the probes are all in flight is told to wait.
pub const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

/// When a target's circuit opens and for how long; the operator may set it in YAML.
/// Durations are written with a unit: `500ms`, `10s`, `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitPolicy {
    /// The share of failed requests in the window (0 < r ≤ 1) that opens the circuit.
    pub failure_rate: f64,
    /// The least requests in the window before `failure_rate` is judged.
    pub min_requests: u32,
    /// Failures in a row that open the circuit whatever the rate.
    pub consecutive_failures: u32,
    /// How long an opened circuit rejects before it lets a probe through.
    #[serde(with = "duration_text")]
    pub open_for: Duration,
    /// The cap on the doubled open time after failed probes.
    #[serde(with = "duration_text")]
    pub max_open_for: Duration,
    /// Probe requests allowed in flight at once while half-open.
    pub half_open_probes: u32,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        CircuitPolicy {
            failure_rate: 0.5,
            min_requests: 5,
            consecutive_failures: 5,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(20),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit.{field}: {reason}")]
pub struct PolicyError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl CircuitPolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let fail = |field, reason| Err(PolicyError { field, reason });
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return fail("failure_rate", "must be more than 0 and at most 1");
        }
        if self.min_requests == 0 {
            return fail("min_requests", "must be at least 1");
        }
        if self.consecutive_failures == 0 {
            return fail("consecutive_failures", "must be at least 1");
        }
        if self.half_open_probes == 0 {
            return fail("half_open_probes", "must be at least 1");
        }
        if self.open_for.is_zero() {
            return fail("open_for", "must be more than 0");
        }
        Ok(())
    }

    /// How long the circuit stays open after `failed_probes` probes failed in a row.
    fn open_time(&self, failed_probes: u32) -> Duration {
        let cap = self.max_open_for.max(self.open_for);
        self.open_for
            .saturating_mul(1 << failed_probes.min(16))
            .min(cap)
    }
}

/// The state of a circuit as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What the breaker decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Allow,
    /// A probe; the number is the half-open round the slot belongs to.
    Probe(u64),
    Reject(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, last_probe: Instant },
}

#[derive(Debug, Clone)]
pub(super) struct Breaker {
    state: State,
    consecutive_failures: u32,
    /// Probes failed in a row, for the backoff.
    failed_probes: u32,
    /// Bumped whenever the probe slots are reset, so a stale guard frees nothing.
    round: u64,
}

impl Breaker {
    pub(super) fn new() -> Breaker {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            failed_probes: 0,
            round: 0,
        }
    }

    pub(super) fn admit(&mut self, policy: &CircuitPolicy, now: Instant) -> Decision {
        match self.state {
            State::Closed => Decision::Allow,
            State::Open { until } if now < until => Decision::Reject(until - now),
            State::Open { .. } => self.probe(now, 0),
            State::HalfOpen {
                in_flight,
                last_probe,
            } => {
                if in_flight < policy.half_open_probes {
                    self.probe(now, in_flight)
                } else if now.saturating_duration_since(last_probe) >= PROBE_EXPIRY {
                    self.round += 1;
                    self.probe(now, 0)
                } else {
                    Decision::Reject(HALF_OPEN_RETRY)
                }
            }
        }
    }

    fn probe(&mut self, now: Instant, in_flight: u32) -> Decision {
        self.state = State::HalfOpen {
            in_flight: in_flight + 1,
            last_probe: now,
        };
        Decision::Probe(self.round)
    }

    /// Whether [`Breaker::admit`] would reject now (without taking a probe slot).
    pub(super) fn rejects(&self, policy: &CircuitPolicy, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen {
                in_flight,
                last_probe,
            } => {
                in_flight >= policy.half_open_probes
                    && now.saturating_duration_since(last_probe) < PROBE_EXPIRY
            }
        }
    }

    /// Frees a probe slot of `round`, if that round is still on.
    pub(super) fn release(&mut self, round: u64) {
        if let State::HalfOpen { in_flight, .. } = &mut self.state
            && round == self.round
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Returns true when this success closed the circuit (the caller then clears the window's
    /// circuit counts).
    pub(super) fn on_success(&mut self) -> bool {
        self.consecutive_failures = 0;
        match self.state {
            // Any success while half-open is evidence the target is back (in practice the
            // probe's, as nothing else is admitted).
            State::HalfOpen { .. } => {
                self.state = State::Closed;
                self.failed_probes = 0;
                self.round += 1;
                true
            }
            // A straggler admitted before the circuit opened: the timer decides.
            State::Open { .. } | State::Closed => false,
        }
    }

    /// `requests`/`failures`: the window's circuit counts, this failure included.
    pub(super) fn on_failure(
        &mut self,
        policy: &CircuitPolicy,
        now: Instant,
        requests: u32,
        failures: u32,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            State::Closed => {
                let by_rate = requests >= policy.min_requests
                    && f64::from(failures) >= policy.failure_rate * f64::from(requests);
                if by_rate || self.consecutive_failures >= policy.consecutive_failures {
                    self.open(policy, now);
                }
            }
            State::HalfOpen { .. } => {
                self.failed_probes = self.failed_probes.saturating_add(1);
                self.open(policy, now);
            }
            State::Open { .. } => {}
        }
    }

    fn open(&mut self, policy: &CircuitPolicy, now: Instant) {
        self.state = State::Open {
            until: now + policy.open_time(self.failed_probes),
        };
        self.round += 1;
    }

    pub(super) fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            // The next request will be a probe.
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub(super) fn open_remaining(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    pub(super) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// Durations in configuration: a number and a unit (`ms`, `s`, `m`), e.g. `500ms`, `1.5s`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        let text = if ms >= 60_000 && ms.is_multiple_of(60_000) {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        };
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            D::Error::custom(format!(
                "`{text}` is not a duration; write a number and a unit: 500ms, 10s, 1m"
            ))
        })
    }

    pub(in crate::health) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| c.is_ascii_alphabetic())?;
        let (num, unit) = text.split_at(split);
        let n: f64 = num.trim().parse().ok()?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    }
}

#[cfg(test)]
pub(in crate::health) use duration_text::parse as parse_duration;
