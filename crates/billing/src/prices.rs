//! The price table: what each model costs the operator, per million tokens.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::money::Picos;

/// Highest accepted price: $1,000 per million tokens, in µUSD per million.
const MAX_PRICE: u64 = 1_000_000_000;

/// Prices in µUSD per million tokens (so `tokens × price` is picos, exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    /// Cached prompt tokens; `None` bills them as ordinary input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<u64>,
}

/// Tokens of one request, as the provider reported or as estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    /// All prompt tokens, cached ones included (OpenAI's convention).
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

impl TokenCounts {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

impl Price {
    pub fn cost(&self, t: TokenCounts) -> Picos {
        let cached = t.cached.min(t.prompt);
        let fresh = u128::from(t.prompt - cached);
        let cached_price = self.cached_input.unwrap_or(self.input);
        Picos(
            fresh * u128::from(self.input)
                + u128::from(cached) * u128::from(cached_price)
                + u128::from(t.completion) * u128::from(self.output),
        )
    }

    /// A price from dollars per million tokens, as the admin types it.
    pub fn from_usd_per_million(
        input: f64,
        output: f64,
        cached_input: Option<f64>,
    ) -> Result<Price, PriceError> {
        Ok(Price {
            input: usd_per_million("input", input)?,
            output: usd_per_million("output", output)?,
            cached_input: cached_input
                .map(|c| usd_per_million("cached_input", c))
                .transpose()?,
        })
    }

    /// Dollars per million tokens, for display.
    pub fn as_usd_per_million(&self) -> (f64, f64, Option<f64>) {
        let d = |v: u64| v as f64 / 1e6;
        (d(self.input), d(self.output), self.cached_input.map(d))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("{0} must be a number of dollars per million tokens between 0 and 1000")]
    OutOfBounds(&'static str),
    #[error("{0} has more than six decimal places")]
    TooPrecise(&'static str),
    #[error("model must be a non-empty name without spaces")]
    BadModel,
}

fn usd_per_million(field: &'static str, v: f64) -> Result<u64, PriceError> {
    if !v.is_finite() || !(0.0..=1000.0).contains(&v) {
        return Err(PriceError::OutOfBounds(field));
    }
    let scaled = (v * 1e6).round();
    if (scaled - v * 1e6).abs() > 1e-3 {
        return Err(PriceError::TooPrecise(field));
    }
    // In range by the check above: 0 ≤ scaled ≤ 1e9.
    let p = scaled as u64;
    if p > MAX_PRICE {
        return Err(PriceError::OutOfBounds(field));
    }
    Ok(p)
}

pub fn validate_model_key(model: &str) -> Result<(), PriceError> {
    if model.is_empty() || model.len() > 200 || model.chars().any(char::is_whitespace) {
        return Err(PriceError::BadModel);
    }
    Ok(())
}

#[derive(Deserialize)]
struct PriceFile {
    models: HashMap<String, UsdEntry>,
}

#[derive(Deserialize)]
struct UsdEntry {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

/// The shipped table; the data file is checked by a test, so a bad edit fails the build's tests
/// rather than the gateway at start (a bad entry is skipped and logged by the caller's table).
static BUILTIN: LazyLock<HashMap<String, Price>> = LazyLock::new(|| {
    let file: PriceFile = match serde_json::from_str(include_str!("../data/prices.json")) {
        Ok(f) => f,
        Err(_) => return HashMap::new(),
    };
    file.models
        .into_iter()
        .filter_map(|(k, e)| {
            Price::from_usd_per_million(e.input, e.output, e.cached_input)
                .ok()
                .map(|p| (k, p))
        })
        .collect()
});

/// Built-in prices plus the operator's overrides (keyed by `model` or `provider/model`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    overrides: HashMap<String, Price>,
}

impl PriceTable {
    pub fn with_overrides(overrides: HashMap<String, Price>) -> PriceTable {
        PriceTable { overrides }
    }

    /// The built-in entries, for listings.
    pub fn builtin() -> &'static HashMap<String, Price> {
        &BUILTIN
    }

    /// The price of `model` as served by `provider`: an override for `provider/model`, then for
    /// `model`, then the built-in table; a vendor-prefixed name (`openai/gpt-4o`) and a dated
    /// or versioned snapshot (`gpt-4o-2024-08-06`, `mistral-large-latest`) fall back to the
    /// listed base name. `None` when nothing matches: the cost is then unknown, not zero.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(p) = self.overrides.get(&format!("{provider}/{model}")) {
            return Some(*p);
        }
        let bare = model.rsplit('/').next().unwrap_or(model);
        for table in [&self.overrides, &*BUILTIN] {
            for name in [model, bare] {
                if let Some(p) = table.get(name) {
                    return Some(*p);
                }
            }
        }
        for table in [&self.overrides, &*BUILTIN] {
            if let Some(p) = snapshot_of(table, bare) {
                return Some(p);
            }
        }
        None
    }
}

/// The entry whose name is the longest prefix of `model` followed only by version parts
/// (numbers, `latest`, `preview`, `exp`): `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`,
/// but `gpt-4o-audio` is not `gpt-4o`.
fn snapshot_of(table: &HashMap<String, Price>, model: &str) -> Option<Price> {
    let mut end = model.len();
    while let Some(i) = model[..end].rfind('-') {
        let suffix = &model[i + 1..];
        let versionish = suffix.split('-').all(|part| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                || matches!(part, "latest" | "preview" | "exp")
        });
        if !versionish {
            return None;
        }
        if let Some(p) = table.get(&model[..i]) {
            return Some(*p);
        }
        end = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_shipped_table_parses_completely() {
        let file: PriceFile = serde_json::from_str(include_str!("../data/prices.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(file.models.len() >= 40);
        assert_eq!(BUILTIN.len(), file.models.len(), "every entry is valid");
    }

    #[test]
    fn cost_is_exact_in_picos() {
        let t = PriceTable::default();
        let p = t
            .lookup("openai", "gpt-4o")
            .unwrap_or_else(|| panic!("gpt-4o has a price"));
        // 1000 prompt (200 cached) + 500 completion at $2.50 / $1.25 / $10 per million.
        let c = p.cost(TokenCounts {
            prompt: 1000,
            completion: 500,
            cached: 200,
        });
        assert_eq!(c.to_string(), "0.00725");
        assert_eq!(c.micros_ceil(), 7250);
        // Without a cached price, cached tokens are billed as input.
        let p = Price::from_usd_per_million(1.0, 2.0, None).unwrap_or_else(|e| panic!("{e}"));
        let c = p.cost(TokenCounts {
            prompt: 10,
            completion: 0,
            cached: 10,
        });
        assert_eq!(c, Picos(10_000_000));
    }

    #[test]
    fn lookup_follows_snapshots_vendors_and_overrides() {
        let t = PriceTable::default();
        let base = t.lookup("openai", "gpt-4o");
        assert!(base.is_some());
        assert_eq!(t.lookup("openai", "gpt-4o-2024-08-06"), base);
        assert_eq!(t.lookup("openrouter", "openai/gpt-4o"), base);
        assert_ne!(t.lookup("openai", "gpt-4o-mini-2024-07-18"), base);
        assert_eq!(
            t.lookup("openai", "gpt-4o-mini-2024-07-18"),
            t.lookup("openai", "gpt-4o-mini")
        );
        assert!(
            t.lookup("anthropic", "claude-sonnet-4-5-20250929")
                .is_some()
        );
        assert!(t.lookup("mistral", "mistral-large-latest").is_some());
        assert_eq!(t.lookup("openai", "gpt-4o-audio"), None);
        assert_eq!(t.lookup("x", "my-finetune"), None);

        let cheap = Price::from_usd_per_million(0.5, 1.0, None).unwrap_or_else(|e| panic!("{e}"));
        let pricey = Price::from_usd_per_million(9.0, 9.0, None).unwrap_or_else(|e| panic!("{e}"));
        let t = PriceTable::with_overrides(HashMap::from([
            ("gpt-4o".to_string(), cheap),
            ("azure/gpt-4o".to_string(), pricey),
        ]));
        assert_eq!(t.lookup("openai", "gpt-4o"), Some(cheap));
        assert_eq!(t.lookup("openai", "gpt-4o-2024-08-06"), Some(cheap));
        assert_eq!(t.lookup("azure", "gpt-4o"), Some(pricey));
    }

    #[test]
    fn prices_are_bounds_checked() {
        assert!(Price::from_usd_per_million(-1.0, 0.0, None).is_err());
        assert!(Price::from_usd_per_million(1000.5, 0.0, None).is_err());
        assert!(Price::from_usd_per_million(f64::NAN, 0.0, None).is_err());
        assert!(Price::from_usd_per_million(0.0, 0.0, Some(f64::INFINITY)).is_err());
        assert_eq!(
            Price::from_usd_per_million(0.0000001, 0.0, None),
            Err(PriceError::TooPrecise("input"))
        );
        assert!(Price::from_usd_per_million(1000.0, 0.000001, Some(0.0)).is_ok());
        assert!(validate_model_key("gpt 4").is_err());
        assert!(validate_model_key("").is_err());
    }

    proptest! {
        #[test]
        fn cost_is_additive_over_token_counts(
            a in 0u64..10_000_000, b in 0u64..10_000_000, c in 0u64..10_000_000,
            i in 0u64..MAX_PRICE, o in 0u64..MAX_PRICE,
        ) {
            let p = Price { input: i, output: o, cached_input: None };
            let whole = p.cost(TokenCounts { prompt: a + b, completion: c, cached: 0 });
            let parts = p.cost(TokenCounts { prompt: a, completion: 0, cached: 0 })
                .saturating_add(p.cost(TokenCounts { prompt: b, completion: c, cached: 0 }));
            prop_assert_eq!(whole, parts);
        }
    }
}
