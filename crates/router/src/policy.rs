//! How hard the router tries for one route: retries, hops, deadlines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// Most targets one request may visit, whatever the configuration says.
pub const MAX_HOPS: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// Distinct targets (primary and fallbacks) one request may try.
    pub max_hops: u32,
    pub timeouts: Timeouts,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry: RetryPolicy::default(),
            max_hops: 4,
            timeouts: Timeouts::default(),
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), String> {
        self.retry.validate().map_err(|e| format!("retry.{e}"))?;
        if self.max_hops == 0 || self.max_hops > MAX_HOPS {
            return Err(format!("max_hops must be between 1 and {MAX_HOPS}"));
        }
        self.timeouts
            .validate()
            .map_err(|e| format!("timeouts.{e}"))
    }

    pub fn hops(&self) -> usize {
        self.max_hops.clamp(1, MAX_HOPS) as usize
    }
}

/// In milliseconds. The connect timeout belongs to the HTTP client (10 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A stream's first token; exceeding it fails over.
    pub first_token_ms: u64,
    /// The longest silence inside a stream.
    pub idle_ms: u64,
    /// One request, every attempt and wait included.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            first_token_ms: 120_000,
            idle_ms: 120_000,
            total_ms: 600_000,
        }
    }
}

impl Timeouts {
    fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("first_token_ms", self.first_token_ms),
            ("idle_ms", self.idle_ms),
            ("total_ms", self.total_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(format!("{name} must be between 1 and 3600000"));
            }
        }
        Ok(())
    }

    pub fn first_token(&self) -> Duration {
        Duration::from_millis(self.first_token_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }

    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}
