//! The routing table: aliases, providers and the default name patterns.

use std::collections::HashMap;

use providers::ProviderKind;
use serde::{Deserialize, Serialize};

use crate::balance::Strategy;
use crate::caps::Capabilities;
use crate::fallback::Fallbacks;
use crate::policy::Policy;
use crate::rules::Rule;

/// One upstream for an alias: a configured provider and the model name it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub provider: String,
    pub model: String,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

fn is_one(w: &u32) -> bool {
    *w == 1
}

impl Target {
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        Target {
            provider: provider.into(),
            model: model.into(),
            weight: 1,
        }
    }

    /// Same provider and upstream model (the weight does not make another target).
    pub fn same(&self, other: &Target) -> bool {
        self.provider == other.provider && self.model == other.model
    }
}

/// A public model name (alias) and how it is served.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    pub name: String,
    /// Tried in order (highest weight first).
    pub targets: Vec<Target>,
    pub fallbacks: Fallbacks,
    pub caps: Capabilities,
    pub policy: Policy,
    /// How the targets are ordered per request.
    pub strategy: Strategy,
    /// Tried in order before the targets; the first that matches redirects the request.
    pub rules: Vec<Rule>,
}

impl Route {
    pub fn new(name: impl Into<String>, targets: Vec<Target>) -> Self {
        Route {
            name: name.into(),
            targets,
            ..Default::default()
        }
    }
}

/// What the table needs to know of a provider.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: ProviderKind,
    pub models: Vec<String>,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or no configured provider serves it.")]
    UnknownModel(String),
    #[error("The model `{0}` names provider `{1}`, which is not configured.")]
    UnknownProvider(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub targets: Vec<Target>,
    /// The alias, when the name was one (its fallbacks, capabilities and policy apply).
    pub route: Option<&'a Route>,
    pub policy: &'a Policy,
    pub caps: &'a Capabilities,
}

impl Resolved<'_> {
    pub fn fallbacks(&self) -> Option<&Fallbacks> {
        self.route.map(|r| &r.fallbacks)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    routes: HashMap<String, Route>,
    /// Highest priority first; ties keep configuration order.
    providers: Vec<ProviderEntry>,
    /// For names that are not aliases.
    defaults: Route,
}

impl RoutingTable {
    pub fn new(mut providers: Vec<ProviderEntry>, routes: Vec<Route>) -> Self {
        providers.sort_by_key(|p| std::cmp::Reverse(p.priority));
        let routes = routes
            .into_iter()
            .map(|mut r| {
                r.targets.sort_by_key(|t| std::cmp::Reverse(t.weight));
                (r.name.clone(), r)
            })
            .collect();
        RoutingTable {
            routes,
            providers,
            defaults: Route::default(),
        }
    }

    /// The policy for names that are not aliases (`provider/model`, patterns, listings).
    pub fn with_default_policy(mut self, policy: Policy) -> Self {
        self.defaults.policy = policy;
        self
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// The policy a request for `name` runs under: its alias's, or the default.
    pub fn policy_for(&self, name: &str) -> &Policy {
        self.routes
            .get(name)
            .map_or(&self.defaults.policy, |r| &r.policy)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    pub fn providers(&self) -> &[ProviderEntry] {
        &self.providers
    }

    pub fn resolve(&self, model: &str) -> Result<Resolved<'_>, RouteError> {
        if let Some(r) = self.routes.get(model) {
            return Ok(Resolved {
                targets: r.targets.clone(),
                route: Some(r),
                policy: &r.policy,
                caps: &r.caps,
            });
        }
        if let Some((prov, upstream)) = model.split_once('/')
            && let Some(p) = self.providers.iter().find(|p| p.name == prov)
        {
            return Ok(self.single(&p.name, upstream));
        }
        if let Some(p) = self.by_pattern(model) {
            return Ok(self.single(&p.name, model));
        }
        if let Some(p) = self
            .providers
            .iter()
            .find(|p| p.models.iter().any(|m| m == model))
        {
            return Ok(self.single(&p.name, model));
        }
        // With nothing but local models configured (a fresh gateway), they answer every name.
        if !model.contains('/')
            && let Some(local) = self
                .providers
                .iter()
                .find(|p| p.kind == ProviderKind::Local)
            && self.providers.iter().all(|p| p.kind == ProviderKind::Local)
        {
            return Ok(self.single(&local.name, model));
        }
        match model.split_once('/') {
            Some((prov, _)) if !prov.is_empty() => Err(RouteError::UnknownProvider(
                model.to_string(),
                prov.to_string(),
            )),
            _ => Err(RouteError::UnknownModel(model.to_string())),
        }
    }

    /// The default patterns: a well-known model family goes to the first provider of its kind.
    fn by_pattern(&self, model: &str) -> Option<&ProviderEntry> {
        let first_of = |f: &dyn Fn(ProviderKind) -> bool| self.providers.iter().find(|p| f(p.kind));
        let openai = [
            "gpt-",
            "o1",
            "o3",
            "o4",
            "chatgpt-",
            "text-embedding-",
            "davinci",
            "babbage",
        ];
        if openai.iter().any(|p| model.starts_with(p)) {
            return first_of(&|k| k == ProviderKind::OpenAi)
                .or_else(|| first_of(&|k| k == ProviderKind::AzureOpenAi));
        }
        if model.starts_with("claude-") {
            return first_of(&|k| k == ProviderKind::Anthropic);
        }
        if model.starts_with("gemini-")
            || model.starts_with("text-embedding-004")
            || model.starts_with("gemma-")
        {
            return first_of(&|k| k == ProviderKind::Gemini);
        }
        first_of(&|k| match k {
            ProviderKind::Compatible(v) => v.model_prefixes.iter().any(|p| model.starts_with(p)),
            _ => false,
        })
    }
}

impl RoutingTable {
    fn single(&self, provider: &str, model: &str) -> Resolved<'_> {
        Resolved {
            targets: vec![Target::new(provider, model)],
            route: None,
            policy: &self.defaults.policy,
            caps: &self.defaults.caps,
        }
    }
}

#[cfg(test)]
mod tests;
