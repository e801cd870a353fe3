//! Money on the data plane, as pure functions the pipeline and the store share:
//!
//! - [`money`]: the units. Provider cost is exact in pico-dollars (a price in micro-dollars per
//!   million tokens times a token count is an integer number of 10⁻¹² USD); ledger amounts are
//!   integer micro-units (µUSD, or tokens for token wallets), rounded up from picos once.
//! - [`prices`]: the built-in price table (`data/prices.json`, authored from the providers'
//!   pricing pages) with admin overrides, and the cost of a request's usage.
//! - [`plans`]: what a consumer is charged under a plan — the period's total charge as a
//!   function of its tokens, so per-request charges telescope exactly into the invoice.

pub mod money;
pub mod plans;
pub mod prices;
pub mod tokens;

pub use money::{Micros, Picos};
pub use plans::{Plan, PlanError, PlanKind, Tier, WalletUnit};
pub use prices::{Price, PriceError, PriceTable, TokenCounts};
