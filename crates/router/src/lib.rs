//! Routing: which provider and upstream model serve a public model name, in which order to try
//! them, and what to try next when that fails.
//!
//! - [`table`]: the routing table built from providers and model aliases; [`table::RoutingTable::resolve`]
//!   applies, in order: an alias, `provider/model`, the default name patterns, then the
//!   highest-priority provider that lists the model.
//! - [`rules`]: per-model routing rules (tokens, tools, JSON output, plan, metadata header, time
//!   window, monthly spend); [`rules::first_match`] picks the rule that redirects a request
//!   before its targets are tried.
//! - [`balance`]: orders a route's targets by [`Strategy`] (priority, weighted, latency),
//!   open circuits last.
//! - [`health`]: per-target rolling statistics, latency estimate and circuit breaker;
//!   [`Health::admit`] before an upstream call, [`Health::record`] after it.
//! - [`fallback`]: fallback chains per error class.
//! - [`retry`], [`policy`]: retries with backoff and `Retry-After`, hop limits and deadlines.
//! - [`caps`]: what a model can serve; unfit fallbacks are skipped.
//! - [`execute`]: the attempt loop that applies all of the above and records every attempt.

pub mod balance;
pub mod caps;
pub mod execute;
pub mod fallback;
pub mod health;
pub mod policy;
pub mod retry;
pub mod rules;
pub mod table;

pub use balance::{Order, Strategy, order};
pub use caps::{Capabilities, Needs};
pub use execute::{Attempt, AttemptRecord, Failure, Outcome, Plan, Why, execute};
pub use fallback::Fallbacks;
pub use health::{
    Admission, CircuitPolicy, CircuitState, Health, PolicyError, ProbeGuard, TargetReport,
};
pub use policy::{Policy, Timeouts};
pub use retry::RetryPolicy;
pub use rules::{
    Action, Bounds, Day, Match, Metadata, MetadataMatch, NoMetadata, Rule, RuleContext, RuleError,
    TimeWindow, TimeWindowSpec, first_match,
};
pub use table::{ProviderEntry, Resolved, Route, RouteError, RoutingTable, Target};
