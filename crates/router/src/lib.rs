//! Routing: which provider and upstream model serve a public model name, in which order to try
//! them, and what to try next when that fails.
//!
//! - [`table`]: the routing table built from providers and model aliases; [`table::RoutingTable::resolve`]
//!   applies, in order: an alias, `provider/model`, the default name patterns, then the
//!   highest-priority provider that lists the model.
//! - [`health`]: per-target rolling statistics, latency estimate and circuit breaker;
//!   [`Health::admit`] before an upstream call, [`Health::record`] after it.
//! - [`balance`]: orders a route's targets by [`Strategy`] (priority, weighted, latency),
//!   open circuits last.
//! - [`fallback`]: fallback chains per error class and the attempt loop that walks them.

pub mod balance;
pub mod fallback;
pub mod health;
pub mod table;

pub use balance::{Order, Strategy, order};
pub use fallback::{Attempt, Fallbacks, Outcome, execute};
pub use health::{
    Admission, CircuitPolicy, CircuitState, Health, PolicyError, ProbeGuard, TargetReport,
};
pub use table::{ProviderEntry, Resolved, Route, RouteError, RoutingTable, Target};
