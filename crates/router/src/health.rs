//! Health of each target (provider and upstream model): what the last minute looked like, a
//! latency estimate for the balancer, and a circuit breaker.
//!
//! - `window`: per target, six 10-second buckets of request, failure, throttle and client-error
//!   counts and a log-bucket latency histogram (p50/p95 within about 12 %).
//! - `ewma`: the time-aware latency average the latency balancer compares.
//! - `circuit`: [`CircuitPolicy`] and the Closed → Open → HalfOpen state machine.
//!
//! The data plane calls [`Health::admit`] before each upstream call and [`Health::record`] after
//! it; the admin API reads [`Health::report`]. One `Health` is shared through an `Arc`. A lookup
//! takes a read lock on the map and the target's own mutex, never across an await; only the
//! first record of a target takes the write lock.
//!
//! Which failures count against a target: server errors, timeouts, connection failures, broken
//! streams, rate limiting (also counted as throttled) and a rejected credential. Bad requests,
//! context length, content filter and unknown model are the consumer's or the content's
//! business: they count as requests and are reported as `client_errors`, but never open a
//! circuit. Latency percentiles and the estimate describe successful requests.

mod circuit;
mod ewma;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use providers::ErrorClass;
use serde::Serialize;
use tokio::time::Instant;

pub use circuit::{CircuitPolicy, CircuitState, HALF_OPEN_RETRY, PROBE_EXPIRY, PolicyError};

use crate::table::Target;
use circuit::{Breaker, Decision};
use ewma::Ewma;
use window::{BUCKET_SECS, Outcome, Window};

/// The most targets tracked. Targets can come from consumer input (`provider/model` names), so
/// the map is capped; when full, the stalest eighth is forgotten.
pub const MAX_TARGETS: usize = 10_000;

/// Whether a request may go to a target now.
#[derive(Debug)]
#[must_use = "a probe slot is held until the admission is dropped"]
pub enum Admission {
    Allow,
    /// The circuit is half-open and this request tests the target. Keep it until the outcome is
    /// recorded: dropping it frees the slot (so a cancelled probe never wedges the circuit).
    Probe(ProbeGuard),
    /// The circuit is open (or all probe slots are taken); try another target.
    Reject {
        retry_in: Duration,
    },
}

impl Admission {
    pub fn admitted(&self) -> bool {
        !matches!(self, Admission::Reject { .. })
    }
}

/// Holds one half-open probe slot; frees it on drop.
#[must_use = "dropping the guard frees the probe slot at once"]
pub struct ProbeGuard {
    entry: Arc<Entry>,
    round: u64,
}

impl std::fmt::Debug for ProbeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeGuard")
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.entry.lock().breaker.release(self.round);
    }
}

/// One target's health as the admin API and `gateway provider health` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    pub provider: String,
    pub model: String,
    pub state: CircuitState,
    /// Requests in the last minute (every outcome).
    pub requests: u32,
    /// Failures of the target in the last minute (those that count for the circuit).
    pub errors: u32,
    /// Of `errors`, how many were rate limiting (429).
    pub throttled: u32,
    /// Requests the provider refused as the consumer's fault or a content decision.
    pub client_errors: u32,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub ewma_ms: Option<f64>,
    pub consecutive_failures: u32,
    /// How much longer an open circuit rejects.
    pub open_for_ms: Option<u64>,
}

/// What the balancer needs of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct View {
    /// Admission would be refused now.
    pub rejecting: bool,
    /// The latency estimate faded by idle time (ms); `None` without data.
    pub score: Option<f64>,
}

pub struct Health {
    inner: RwLock<Inner>,
    /// Window ticks count from here.
    origin: Instant,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.read();
        f.debug_struct("Health")
            .field("policy", &inner.policy)
            .field("targets", &inner.len)
            .finish_non_exhaustive()
    }
}

struct Inner {
    policy: CircuitPolicy,
    /// provider → model → entry: looked up by `&str` without building a key.
    targets: HashMap<Box<str>, HashMap<Box<str>, Arc<Entry>>>,
    len: usize,
    max_targets: usize,
}

impl Inner {
    fn get(&self, t: &Target) -> Option<&Arc<Entry>> {
        self.targets.get(t.provider.as_str())?.get(t.model.as_str())
    }
}

struct Entry(Mutex<Stats>);

impl Entry {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        // Nothing panics while holding it; if something did, the counts are still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Stats {
    window: Window,
    ewma: Ewma,
    breaker: Breaker,
    last_seen: Instant,
}

impl Stats {
    fn record(
        &mut self,
        policy: &CircuitPolicy,
        tick: u64,
        latency: Duration,
        class: Option<ErrorClass>,
        now: Instant,
    ) {
        let outcome = classify(class);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let ms = latency.as_secs_f64() * 1000.0;
        self.last_seen = self.last_seen.max(now);
        self.window.add(tick, outcome, us);
        match outcome {
            Outcome::Success => {
                self.ewma.observe(ms, now);
                if self.breaker.on_success() {
                    self.window.reset_circuit();
                }
            }
            Outcome::Failure { .. } => {
                self.ewma.observe_failure(ms, now);
                let c = self.window.totals(tick);
                self.breaker
                    .on_failure(policy, now, c.circuit_requests, c.circuit_failures);
            }
            Outcome::ClientError => {}
        }
    }

    fn report(&self, provider: &str, model: &str, tick: u64, now: Instant) -> TargetReport {
        let c = self.window.totals(tick);
        let [p50_ms, p95_ms] = self.window.percentiles(tick, [0.5, 0.95]);
        TargetReport {
            provider: provider.to_string(),
            model: model.to_string(),
            state: self.breaker.state(now),
            requests: c.requests,
            errors: c.failures,
            throttled: c.throttled,
            client_errors: c.client_errors,
            error_rate: if c.requests == 0 {
                0.0
            } else {
                f64::from(c.failures) / f64::from(c.requests)
            },
            p50_ms,
            p95_ms,
            ewma_ms: self.ewma.value(),
            consecutive_failures: self.breaker.consecutive_failures(),
            open_for_ms: self
                .breaker
                .open_remaining(now)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// How an outcome counts; every class is named so a new one needs a decision.
fn classify(class: Option<ErrorClass>) -> Outcome {
    match class {
        None => Outcome::Success,
        Some(ErrorClass::RateLimited) => Outcome::Failure { throttled: true },
        Some(
            ErrorClass::Server
            | ErrorClass::Timeout
            | ErrorClass::Connect
            | ErrorClass::StreamBroken
            | ErrorClass::Auth,
        ) => Outcome::Failure { throttled: false },
        Some(
            ErrorClass::BadRequest
            | ErrorClass::ContextLength
            | ErrorClass::ContentFilter
            | ErrorClass::NotFound,
        ) => Outcome::ClientError,
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new(CircuitPolicy::default())
    }
}

impl Health {
    pub fn new(policy: CircuitPolicy) -> Health {
        Health::with_max_targets(policy, MAX_TARGETS)
    }

    pub fn with_max_targets(policy: CircuitPolicy, max_targets: usize) -> Health {
        Health {
            inner: RwLock::new(Inner {
                policy,
                targets: HashMap::new(),
                len: 0,
                max_targets: max_targets.max(1),
            }),
            origin: Instant::now(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / BUCKET_SECS
    }

    pub fn policy(&self) -> CircuitPolicy {
        self.read().policy
    }

    /// A new policy (after a configuration reload) applies from the next request; circuits keep
    /// their state.
    pub fn set_policy(&self, policy: CircuitPolicy) {
        self.write().policy = policy;
    }

    /// Forgets the targets `keep` refuses (e.g. those no longer configured).
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut inner = self.write();
        inner.targets.retain(|p, models| {
            models.retain(|m, _| keep(p, m));
            !models.is_empty()
        });
        inner.len = inner.targets.values().map(HashMap::len).sum();
    }

    /// Whether a request may go to `target` now. A target never recorded is allowed.
    pub fn admit(&self, target: &Target, now: Instant) -> Admission {
        let inner = self.read();
        let Some(entry) = inner.get(target) else {
            return Admission::Allow;
        };
        let decision = entry.lock().breaker.admit(&inner.policy, now);
        match decision {
            Decision::Allow => Admission::Allow,
            Decision::Probe(round) => Admission::Probe(ProbeGuard {
                entry: Arc::clone(entry),
                round,
            }),
            Decision::Reject(retry_in) => Admission::Reject { retry_in },
        }
    }

    /// Records the outcome of one upstream call: `class` is `None` for a success.
    pub fn record(
        &self,
        target: &Target,
        latency: Duration,
        class: Option<ErrorClass>,
        now: Instant,
    ) {
        let tick = self.tick(now);
        {
            let inner = self.read();
            if let Some(entry) = inner.get(target) {
                entry
                    .lock()
                    .record(&inner.policy, tick, latency, class, now);
                return;
            }
        }
        let mut inner = self.write();
        let policy = inner.policy;
        inner
            .entry(target, now)
            .lock()
            .record(&policy, tick, latency, class, now);
    }

    /// The target's latency estimate in ms, as last measured.
    pub fn ewma_ms(&self, target: &Target) -> Option<f64> {
        self.read().get(target)?.lock().ewma.value()
    }

    pub fn state(&self, target: &Target, now: Instant) -> CircuitState {
        self.read()
            .get(target)
            .map_or(CircuitState::Closed, |e| e.lock().breaker.state(now))
    }

    /// Fills `out[i]` with what the balancer needs of `targets[i]`, under one read lock.
    pub(crate) fn views(&self, targets: &[Target], now: Instant, out: &mut [View]) {
        let inner = self.read();
        for (t, v) in targets.iter().zip(out) {
            *v = inner.get(t).map_or(View::default(), |e| {
                let s = e.lock();
                View {
                    rejecting: s.breaker.rejects(&inner.policy, now),
                    score: s.ewma.score(now),
                }
            });
        }
    }

    /// Every tracked target, sorted by provider and model.
    pub fn report(&self, now: Instant) -> Vec<TargetReport> {
        let tick = self.tick(now);
        let inner = self.read();
        let mut out = Vec::with_capacity(inner.len);
        for (p, models) in &inner.targets {
            for (m, e) in models {
                out.push(e.lock().report(p, m, tick, now));
            }
        }
        out.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        out
    }
}

impl Inner {
    fn entry(&mut self, t: &Target, now: Instant) -> Arc<Entry> {
        if let Some(e) = self.get(t) {
            return Arc::clone(e);
        }
        if self.len >= self.max_targets {
            self.evict_stalest();
        }
        let e = Arc::new(Entry(Mutex::new(Stats {
            window: Window::new(),
            ewma: Ewma::default(),
            breaker: Breaker::new(),
            last_seen: now,
        })));
        self.targets
            .entry(t.provider.as_str().into())
            .or_default()
            .insert(t.model.as_str().into(), Arc::clone(&e));
        self.len += 1;
        e
    }

    /// Forgets the least recently recorded eighth of the targets (at least one), so a flood of
    /// new names costs one scan per `max_targets / 8` inserts.
    fn evict_stalest(&mut self) {
        let mut seen: Vec<(Instant, &str, &str)> = self
            .targets
            .iter()
            .flat_map(|(p, models)| {
                models
                    .iter()
                    .map(move |(m, e)| (e.lock().last_seen, &**p, &**m))
            })
            .collect();
        let n = (seen.len() / 8).max(1).min(seen.len());
        if n < seen.len() {
            seen.select_nth_unstable_by_key(n, |s| s.0);
        }
        let victims: Vec<(String, String)> = seen[..n]
            .iter()
            .map(|(_, p, m)| (p.to_string(), m.to_string()))
            .collect();
        for (p, m) in victims {
            if let Some(models) = self.targets.get_mut(p.as_str()) {
                models.remove(m.as_str());
                if models.is_empty() {
                    self.targets.remove(p.as_str());
                }
            }
            self.len = self.len.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests;
