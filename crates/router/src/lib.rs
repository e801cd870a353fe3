//! Routing: which provider and upstream model serve a public model name, and what to try next
//! when that fails.
//!
//! - [`table`]: the routing table built from providers and model aliases; [`table::RoutingTable::resolve`]
//!   applies, in order: an alias, `provider/model`, the default name patterns, then the
//!   highest-priority provider that lists the model.
//! - [`fallback`]: fallback chains per error class and the attempt loop that walks them.
//! - [`rules`]: per-model routing rules (tokens, tools, JSON output, plan, metadata header, time
//!   window, monthly spend); [`rules::first_match`] picks the rule that redirects a request
//!   before the table resolves it.

pub mod fallback;
pub mod rules;
pub mod table;

pub use fallback::{Attempt, Fallbacks, Outcome, execute};
pub use rules::{
    Action, Bounds, Day, Match, MetadataMatch, Rule, RuleContext, RuleError, TimeWindow,
    TimeWindowSpec, first_match,
};
pub use table::{ProviderEntry, Resolved, Route, RouteError, RoutingTable, Target};
