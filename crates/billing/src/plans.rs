//! Plans: what a consumer may use in a billing period and what the operator charges for it.
//!
//! Charges are defined per period as a function of the period's tokens (`usage_charge(n)`); a
//! request is charged the difference it makes (`request_charge(before, tokens)`). Rounding up
//! happens once on the period total, so the per-request charges of a period always sum to
//! exactly what the invoice says.

use serde::{Deserialize, Serialize};

use crate::money::Micros;

/// A billing period: 30 days from the subscription's start (then the next 30, …).
pub const PERIOD_MS: i64 = 30 * 24 * 3600 * 1000;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// A token allowance, no charge.
    Free,
    /// A price per period for an allowance.
    Flat,
    /// A base price per period plus overage per 1k tokens beyond the allowance (default none).
    Metered,
    /// The allowance, then graduated per-1k-token prices.
    Tiered,
}

/// What a prepaid wallet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletUnit {
    /// µUSD; requests draw their consumer charge.
    Usd,
    /// Tokens; requests draw the tokens they use.
    Tokens,
}

/// One graduated step of a tiered plan: tokens beyond the allowance up to `up_to_tokens`
/// (counted from the allowance; `None` = the rest) cost `per_1k_micros` per thousand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    #[serde(default)]
    pub up_to_tokens: Option<u64>,
    pub per_1k_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub kind: PlanKind,
    /// Tokens per period: the whole allowance of `free` and `flat`, the included tokens of
    /// `metered` and `tiered`.
    #[serde(default)]
    pub allowance_tokens: u64,
    /// The price per period (`flat`) or base price (`metered`, `tiered`), µUSD.
    #[serde(default)]
    pub price_micros: u64,
    /// `metered`: µUSD per 1,000 tokens beyond the allowance.
    #[serde(default)]
    pub overage_per_1k_micros: u64,
    /// `tiered`: the graduated prices beyond the allowance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub trial_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Tokens per period past which every request is refused, whatever the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_cap_tokens: Option<u64>,
    /// Models the plan may call; empty = all the API offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Requests draw on a prepaid wallet in this unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<WalletUnit>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> PlanError {
    PlanError::Invalid(m.into())
}

/// Finest rate the limiters keep: one unit per microsecond.
pub const MAX_PER_MINUTE: u64 = 60_000_000;

/// Largest per-period amount accepted anywhere in a plan ($10M), so sums cannot overflow.
const MAX_MICROS: u64 = 10_000_000 * 1_000_000;

impl Plan {
    pub fn validate(&self) -> Result<(), PlanError> {
        match self.kind {
            PlanKind::Free => {
                if self.price_micros != 0 || self.overage_per_1k_micros != 0 {
                    return Err(invalid("a free plan has no price and no overage"));
                }
                if self.allowance_tokens == 0 {
                    return Err(invalid("allowance_tokens: a free plan needs an allowance"));
                }
            }
            PlanKind::Flat => {
                if self.allowance_tokens == 0 {
                    return Err(invalid("allowance_tokens: a flat plan needs an allowance"));
                }
                if self.overage_per_1k_micros != 0 {
                    return Err(invalid(
                        "overage_per_1k_micros: a flat plan has no overage (use metered or tiered)",
                    ));
                }
            }
            PlanKind::Metered => {
                if self.overage_per_1k_micros == 0 {
                    return Err(invalid(
                        "overage_per_1k_micros: a metered plan needs a price per 1k tokens",
                    ));
                }
            }
            PlanKind::Tiered => {
                if self.tiers.is_empty() {
                    return Err(invalid("tiers: a tiered plan needs at least one tier"));
                }
                let mut last = 0;
                for (i, t) in self.tiers.iter().enumerate() {
                    match t.up_to_tokens {
                        Some(u) if u <= last => {
                            return Err(invalid(format!(
                                "tiers[{i}].up_to_tokens must grow from tier to tier"
                            )));
                        }
                        Some(u) => last = u,
                        None if i + 1 != self.tiers.len() => {
                            return Err(invalid(format!(
                                "tiers[{i}]: only the last tier may be open-ended"
                            )));
                        }
                        None => {}
                    }
                    if t.per_1k_micros > MAX_MICROS {
                        return Err(invalid(format!("tiers[{i}].per_1k_micros is too large")));
                    }
                }
            }
        }
        if self.kind != PlanKind::Tiered && !self.tiers.is_empty() {
            return Err(invalid("tiers: only a tiered plan has tiers"));
        }
        if self.price_micros > MAX_MICROS || self.overage_per_1k_micros > MAX_MICROS {
            return Err(invalid("price_micros/overage_per_1k_micros is too large"));
        }
        if self.trial_days > 365 {
            return Err(invalid("trial_days must be at most 365"));
        }
        if self.rpm == Some(0) || self.tpm == Some(0) || self.hard_cap_tokens == Some(0) {
            return Err(invalid(
                "rpm, tpm and hard_cap_tokens must be positive when set",
            ));
        }
        if self.models.iter().any(|m| m.trim().is_empty()) {
            return Err(invalid("models: names must not be empty"));
        }
        Ok(())
    }

    /// Tokens a period may use in total: the hard cap, and for `free` and `flat` the allowance.
    pub fn token_cap(&self) -> Option<u64> {
        let allowance = match self.kind {
            PlanKind::Free | PlanKind::Flat => Some(self.allowance_tokens),
            PlanKind::Metered | PlanKind::Tiered => None,
        };
        match (allowance, self.hard_cap_tokens) {
            (Some(a), Some(h)) => Some(a.min(h)),
            (a, h) => a.or(h),
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// The usage-based charge (µUSD) for a period that used `tokens` in total; base prices are
    /// not included (see [`Plan::period_price`]).
    pub fn usage_charge(&self, tokens: u64) -> Micros {
        let over = u128::from(tokens.saturating_sub(self.allowance_tokens));
        // In µUSD per 1k × tokens, i.e. thousandths of a µUSD; rounded up once.
        let millis: u128 = match self.kind {
            PlanKind::Free | PlanKind::Flat => 0,
            PlanKind::Metered => over * u128::from(self.overage_per_1k_micros),
            PlanKind::Tiered => {
                let mut left = over;
                let mut from = 0u128;
                let mut sum = 0u128;
                for t in &self.tiers {
                    if left == 0 {
                        break;
                    }
                    let size = t
                        .up_to_tokens
                        .map_or(left, |u| (u128::from(u) - from).min(left));
                    sum += size * u128::from(t.per_1k_micros);
                    left -= size;
                    from += size;
                }
                sum
            }
        };
        i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
    }

    /// What one request of `tokens` costs the consumer after `before` tokens this period.
    pub fn request_charge(&self, before: u64, tokens: u64) -> Micros {
        self.usage_charge(before.saturating_add(tokens)) - self.usage_charge(before)
    }

    /// The fixed price of one period (nothing during the trial).
    pub fn period_price(&self) -> Micros {
        i64::try_from(self.price_micros).unwrap_or(i64::MAX)
    }

    /// Whether a subscription started at `started_ms` is still in its trial at `now_ms`.
    pub fn in_trial(&self, started_ms: i64, now_ms: i64) -> bool {
        now_ms < started_ms.saturating_add(i64::from(self.trial_days) * DAY_MS)
    }
}

/// The start of the billing period containing `now_ms` for a subscription anchored at
/// `anchor_ms`.
pub fn period_start(anchor_ms: i64, now_ms: i64) -> i64 {
    if now_ms <= anchor_ms {
        return anchor_ms;
    }
    anchor_ms + (now_ms - anchor_ms) / PERIOD_MS * PERIOD_MS
}

/// The part of `price` that covers `remaining_ms` of a period (rounded down: a credit for the
/// unused part of an old plan never exceeds what was paid).
pub fn prorate(price: Micros, remaining_ms: i64) -> Micros {
    let remaining = i128::from(remaining_ms.clamp(0, PERIOD_MS));
    i64::try_from(i128::from(price) * remaining / i128::from(PERIOD_MS)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(v: serde_json::Value) -> Plan {
        let p: Plan = serde_json::from_value(v).unwrap();
        p.validate().unwrap();
        p
    }

    #[test]
    fn kinds_charge_as_documented() {
        let free = plan(serde_json::json!({"kind": "free", "allowance_tokens": 1000}));
        assert_eq!(free.usage_charge(5000), 0);
        assert_eq!(free.token_cap(), Some(1000));

        let flat = plan(
            serde_json::json!({"kind": "flat", "allowance_tokens": 100000,
                                           "price_micros": 20000000, "hard_cap_tokens": 50000}),
        );
        assert_eq!(flat.usage_charge(60000), 0);
        assert_eq!(flat.period_price(), 20_000_000);
        assert_eq!(flat.token_cap(), Some(50000));

        // $0.002 per 1k beyond 1,000 included tokens.
        let metered = plan(
            serde_json::json!({"kind": "metered", "price_micros": 5000000,
                                              "allowance_tokens": 1000, "overage_per_1k_micros": 2000}),
        );
        assert_eq!(metered.usage_charge(1000), 0);
        assert_eq!(metered.usage_charge(2000), 2000);
        assert_eq!(metered.usage_charge(1001), 2, "rounded up");
        assert_eq!(metered.token_cap(), None);

        let tiered = plan(
            serde_json::json!({"kind": "tiered", "allowance_tokens": 1000, "tiers": [
            {"up_to_tokens": 10000, "per_1k_micros": 1000},
            {"per_1k_micros": 500}]}),
        );
        assert_eq!(tiered.usage_charge(1000), 0);
        assert_eq!(tiered.usage_charge(11000), 10_000);
        assert_eq!(tiered.usage_charge(21000), 15_000);
    }

    #[test]
    fn bad_plans_are_refused_with_the_field() {
        for (v, needle) in [
            (serde_json::json!({"kind": "free"}), "allowance"),
            (
                serde_json::json!({"kind": "free", "allowance_tokens": 1, "price_micros": 1}),
                "free",
            ),
            (serde_json::json!({"kind": "metered"}), "overage"),
            (serde_json::json!({"kind": "tiered"}), "tiers"),
            (
                serde_json::json!({"kind": "tiered", "tiers": [{"per_1k_micros": 1}, {"per_1k_micros": 1}]}),
                "open-ended",
            ),
            (
                serde_json::json!({"kind": "tiered", "tiers": [{"up_to_tokens": 5, "per_1k_micros": 1},
                                                               {"up_to_tokens": 5, "per_1k_micros": 1}]}),
                "grow",
            ),
            (
                serde_json::json!({"kind": "metered", "overage_per_1k_micros": 1, "rpm": 0}),
                "rpm",
            ),
        ] {
            let p: Plan = serde_json::from_value(v.clone()).unwrap();
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
        assert!(serde_json::from_value::<Plan>(serde_json::json!({"kind": "gold"})).is_err());
        assert!(
            serde_json::from_value::<Plan>(serde_json::json!({"kind": "free", "typo": 1})).is_err()
        );
    }

    #[test]
    fn trials_periods_and_proration() {
        let p = plan(
            serde_json::json!({"kind": "flat", "allowance_tokens": 1, "price_micros": 30000000,
                                        "trial_days": 7}),
        );
        assert!(p.in_trial(0, 6 * DAY_MS));
        assert!(!p.in_trial(0, 7 * DAY_MS));
        assert_eq!(period_start(1000, 1000 + PERIOD_MS + 5), 1000 + PERIOD_MS);
        assert_eq!(period_start(1000, 10), 1000);
        assert_eq!(prorate(30_000_000, PERIOD_MS / 3), 10_000_000);
        assert_eq!(prorate(30_000_000, -5), 0);
        assert_eq!(prorate(30_000_000, PERIOD_MS * 2), 30_000_000);
    }

    fn any_plan() -> impl Strategy<Value = Plan> {
        (
            0u64..5000,
            1u64..100_000,
            1u64..20_000,
            1u64..20_000,
            any::<bool>(),
        )
            .prop_map(|(allowance, per_1k, t1, t2, tiered)| {
                let mut p: Plan = serde_json::from_value(serde_json::json!({"kind": "metered",
                    "allowance_tokens": allowance, "overage_per_1k_micros": per_1k}))
                .unwrap();
                if tiered {
                    p.kind = PlanKind::Tiered;
                    p.overage_per_1k_micros = 0;
                    p.tiers = vec![
                        Tier {
                            up_to_tokens: Some(t1),
                            per_1k_micros: per_1k,
                        },
                        Tier {
                            up_to_tokens: None,
                            per_1k_micros: t2,
                        },
                    ];
                }
                p
            })
    }

    proptest! {
        #[test]
        fn request_charges_sum_to_the_period_charge(
            p in any_plan(), requests in proptest::collection::vec(0u64..5000, 0..50),
        ) {
            p.validate().unwrap();
            let mut used = 0u64;
            let mut charged = 0i64;
            for t in requests {
                let c = p.request_charge(used, t);
                prop_assert!(c >= 0);
                charged += c;
                used += t;
            }
            prop_assert_eq!(charged, p.usage_charge(used));
        }
    }
}
