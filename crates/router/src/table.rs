//! The routing table: aliases, providers and the default name patterns.

use std::collections::HashMap;

use providers::ProviderKind;
use serde::{Deserialize, Serialize};

use crate::fallback::Fallbacks;

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

/// A public model name (alias) and how it is served.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Tried in order (highest weight first).
    pub targets: Vec<Target>,
    pub fallbacks: Fallbacks,
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
    pub fallbacks: Option<&'a Fallbacks>,
}

#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    routes: HashMap<String, Route>,
    /// Highest priority first; ties keep configuration order.
    providers: Vec<ProviderEntry>,
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
        RoutingTable { routes, providers }
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
                fallbacks: Some(&r.fallbacks),
            });
        }
        if let Some((prov, upstream)) = model.split_once('/')
            && let Some(p) = self.providers.iter().find(|p| p.name == prov)
        {
            return Ok(single(&p.name, upstream));
        }
        if let Some(p) = self.by_pattern(model) {
            return Ok(single(&p.name, model));
        }
        if let Some(p) = self
            .providers
            .iter()
            .find(|p| p.models.iter().any(|m| m == model))
        {
            return Ok(single(&p.name, model));
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

fn single<'a>(provider: &str, model: &str) -> Resolved<'a> {
    Resolved {
        targets: vec![Target {
            provider: provider.to_string(),
            model: model.to_string(),
            weight: 1,
        }],
        fallbacks: None,
    }
}

#[cfg(test)]
mod tests;
