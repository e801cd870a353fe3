//! Units of money. Integers only: floating point never touches a balance.

use std::fmt;

/// Exact provider cost in 10⁻¹² USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Picos(pub u128);

/// A ledger amount: millionths of the wallet's unit (µUSD for money wallets); tokens are
/// counted as whole tokens in the same integer type.
pub type Micros = i64;

impl Picos {
    /// Rounded up to whole micro-units, so charging never undercounts.
    pub fn micros_ceil(self) -> Micros {
        i64::try_from(self.0.div_ceil(1_000_000)).unwrap_or(i64::MAX)
    }

    pub fn saturating_add(self, other: Picos) -> Picos {
        Picos(self.0.saturating_add(other.0))
    }
}

/// Decimal dollars with no trailing zeros (`0.000025`, `1.5`, `0`).
impl fmt::Display for Picos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000_000_000;
        let frac = self.0 % 1_000_000_000_000;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Formats micro-units as a decimal (`5000000` → `5`, `60000` → `0.06`, `-1` → `-0.000001`).
pub fn format_micros(m: Micros) -> String {
    let sign = if m < 0 { "-" } else { "" };
    let a = m.unsigned_abs();
    let (whole, frac) = (a / 1_000_000, a % 1_000_000);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{frac:06}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a non-negative decimal with at most six fractional digits into micro-units
/// (`"5"`, `"0.06"`, `"12.345678"`), the way money is typed into the admin API.
pub fn parse_micros(s: &str) -> Option<Micros> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 6 || whole.len() > 12 {
        return None;
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let f: i64 = format!("{frac:0<6}").parse().ok()?;
    w.checked_mul(1_000_000)?.checked_add(f)
}

/// A JSON number of dollars (as the admin sends it) in micro-units, refusing more than six
/// fractional digits rather than rounding silently.
pub fn micros_from_json(v: &serde_json::Value) -> Option<Micros> {
    match v {
        serde_json::Value::Number(n) => parse_micros(&n.to_string()),
        serde_json::Value::String(s) => parse_micros(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picos_print_as_exact_dollars() {
        assert_eq!(Picos(0).to_string(), "0");
        assert_eq!(Picos(25_000_000).to_string(), "0.000025");
        assert_eq!(Picos(1_500_000_000_000).to_string(), "1.5");
        assert_eq!(Picos(1).to_string(), "0.000000000001");
        assert_eq!(Picos(1).micros_ceil(), 1);
        assert_eq!(Picos(2_000_000).micros_ceil(), 2);
    }

    #[test]
    fn micros_parse_and_print() {
        assert_eq!(parse_micros("5"), Some(5_000_000));
        assert_eq!(parse_micros("0.06"), Some(60_000));
        assert_eq!(parse_micros(".5"), Some(500_000));
        assert_eq!(parse_micros("1.0000001"), None);
        assert_eq!(parse_micros("-1"), None);
        assert_eq!(parse_micros("1e3"), None);
        assert_eq!(parse_micros(""), None);
        assert_eq!(parse_micros("."), None);
        assert_eq!(format_micros(60_000), "0.06");
        assert_eq!(format_micros(-1), "-0.000001");
        assert_eq!(micros_from_json(&serde_json::json!(0.1)), Some(100_000));
        assert_eq!(micros_from_json(&serde_json::json!("2.5")), Some(2_500_000));
        assert_eq!(micros_from_json(&serde_json::json!(true)), None);
    }

    proptest! {
        #[test]
        fn micros_round_trip(m in 0i64..1_000_000_000_000_000) {
            prop_assert_eq!(parse_micros(&format_micros(m)), Some(m));
        }
    }
}
