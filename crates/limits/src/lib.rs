//! Rate limits (RPM) and token budgets (TPM) for the data plane: one [`Limiter`] trait, an
//! exact in-process backend and a Redis backend shared by every instance.
//!
//! Map of the crate:
//! - [`rate`]: the vocabulary. A [`Rate`] (`limit` per `period`, validated at construction), a
//!   [`Check`] (key, [`Kind`], rate, cost), and the [`Decision`] with what a 429 needs (the
//!   [`Denial`]: which check, `retry_after`) and the `x-ratelimit-*` headers (a [`Quota`] for
//!   the tightest request limit and the tightest token limit).
//! - `gcra`: the algorithm in exact fixed point, used by [`InProcess`].
//! - [`memory`]: [`InProcess`], a sharded map of TATs with bounded memory.
//! - [`redis`](mod@redis): [`RedisLimiter`], one Lua script per decision, with degraded mode.
//! - [`clock`]: [`MonotonicClock`] in production, [`ManualClock`] for tests.
//!
//! Data flows one way: the pipeline builds the checks of a request (per key, consumer, plan and
//! API, each RPM and/or TPM), calls [`Limiter::check`] at admission with the estimated tokens
//! as the TPM cost, and [`Limiter::adjust`] at settlement with `actual − estimate`.
//!
//! # The algorithm: GCRA
//!
//! Each limit keeps one number, its theoretical arrival time (TAT). With the emission interval
//! `T = period / limit`, a cost `c` at time `now` fits when `max(TAT, now) + c·T − now ≤ period`,
//! and then moves the TAT there. The burst is the limit: an idle key may spend `limit` at once,
//! after which capacity returns steadily at `limit / period`; there are no window boundaries,
//! so no double burst at one. In any interval of length `w`, a limit admits at most
//! `limit + w·limit/period` units plus what settlements refunded in it. A request with several
//! checks is admitted only if all fit, and then all are charged; otherwise none is.
//!
//! Settlement moves the TAT by `delta·T`: a refund never before `now` (so it never creates more
//! than a full burst), extra usage without a ceiling (the request already happened; later
//! requests wait it out).
//!
//! # Redis key layout
//!
//! `{prefix}:r:{key}` (requests) and `{prefix}:t:{key}` (tokens) hold the TAT in microseconds
//! of Redis server time as a float string, with a PEXPIRE at the time the limit is full again,
//! so idle keys vanish. `{prefix}:instances` is a sorted set of live instance ids scored by
//! their last heartbeat. The default prefix is `gw:rl`. A decision touches several keys in one
//! script, so this needs a standalone Redis (or a cluster with all keys in one slot).
//! The script works in float microseconds and admits with a slack of half an interval, at most
//! 1 ms, so that rounding never denies the last cell of a burst and no cell comes more than
//! 1 ms early; in-process arithmetic is exact.
//!
//! # Degraded mode
//!
//! When Redis fails or a call exceeds its timeout (50 ms by default), the decision is taken
//! in process with every limit divided by the instance count (the configured one, else the
//! live count the heartbeat last saw), so all instances together still admit about the limit.
//! Every such decision and every failed call is counted; one request per probe interval tries
//! Redis again, and the first success ends degraded mode. See [`redis`](mod@redis).

pub mod clock;
mod gcra;
pub mod memory;
pub mod rate;
pub mod redis;

use std::future::Future;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use memory::{InProcess, InProcessConfig};
pub use rate::{Check, Decision, Denial, Kind, Quota, Rate, RateError};
pub use redis::{REDIS_URL_VAR, RedisConfig, RedisLimiter, RedisSetupError};

/// What the data plane asks of a rate-limit backend.
pub trait Limiter: Send + Sync {
    /// Checks a request against all its limits at once: either every check consumes its cost,
    /// or (when the decision is denied) none does. Never fails: a backend that cannot reach
    /// its store decides in a documented degraded way.
    fn check(&self, checks: &[Check]) -> impl Future<Output = Decision> + Send;

    /// Corrects a token reservation for `key` at settlement: `delta` = actual − reserved
    /// tokens. Negative gives capacity back, positive charges more without refusing.
    fn adjust(&self, key: &str, rate: Rate, delta: i64) -> impl Future<Output = ()> + Send;
}

impl<C: Clock> Limiter for InProcess<C> {
    fn check(&self, checks: &[Check]) -> impl Future<Output = Decision> + Send {
        std::future::ready(self.decide(checks))
    }

    fn adjust(&self, key: &str, rate: Rate, delta: i64) -> impl Future<Output = ()> + Send {
        self.settle(key, rate, delta);
        std::future::ready(())
    }
}

impl Limiter for RedisLimiter {
    fn check(&self, checks: &[Check]) -> impl Future<Output = Decision> + Send {
        self.decide(checks)
    }

    fn adjust(&self, key: &str, rate: Rate, delta: i64) -> impl Future<Output = ()> + Send {
        self.settle(key, rate, delta)
    }
}

/// The backend chosen at start: Redis when `GATEWAY_REDIS_URL` is set, else in process.
pub enum Backend {
    InProcess(InProcess),
    Redis(RedisLimiter),
}

impl Backend {
    /// Redis from [`RedisConfig::from_env`] when configured, else in process. Must be called
    /// inside a Tokio runtime when Redis is configured.
    pub fn from_env() -> Result<Self, RedisSetupError> {
        match RedisConfig::from_env() {
            Some(config) => RedisLimiter::new(config).map(Backend::Redis),
            None => Ok(Backend::InProcess(InProcess::default())),
        }
    }
}

impl Limiter for Backend {
    async fn check(&self, checks: &[Check]) -> Decision {
        match self {
            Backend::InProcess(limiter) => limiter.decide(checks),
            Backend::Redis(limiter) => limiter.decide(checks).await,
        }
    }

    async fn adjust(&self, key: &str, rate: Rate, delta: i64) {
        match self {
            Backend::InProcess(limiter) => limiter.settle(key, rate, delta),
            Backend::Redis(limiter) => limiter.settle(key, rate, delta).await,
        }
    }
}
