//! The gateway's persistent state on SQLite (embedded default) or PostgreSQL (scale-out), behind
//! one [`Store`] handle and one set of queries.
//!
//! Map of the crate:
//! - [`db`]: [`Store::connect`] picks the backend from the URL, opens a pool (SQLite in WAL mode
//!   with foreign keys and a busy timeout), runs migrations, and opens write transactions (on
//!   SQLite on a one-connection pool of their own).
//!   Why one `Any` pool and not an enum of pools is written there.
//! - `migrations`: the schema history, embedded from `migrations/{sqlite,postgres}/`.
//! - [`crypto`]: [`Cipher`] (AES-256-GCM, each ciphertext bound to its row) and the
//!   `encryption.key` file in the data directory.
//! - Repositories, each an `impl Store` block over one table: [`providers`] (keys encrypted at
//!   rest), [`models`] (routes and aliases, JSON kept as `serde_json::Value`), [`settings`]
//!   (including an atomic set-if-absent), [`audit`] (append-only admin log).
//! - Access, the same way: [`apis`] (gateway APIs: a slug as the first path segment, its auth
//!   mode and settings), [`consumers`] (who calls; found or created by an identity provider's
//!   subject), [`keys`] (gateway keys stored as SHA-256 digests, with rotation, batched use
//!   stamps and the `keys_changed_since` poll that keeps every instance's auth cache current)
//!   and [`admin_tokens`] (admin API credentials with a role).
//! - [`request_log`]: the request log (batched inserts, filters, stats) and the hourly
//!   rollups analytics read, kept in the same transaction; retention by whole hours.
//! - [`functions`]: operators' hook/backend endpoints, signing secrets sealed at rest.
//! - `columns`: the shared column conventions (uuid v7 text ids, unix-millisecond times, JSON
//!   text, booleans on both backends).
//! - [`error`]: [`StoreError`]; unique violations from either backend become `Conflict`.
//!
//! Data flows one way: callers hand in `*Input` values and get `*Record` values back; the store
//! knows nothing of HTTP or of what the JSON columns mean. Every query uses bound parameters.

pub mod admin_tokens;
pub mod apis;
pub mod audit;
#[macro_use]
pub mod billing;
pub mod batch;
mod columns;
pub mod consumers;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod functions;
pub mod keys;
pub mod knowledge;
mod migrations;
pub mod models;
pub mod providers;
pub mod request_log;
pub mod settings;

pub use admin_tokens::{AdminTokenInput, AdminTokenRecord};
pub use apis::{ApiInput, ApiRecord};
pub use audit::{AuditInput, AuditRecord};
pub use batch::Hold;
pub use billing::{
    Billed, Credit, LedgerEntry, PeriodUsage, PlanRecord, PlanSpan, Recorded, Settled,
    SubscriptionRecord, UsageInput, UsageLine, UsageRecord, WalletRecord,
};
pub use consumers::{ConsumerInput, ConsumerRecord};
pub use crypto::key_file::{load_or_create_key_file, write_rotated as write_rotated_key_file};
pub use crypto::{Cipher, Keyring};
pub use db::{Backend, Store};
pub use error::StoreError;
pub use events::EventRecord;
pub use functions::{FunctionInput, FunctionRecord, FunctionView};
pub use keys::{KeyInput, KeyRecord, KeyView};
pub use models::{ModelInput, ModelRecord};
pub use providers::{ProviderInput, ProviderRecord, ProviderView};
pub use request_log::metadata::{MetaMatch, MetadataUsage};
pub use request_log::{LogFilter, LogRow, LogStats, RollupBy, UsageRollup};

#[cfg(test)]
mod tests;
