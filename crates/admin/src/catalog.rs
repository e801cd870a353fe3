//! The catalog: providers and models as operators write them (YAML file, admin API, CLI), their
//! validation, their storage form, and the data-plane snapshot built from the store.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pipeline::Snapshot;
use providers::{ProviderSpec, SpecError};
use router::{
    Capabilities, CircuitPolicy, Fallbacks, Policy, RetryPolicy, Route, Rule, Strategy, Target,
    Timeouts,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{ModelInput, ModelRecord, ProviderInput, ProviderRecord, Store};
use wire::secret::Secret;

/// A provider definition. `api_key` is write-only: it deserialises, never serialises.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDef {
    pub name: String,
    /// `openai`, `azure_openai`, `anthropic`, `gemini`, or an OpenAI-compatible vendor
    /// (`groq`, `mistral`, …, `openai_compatible`).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing)]
    pub api_key: Option<Secret>,
    /// Azure OpenAI: the `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI: model name → deployment name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    /// Model names this provider serves (routes names no alias or pattern claims).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Higher wins when several providers list a model.
    #[serde(default)]
    pub priority: i64,
    /// Deadline for a whole answer, or a stream's first byte (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A public model name and how it is served.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    pub name: String,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub fallbacks: Fallbacks,
    /// Shorthand for `capabilities.context_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// What the model can serve: fallbacks that cannot serve a request are skipped, and only
    /// models with `prefill: true` get a broken stream's partial answer as a prefill.
    #[serde(default, skip_serializing_if = "is_default")]
    pub capabilities: Capabilities,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Distinct targets one request may try (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// How targets are ordered: `priority` (default), `weighted`, `latency`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub strategy: Strategy,
    /// Routing rules, first match wins; no match → `targets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Router-wide settings (admin API `/admin/router`, YAML `router:`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// When a target's circuit opens and how it recovers.
    #[serde(default)]
    pub circuit: CircuitPolicy,
    /// Spend so far this month against the monthly budget, in percent, for routing rules'
    /// `monthly_spend_pct` (set by hand until budgets exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend_pct: Option<f64>,
}

/// The settings key that holds [`RouterSettings`].
const ROUTER_SETTINGS: &str = "router";

impl RouterSettings {
    pub fn check(&self, path: &str) -> Result<(), DefError> {
        self.circuit
            .validate()
            .map_err(|e| DefError::new(format!("{path}.circuit.{}", e.field), e.reason))?;
        if let Some(p) = self.monthly_spend_pct
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(DefError::new(
                format!("{path}.monthly_spend_pct"),
                "must be a number ≥ 0",
            ));
        }
        Ok(())
    }

    pub async fn load(store: &Store) -> Result<RouterSettings, CatalogError> {
        match store.get_setting(ROUTER_SETTINGS).await? {
            None => Ok(RouterSettings::default()),
            Some(raw) => serde_json::from_str(&raw).map_err(|e| {
                CatalogError::Invalid(DefError::new("router", format!("stored settings: {e}")))
            }),
        }
    }

    pub async fn save(&self, store: &Store) -> Result<(), CatalogError> {
        let raw = serde_json::to_string(self)
            .map_err(|e| CatalogError::Invalid(DefError::new("router", e.to_string())))?;
        store.set_setting(ROUTER_SETTINGS, &raw).await?;
        Ok(())
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// A validation failure, with the field path it concerns (e.g. `models[0].targets[1].provider`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefError {
    pub path: String,
    pub message: String,
}

impl DefError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        DefError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ProviderDef {
    /// Checks the definition; `path` prefixes field names in the error.
    pub fn spec(&self, path: &str) -> Result<ProviderSpec, DefError> {
        let mut spec = ProviderSpec::build(
            &self.name,
            &self.kind,
            self.base_url.as_deref(),
            self.api_key.clone(),
        )
        .map_err(|e| {
            let field = match e {
                SpecError::UnknownKind(..) => "kind",
                SpecError::BadName(_) => "name",
                SpecError::MissingBaseUrl(..) | SpecError::BadBaseUrl(_) => "base_url",
                SpecError::MissingApiVersion(_) => "api_version",
            };
            DefError::new(format!("{path}.{field}"), e.to_string())
        })?;
        if spec.kind == providers::ProviderKind::AzureOpenAi && self.api_version.is_none() {
            return Err(DefError::new(
                format!("{path}.api_version"),
                SpecError::MissingApiVersion(self.name.clone()).to_string(),
            ));
        }
        if let Some(t) = self.timeout_secs {
            if t == 0 || t > 3600 {
                return Err(DefError::new(
                    format!("{path}.timeout_secs"),
                    "must be between 1 and 3600",
                ));
            }
            spec.timeout = Duration::from_secs(t);
        }
        spec.api_version = self.api_version.clone();
        spec.deployments = self.deployments.clone().into_iter().collect();
        spec.models = self.models.clone();
        spec.priority = self.priority;
        Ok(spec)
    }

    pub fn to_input(&self) -> ProviderInput {
        let mut input = ProviderInput::new(self.name.clone(), self.kind.clone());
        input.base_url = self.base_url.clone();
        input.api_key = self.api_key.clone();
        input.options = json!({
            "api_version": self.api_version,
            "deployments": self.deployments,
            "timeout_secs": self.timeout_secs,
        });
        input.models = self.models.clone();
        input.priority = self.priority;
        input.enabled = self.enabled;
        input
    }

    pub fn from_record(r: &ProviderRecord) -> ProviderDef {
        let opt = |k: &str| r.options.get(k).cloned().unwrap_or(Value::Null);
        ProviderDef {
            name: r.name.clone(),
            kind: r.kind.clone(),
            base_url: r.base_url.clone(),
            api_key: r.api_key.clone(),
            api_version: serde_json::from_value(opt("api_version")).unwrap_or_default(),
            deployments: serde_json::from_value(opt("deployments")).unwrap_or_default(),
            models: r.models.clone(),
            priority: r.priority,
            timeout_secs: serde_json::from_value(opt("timeout_secs")).unwrap_or_default(),
            enabled: r.enabled,
        }
    }
}

impl ModelDef {
    /// Checks the definition against the provider names that exist.
    pub fn check(&self, path: &str, providers: &HashSet<String>) -> Result<(), DefError> {
        if self.name.trim().is_empty() {
            return Err(DefError::new(format!("{path}.name"), "must not be empty"));
        }
        if self.targets.is_empty() {
            return Err(DefError::new(
                format!("{path}.targets"),
                "needs at least one target",
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !providers.contains(&t.provider) {
                return Err(DefError::new(
                    format!("{path}.targets[{i}].provider"),
                    format!("unknown provider '{}'", t.provider),
                ));
            }
            if t.model.trim().is_empty() {
                return Err(DefError::new(
                    format!("{path}.targets[{i}].model"),
                    "must not be empty",
                ));
            }
        }
        if self.fallbacks.all_names().any(|n| n == &self.name) {
            return Err(DefError::new(
                format!("{path}.fallbacks"),
                "a model cannot fall back to itself",
            ));
        }
        if self.context_window.is_some() && self.capabilities.context_window.is_some() {
            return Err(DefError::new(
                format!("{path}.context_window"),
                "set either context_window or capabilities.context_window, not both",
            ));
        }
        if let Some(r) = &self.retry {
            r.validate()
                .map_err(|e| DefError::new(format!("{path}.retry"), e))?;
        }
        self.policy()
            .validate()
            .map_err(|e| DefError::new(path.to_string(), e))?;
        router::rules::validate(&self.rules)
            .map_err(|e| DefError::new(format!("{path}.{}", e.path), e.message))?;
        Ok(())
    }

    fn policy(&self) -> Policy {
        let d = Policy::default();
        Policy {
            retry: self.retry.clone().unwrap_or(d.retry),
            max_hops: self.max_hops.unwrap_or(d.max_hops),
            timeouts: self.timeouts.clone().unwrap_or(d.timeouts),
        }
    }

    /// The data plane's form.
    pub fn route(self) -> Route {
        let policy = self.policy();
        let mut caps = self.capabilities;
        caps.context_window = caps.context_window.or(self.context_window);
        Route {
            name: self.name,
            targets: self.targets,
            fallbacks: self.fallbacks,
            caps,
            policy,
            strategy: self.strategy,
            rules: self.rules,
        }
    }

    pub fn to_input(&self) -> ModelInput {
        let mut input = ModelInput::new(self.name.clone());
        input.targets = serde_json::to_value(&self.targets).unwrap_or(Value::Null);
        input.fallbacks = serde_json::to_value(&self.fallbacks).unwrap_or(Value::Null);
        input.options = json!({
            "context_window": self.context_window,
            "capabilities": self.capabilities,
            "retry": self.retry,
            "max_hops": self.max_hops,
            "timeouts": self.timeouts,
            "strategy": self.strategy,
            "rules": self.rules,
            "pricing": self.pricing,
        });
        input
    }

    pub fn from_record(r: &ModelRecord) -> Result<ModelDef, DefError> {
        let bad = |f: &str, e: serde_json::Error| {
            DefError::new(format!("models.{}.{f}", r.name), e.to_string())
        };
        let opt = |k: &str| r.options.get(k).cloned().unwrap_or(Value::Null);
        Ok(ModelDef {
            name: r.name.clone(),
            targets: serde_json::from_value(r.targets.clone()).map_err(|e| bad("targets", e))?,
            fallbacks: if r.fallbacks.is_null() {
                Fallbacks::default()
            } else {
                serde_json::from_value(r.fallbacks.clone()).map_err(|e| bad("fallbacks", e))?
            },
            context_window: r.options.get("context_window").and_then(Value::as_u64),
            capabilities: serde_json::from_value::<Option<Capabilities>>(opt("capabilities"))
                .map_err(|e| bad("capabilities", e))?
                .unwrap_or_default(),
            retry: serde_json::from_value(opt("retry")).map_err(|e| bad("retry", e))?,
            max_hops: serde_json::from_value(opt("max_hops")).map_err(|e| bad("max_hops", e))?,
            timeouts: serde_json::from_value(opt("timeouts")).map_err(|e| bad("timeouts", e))?,
            strategy: serde_json::from_value::<Option<Strategy>>(opt("strategy"))
                .map_err(|e| bad("strategy", e))?
                .unwrap_or_default(),
            rules: serde_json::from_value::<Option<Vec<Rule>>>(opt("rules"))
                .map_err(|e| bad("rules", e))?
                .unwrap_or_default(),
            pricing: r
                .options
                .get("pricing")
                .and_then(|p| serde_json::from_value(p.clone()).ok()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Invalid(#[from] DefError),
}

/// Edge settings that come from the process environment rather than the store.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// `GATEWAY_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `GATEWAY_DEV=1`: the `default` API is public unless one is stored.
    pub open_default: bool,
    /// The models directory of the implicit `local` provider (`None`: no implicit provider).
    pub local_models: Option<std::path::PathBuf>,
}

/// The built-in CPU models as provider `local`, unless the operator configured one of that
/// name: lowest priority, so it answers only what no other provider claims (and everything when
/// no other provider is configured).
fn implicit_local(dir: &std::path::Path) -> Option<providers::ProviderSpec> {
    let mut spec = providers::ProviderSpec::build("local", "local", dir.to_str(), None).ok()?;
    spec.priority = i64::MIN;
    spec.models = models::catalog::KNOWN
        .iter()
        .filter(|k| k.installed(dir))
        .map(|k| k.name.to_string())
        .collect();
    Some(spec)
}

/// Builds the data-plane snapshot from what the store holds. A stored row that no longer
/// validates fails the whole build, so a reload keeps the previous snapshot instead.
pub async fn snapshot_from_store(
    store: &Store,
    http: &providers::http::Client,
    edge: &EdgeSettings,
) -> Result<Snapshot, CatalogError> {
    let mut specs = Vec::new();
    for (i, r) in store.list_providers().await?.iter().enumerate() {
        if !r.enabled {
            continue;
        }
        specs.push(ProviderDef::from_record(r).spec(&format!("providers[{i}]"))?);
    }
    if let Some(dir) = &edge.local_models
        && !specs.iter().any(|s| s.name == "local")
        && let Some(local) = implicit_local(dir)
    {
        specs.push(local);
    }
    let routes = store
        .list_models()
        .await?
        .iter()
        .map(|r| ModelDef::from_record(r).map(ModelDef::route))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = RouterSettings::load(store).await?;
    let mut snap = Snapshot::build(specs, routes, http);
    snap.monthly_spend_pct = settings.monthly_spend_pct;
    snap.circuit = settings.circuit;
    if edge.open_default {
        snap.publish(access::api::Api::new(
            access::api::DEFAULT_API,
            access::api::AuthMode::Public,
        ));
    }
    // Stored APIs replace the built-in `default` (key-gated) when one is stored under that slug.
    for r in store.list_apis().await? {
        let def = crate::gateway_apis::ApiDef::from_record(&r)?;
        snap.publish(def.check(&format!("apis.{}", def.slug))?);
    }
    snap.trusted_proxies = edge.trusted_proxies.clone();
    snap.plan_apis = store
        .list_plans(None)
        .await?
        .into_iter()
        .map(|p| p.api)
        .collect();
    snap.billing_events = store.billing_webhook().await?.is_some();
    for f in store.list_functions().await? {
        let failure = pipeline::functions::FailureMode::parse(&f.failure_mode).unwrap_or_default();
        let deadline =
            std::time::Duration::from_millis(u64::try_from(f.deadline_ms).unwrap_or(2000));
        let func = pipeline::functions::Function::new(
            f.name.clone(),
            f.url,
            f.secret,
            deadline,
            failure,
            http.clone(),
        );
        snap.functions.insert(f.name, std::sync::Arc::new(func));
    }
    snap.prices = std::sync::Arc::new(billing::PriceTable::with_overrides(
        store.list_prices().await?.into_iter().collect(),
    ));
    Ok(snap)
}
