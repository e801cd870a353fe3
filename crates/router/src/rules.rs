//! Routing rules: per public model, an ordered list of conditions that send a request elsewhere.
//!
//! ```yaml
//! rules:
//!   - name: long-prompts                 # optional; letters, digits, `-`, `_`, `.`
//!     when:                              # every condition must hold; empty or absent: always
//!       input_tokens: {gte: 100000}      # estimated input tokens; gte and/or lt
//!       tools: true                      # the request has (true) or has no (false) tools
//!       json: true                       # response_format json_object / json_schema
//!       plan: [free, trial]              # the consumer's plan is one of these
//!       metadata: {tier: batch}          # header `x-gateway-meta-tier: batch`
//!       time: {from: "22:00", to: "06:00", tz: Europe/Berlin, days: [mon, fri]}
//!       monthly_spend_pct: {gte: 80}     # spend so far against the monthly budget, in %
//!     then: {model: cheap}               # or {targets: [{provider: openai, model: gpt-4o-mini}]}
//! ```
//!
//! Reading: rules are deserialised (time windows parse their clock times and zone there, see
//! [`TimeWindow`]), then [`validate`] checks them and names the first bad field
//! (`rules[2].when.time.tz: unknown time zone "Europe/Berln"`). Whether `then.model` names a
//! model that exists is for the caller, which knows the catalogue.
//!
//! Matching: [`first_match`] returns the first rule whose conditions all hold for a
//! [`RuleContext`]; no match means the model's own targets. A condition on a value the request
//! does not have (no plan, no spend figure, no such header) does not hold. Matching allocates
//! nothing and parses nothing: it compares integers and strings, and converts the instant to a
//! zone's wall-clock time once per time condition.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::table::Target;

mod window;

pub use window::{Day, TimeWindow, TimeWindowSpec};

/// Requests carry rule metadata in headers named this prefix plus the key.
pub const METADATA_HEADER_PREFIX: &str = "x-gateway-meta-";

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in logs and response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Match::is_empty")]
    pub when: Match,
    pub then: Action,
}

/// The conditions of a rule; all present ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Bounds<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "MetadataMatch::is_empty")]
    pub metadata: MetadataMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend_pct: Option<Bounds<f64>>,
}

/// Where a matching request goes: `{model: name}` or `{targets: [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ActionSpec", into = "ActionSpec")]
pub enum Action {
    /// Another public model name, served by its own targets and fallbacks.
    Model(String),
    /// These targets, in place of the model's own.
    Targets(Vec<Target>),
}

/// The written form of [`Action`]: a map with exactly one of the two keys. (An externally
/// tagged enum would read as a YAML tag, `!model cheap`, in serde_yaml.)
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    targets: Option<Vec<Target>>,
}

impl TryFrom<ActionSpec> for Action {
    type Error = &'static str;

    fn try_from(a: ActionSpec) -> Result<Self, Self::Error> {
        match (a.model, a.targets) {
            (Some(m), None) => Ok(Action::Model(m)),
            (None, Some(t)) => Ok(Action::Targets(t)),
            _ => Err("set exactly one of `model` and `targets`"),
        }
    }
}

impl From<Action> for ActionSpec {
    fn from(a: Action) -> Self {
        match a {
            Action::Model(m) => ActionSpec {
                model: Some(m),
                targets: None,
            },
            Action::Targets(t) => ActionSpec {
                model: None,
                targets: Some(t),
            },
        }
    }
}

/// `gte <= value < lt`; either bound may be left out, not both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<T>,
}

impl<T: PartialOrd + Copy> Bounds<T> {
    pub fn contains(&self, v: T) -> bool {
        self.gte.is_none_or(|g| v >= g) && self.lt.is_none_or(|l| v < l)
    }
}

/// Header conditions, written as a map `key: value`; each holds when the request's header
/// `x-gateway-meta-<key>` has exactly that value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct MetadataMatch {
    /// Sorted by key; the header name is built once here so a lookup needs no allocation.
    entries: Vec<MetadataEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MetadataEntry {
    key: String,
    header: String,
    value: String,
}

impl From<BTreeMap<String, String>> for MetadataMatch {
    fn from(map: BTreeMap<String, String>) -> Self {
        let entries = map
            .into_iter()
            .map(|(key, value)| MetadataEntry {
                header: format!("{METADATA_HEADER_PREFIX}{key}"),
                key,
                value,
            })
            .collect();
        MetadataMatch { entries }
    }
}

impl From<MetadataMatch> for BTreeMap<String, String> {
    fn from(m: MetadataMatch) -> Self {
        m.entries.into_iter().map(|e| (e.key, e.value)).collect()
    }
}

impl MetadataMatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(key, value)` pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }

    fn holds(&self, headers: &dyn Metadata) -> bool {
        self.entries
            .iter()
            .all(|e| headers.get(&e.header) == Some(e.value.as_str()))
    }
}

/// What the rules may read of one request. Built by the caller per request; the token count
/// is its estimate.
pub struct RuleContext<'a> {
    pub est_input_tokens: u64,
    pub tools: bool,
    /// `response_format` asks for `json_object` or `json_schema`.
    pub json: bool,
    /// The consumer's plan, if the key belongs to a consumer that has one.
    pub plan: Option<&'a str>,
    /// The request's metadata headers, looked up by full lower-case name
    /// (`x-gateway-meta-tier`).
    pub metadata: &'a dyn Metadata,
    /// The instant time windows are checked against (passed in so tests can fix it).
    pub now: Timestamp,
    /// Spend so far this month against the monthly budget, in percent; `None` when unknown.
    pub monthly_spend_pct: Option<f64>,
}

impl std::fmt::Debug for RuleContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleContext")
            .field("est_input_tokens", &self.est_input_tokens)
            .field("tools", &self.tools)
            .field("json", &self.json)
            .field("plan", &self.plan)
            .field("now", &self.now)
            .field("monthly_spend_pct", &self.monthly_spend_pct)
            .finish_non_exhaustive()
    }
}

/// Request headers as the rules read them: by full lower-case name.
pub trait Metadata: Sync {
    fn get(&self, header: &str) -> Option<&str>;
}

/// For requests without any metadata.
pub struct NoMetadata;

impl Metadata for NoMetadata {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Metadata for Vec<(String, String)> {
    fn get(&self, header: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k == header)
            .map(|(_, v)| v.as_str())
    }
}

impl Metadata for Vec<(&str, &str)> {
    fn get(&self, header: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == header).map(|(_, v)| *v)
    }
}

impl<const N: usize> Metadata for [(&str, &str); N] {
    fn get(&self, header: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == header).map(|(_, v)| *v)
    }
}

impl Match {
    pub fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    /// Whether every condition holds; cheap ones first, the time window last.
    pub fn holds(&self, ctx: &RuleContext<'_>) -> bool {
        self.tools.is_none_or(|t| t == ctx.tools)
            && self.json.is_none_or(|j| j == ctx.json)
            && self
                .input_tokens
                .is_none_or(|b| b.contains(ctx.est_input_tokens))
            && self
                .monthly_spend_pct
                .is_none_or(|b| ctx.monthly_spend_pct.is_some_and(|p| b.contains(p)))
            && self.plan.as_ref().is_none_or(|plans| {
                ctx.plan
                    .is_some_and(|p| plans.iter().any(|allowed| allowed == p))
            })
            && self.metadata.holds(ctx.metadata)
            && self.time.as_ref().is_none_or(|w| w.contains(ctx.now))
    }
}

/// The first rule whose conditions all hold, with its index; `None`: use the model's own
/// targets.
pub fn first_match<'r>(rules: &'r [Rule], ctx: &RuleContext<'_>) -> Option<(usize, &'r Rule)> {
    rules.iter().enumerate().find(|(_, r)| r.when.holds(ctx))
}

/// A rule that does not validate, with the path of the field (`rules[2].when.time.tz`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

/// Checks rules as loaded from YAML or the admin API; the first problem wins. Paths start at
/// `rules[i]`, for the caller to prefix with the model's path.
pub fn validate(rules: &[Rule]) -> Result<(), RuleError> {
    let mut names = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = |field: &str, message: String| RuleError {
            path: format!("rules[{i}].{field}"),
            message,
        };
        if let Some(name) = &rule.name {
            check_name(name).map_err(|m| at("name", m))?;
            if names.contains(&name) {
                return Err(at("name", format!("rule {name:?} is defined twice")));
            }
            names.push(name);
        }
        check_match(&rule.when).map_err(|(f, m)| at(&format!("when.{f}"), m))?;
        check_action(&rule.then).map_err(|(f, m)| at(&format!("then.{f}"), m))?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(format!(
            "invalid rule name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

type FieldError = (String, String);

fn check_match(m: &Match) -> Result<(), FieldError> {
    if let Some(b) = &m.input_tokens {
        check_bounds(b).map_err(|(f, e)| (format!("input_tokens{f}"), e))?;
    }
    if let Some(b) = &m.monthly_spend_pct {
        if [b.gte, b.lt].into_iter().flatten().any(|v| !v.is_finite()) {
            return Err(("monthly_spend_pct".into(), "must be a finite number".into()));
        }
        check_bounds(b).map_err(|(f, e)| (format!("monthly_spend_pct{f}"), e))?;
    }
    if let Some(plans) = &m.plan {
        if plans.is_empty() {
            return Err(("plan".into(), "must name at least one plan".into()));
        }
        if let Some(i) = plans.iter().position(|p| p.trim().is_empty()) {
            return Err((format!("plan[{i}]"), "must not be empty".into()));
        }
    }
    for (key, value) in m.metadata.iter() {
        if !is_header_token(key) {
            return Err((
                format!("metadata.{key}"),
                format!(
                    "invalid key {key:?}: use a lower-case header-name token such as `tier` (the header is {METADATA_HEADER_PREFIX}<key>)"
                ),
            ));
        }
        if value.is_empty() || value.trim() != value || value.chars().any(|c| c.is_control()) {
            return Err((
                format!("metadata.{key}"),
                format!(
                    "invalid value {value:?}: a header value, not empty, without surrounding spaces"
                ),
            ));
        }
    }
    if let Some(w) = &m.time
        && let Some(e) = w.error()
    {
        return Err((format!("time.{}", e.field), e.message.clone()));
    }
    Ok(())
}

/// Lower-case header-name token characters (RFC 9110 `tchar` without upper case).
fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn check_bounds<T: PartialOrd + std::fmt::Display>(b: &Bounds<T>) -> Result<(), FieldError> {
    match (&b.gte, &b.lt) {
        (None, None) => Err((String::new(), "needs `gte`, `lt` or both".into())),
        (Some(g), Some(l)) if g >= l => Err((
            ".lt".into(),
            format!("must be greater than `gte` ({g}), or nothing matches"),
        )),
        _ => Ok(()),
    }
}

fn check_action(a: &Action) -> Result<(), FieldError> {
    match a {
        Action::Model(m) if m.trim().is_empty() => {
            Err(("model".into(), "must not be empty".into()))
        }
        Action::Model(_) => Ok(()),
        Action::Targets(ts) if ts.is_empty() => {
            Err(("targets".into(), "needs at least one target".into()))
        }
        Action::Targets(ts) => {
            for (i, t) in ts.iter().enumerate() {
                let field = if t.provider.trim().is_empty() {
                    "provider"
                } else if t.model.trim().is_empty() {
                    "model"
                } else if t.weight == 0 {
                    return Err((format!("targets[{i}].weight"), "must be at least 1".into()));
                } else {
                    continue;
                };
                return Err((format!("targets[{i}].{field}"), "must not be empty".into()));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
