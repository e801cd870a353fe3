//! The Redis backend: limits shared by every gateway instance, with an in-process fallback.
//!
//! Each decision is one Lua script (`check.lua`, sent by EVALSHA; the client loads it with
//! SCRIPT LOAD and retries when the server answers NOSCRIPT, e.g. after a restart) covering all
//! checks of the request atomically, on the server's clock (`TIME`), so instances with skewed
//! clocks agree. Settlement is `adjust.lua`; `heartbeat.lua` keeps the set of live instances.
//!
//! Degraded mode: a call that fails or exceeds [`RedisConfig::timeout`] is counted
//! ([`RedisLimiter::redis_errors`]) and the decision is taken by an in-process limiter whose
//! every limit is `limit / instances` (at least 1), so that N instances together still admit
//! about the limit. `instances` is [`RedisConfig::instances`] when set, else the live count the
//! heartbeat last read from Redis (1 before the first beat). While degraded, requests go
//! straight to the fallback (counted by [`RedisLimiter::degraded_decisions`]) without waiting on
//! Redis; one request per [`RedisConfig::probe_interval`] tries Redis again, and a successful
//! heartbeat makes the next request try at once. The first success ends degraded mode. The
//! fallback's state is local and is not merged back: on recovery Redis's state applies again.
//! A call that timed out may still run on the server later (a paused or slow Redis executes
//! what it had queued): such a request was decided by the fallback and may also have been
//! charged in Redis. Degraded mode errs on the side of counting twice, never of losing limits.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use crate::clock::{Clock, MonotonicClock};
use crate::memory::{InProcess, InProcessConfig, denial};
use crate::rate::{Check, Decision, Kind, Quota, Rate};

/// The environment variable holding the Redis URL (`redis://host:port/db`).
pub const REDIS_URL_VAR: &str = "GATEWAY_REDIS_URL";

/// How the Redis backend connects and degrades.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    /// Prefix of every key this backend writes (`{prefix}:r:{key}`, `{prefix}:t:{key}`,
    /// `{prefix}:instances`). Instances that share limits share the prefix.
    pub prefix: String,
    /// Longest wait for one Redis call before the decision falls back.
    pub timeout: Duration,
    /// Longest wait for a (re)connection attempt.
    pub connect_timeout: Duration,
    /// While degraded, how often one request tries Redis again.
    pub probe_interval: Duration,
    /// How often this instance announces itself; a beat counts for three intervals.
    pub heartbeat_interval: Duration,
    /// The instance count degraded mode divides limits by; `None` uses the heartbeat's count.
    pub instances: Option<NonZeroU32>,
    /// Sizing of the degraded-mode fallback.
    pub fallback: InProcessConfig,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "gw:rl".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(1),
            instances: None,
            fallback: InProcessConfig::default(),
        }
    }

    /// The configuration for `GATEWAY_REDIS_URL`, when it is set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(REDIS_URL_VAR)
            .ok()
            .filter(|url| !url.is_empty())
            .map(Self::new)
    }
}

/// Why a [`RedisLimiter`] could not be built. Redis being unreachable is not one: the limiter
/// then starts degraded and recovers by itself.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    #[error("the Redis limiter must be created inside a Tokio runtime")]
    NoRuntime,
}

/// Why one Redis call did not give a decision.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("unexpected script reply")]
    Reply,
}

/// GCRA limits in Redis, shared by all instances using the same server and prefix.
/// Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    check: Script,
    adjust: Script,
    heartbeat: Script,
    prefix: String,
    instance_id: String,
    timeout: Duration,
    probe_interval: u64,
    beat_ttl: u64,
    fixed_instances: Option<NonZeroU32>,
    live_instances: AtomicU32,
    fallback: InProcess,
    clock: MonotonicClock,
    degraded: AtomicBool,
    /// While degraded: the clock time (ms) from which the next request may try Redis.
    probe_at: AtomicU64,
    degraded_decisions: AtomicU64,
    redis_errors: AtomicU64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisLimiter {
    /// Builds the limiter without waiting for Redis (it connects lazily and reconnects by
    /// itself) and starts the heartbeat task, which ends when the last clone is dropped.
    pub fn new(config: RedisConfig) -> Result<Self, RedisSetupError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisSetupError::NoRuntime)?;
        let client = redis::Client::open(config.url.as_str()).map_err(RedisSetupError::Url)?;
        // One quick retry per reconnection: the breaker below, not the client, decides when
        // to try again, so a request never waits on a backoff schedule.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(RedisSetupError::Url)?;
        let inner = Arc::new(Inner {
            conn,
            check: Script::new(include_str!("redis/check.lua")),
            adjust: Script::new(include_str!("redis/adjust.lua")),
            heartbeat: Script::new(include_str!("redis/heartbeat.lua")),
            prefix: config.prefix,
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            timeout: config.timeout,
            probe_interval: millis(config.probe_interval),
            beat_ttl: millis(config.heartbeat_interval).saturating_mul(3),
            fixed_instances: config.instances,
            live_instances: AtomicU32::new(1),
            fallback: InProcess::new(config.fallback),
            clock: MonotonicClock::new(),
            degraded: AtomicBool::new(false),
            probe_at: AtomicU64::new(0),
            degraded_decisions: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
        });
        runtime.spawn(heartbeat(
            Arc::downgrade(&inner),
            config.heartbeat_interval.max(Duration::from_millis(10)),
        ));
        Ok(RedisLimiter { inner })
    }

    /// Checks a request against all its limits in one script: all consume, or none does.
    pub async fn decide(&self, checks: &[Check]) -> Decision {
        let inner = &self.inner;
        if checks.is_empty() {
            return Decision::empty(false);
        }
        if inner.may_call() {
            match inner.call_check(checks).await {
                Ok(decision) => {
                    inner.succeeded();
                    return decision;
                }
                Err(e) => inner.failed(&e),
            }
        }
        inner.degraded_decisions.fetch_add(1, Ordering::Relaxed);
        let n = inner.instances();
        let local: Vec<Check> = checks
            .iter()
            .map(|c| Check {
                rate: c.rate.share(n),
                ..c.clone()
            })
            .collect();
        let mut decision = inner.fallback.decide(&local);
        decision.degraded = true;
        decision
    }

    /// Settles a token reservation (`delta` = actual − reserved), like
    /// [`InProcess::settle`]; while degraded it settles the fallback's share instead.
    pub async fn settle(&self, key: &str, rate: Rate, delta: i64) {
        let inner = &self.inner;
        if delta == 0 {
            return;
        }
        if inner.may_call() {
            match inner.call_adjust(key, rate, delta).await {
                Ok(()) => {
                    inner.succeeded();
                    return;
                }
                Err(e) => inner.failed(&e),
            }
        }
        inner
            .fallback
            .settle(key, rate.share(inner.instances()), delta);
    }

    /// Decisions taken by the fallback since start.
    pub fn degraded_decisions(&self) -> u64 {
        self.inner.degraded_decisions.load(Ordering::Relaxed)
    }

    /// Failed or timed-out Redis calls since start (decisions, settlements and heartbeats).
    pub fn redis_errors(&self) -> u64 {
        self.inner.redis_errors.load(Ordering::Relaxed)
    }

    /// Whether the last Redis call failed and decisions currently go to the fallback.
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Relaxed)
    }

    /// The instance count degraded mode divides limits by right now.
    pub fn instances(&self) -> u32 {
        self.inner.instances()
    }

    /// This instance's id in the heartbeat set.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Announces this instance now (also done every heartbeat interval); returns the live
    /// instance count read from Redis.
    pub async fn beat(&self) -> Option<u32> {
        self.inner.beat().await
    }

    /// Removes this instance from the live set (graceful shutdown), so that the others'
    /// degraded-mode share grows at once rather than after the heartbeat expires.
    pub async fn leave(&self) {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(inner.key_instances()).arg(&inner.instance_id);
        let call = cmd.query_async::<i64>(&mut conn);
        if !matches!(tokio::time::timeout(inner.timeout, call).await, Ok(Ok(_))) {
            inner.redis_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Inner {
    fn key(&self, kind: Kind, key: &str) -> String {
        format!("{}:{}:{key}", self.prefix, kind.tag())
    }

    fn key_instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_nanos() / 1_000_000
    }

    fn instances(&self) -> u32 {
        match self.fixed_instances {
            Some(n) => n.get(),
            None => self.live_instances.load(Ordering::Relaxed).max(1),
        }
    }

    /// Healthy: always. Degraded: only the one request that claims the next probe slot.
    fn may_call(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let at = self.probe_at.load(Ordering::Acquire);
        now >= at
            && self
                .probe_at
                .compare_exchange(
                    at,
                    now + self.probe_interval,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(target: "limits", "Redis is back: rate limits are shared again");
        }
    }

    fn failed(&self, error: &CallError) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        self.probe_at
            .store(self.now_ms() + self.probe_interval, Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                target: "limits",
                %error,
                "Redis unavailable: rate limits fall back to a per-instance share"
            );
        }
    }

    async fn call_check(&self, checks: &[Check]) -> Result<Decision, CallError> {
        let mut invocation = self.check.prepare_invoke();
        for c in checks {
            invocation
                .key(self.key(c.kind, &c.key))
                .arg(c.rate.limit())
                .arg(c.rate.period_micros())
                .arg(c.cost);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| CallError::Timeout)??;
        decision_from_reply(checks, &reply).ok_or(CallError::Reply)
    }

    async fn call_adjust(&self, key: &str, rate: Rate, delta: i64) -> Result<(), CallError> {
        let mut invocation = self.adjust.key(self.key(Kind::Tokens, key));
        invocation
            .arg(rate.limit())
            .arg(rate.period_micros())
            .arg(delta);
        let mut conn = self.conn.clone();
        let _lag: i64 = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| CallError::Timeout)??;
        Ok(())
    }

    async fn beat(&self) -> Option<u32> {
        let mut invocation = self.heartbeat.key(self.key_instances());
        invocation.arg(&self.instance_id).arg(self.beat_ttl);
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn));
        match reply.await {
            Ok(Ok(live)) => {
                let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);
                self.live_instances.store(live, Ordering::Relaxed);
                // Redis answers again: let the next request probe without waiting.
                self.probe_at.store(0, Ordering::Release);
                Some(live)
            }
            _ => {
                self.redis_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.beat().await;
    }
}

/// `{denied, wait µs, (remaining, reset µs) per check}` → a decision; `None` if malformed.
fn decision_from_reply(checks: &[Check], reply: &[i64]) -> Option<Decision> {
    let (&denied, rest) = reply.split_first()?;
    let (&wait, per_check) = rest.split_first()?;
    if per_check.len() != 2 * checks.len() {
        return None;
    }
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let mut decision = Decision::empty(false);
    for (check, pair) in checks.iter().zip(per_check.chunks_exact(2)) {
        decision.observe(
            check.kind,
            Quota {
                limit: check.rate.limit(),
                remaining: u64::try_from(pair[0]).unwrap_or(0),
                reset: micros(pair[1]),
            },
        );
    }
    if denied > 0 {
        let index = usize::try_from(denied - 1)
            .ok()
            .filter(|&i| i < checks.len())?;
        decision.denied = Some(denial(checks, index, micros(wait)));
    }
    Some(decision)
}
