//! Routing: which provider and upstream model serve a public model name, and what to try next
//! when that fails.
//!
//! - [`table`]: the routing table built from providers and model aliases; [`table::RoutingTable::resolve`]
//!   applies, in order: an alias, `provider/model`, the default name patterns, then the
//!   highest-priority provider that lists the model.
//! - [`fallback`]: fallback chains per error class and the attempt loop that walks them.

pub mod fallback;
pub mod table;

pub use fallback::{Attempt, Fallbacks, Outcome, execute};
pub use table::{ProviderEntry, Resolved, Route, RouteError, RoutingTable, Target};
