//! A provider as the data plane needs it: kind, resolved base URL, credential, options.
//! Built (and validated) from the store's records or the YAML file by the gateway.

use std::collections::HashMap;
use std::time::Duration;

use wire::secret::Secret;

use crate::vendors::{self, Vendor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    Gemini,
    /// An OpenAI-compatible vendor from the table.
    Compatible(&'static Vendor),
    /// The built-in CPU models; `base_url` is the models directory.
    Local,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "openai" => ProviderKind::OpenAi,
            "azure_openai" | "azure" => ProviderKind::AzureOpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "gemini" | "google" => ProviderKind::Gemini,
            "local" => ProviderKind::Local,
            other => ProviderKind::Compatible(vendors::find(other)?),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::AzureOpenAi => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Compatible(v) => v.kind,
            ProviderKind::Local => "local",
        }
    }

    /// Every kind name an operator may write.
    pub fn all_names() -> Vec<&'static str> {
        let mut v = vec!["openai", "azure_openai", "anthropic", "gemini", "local"];
        v.extend(vendors::VENDORS.iter().map(|v| v.kind));
        v
    }

    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::AzureOpenAi => None,
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Compatible(v) => v.base_url,
            ProviderKind::Local => None,
        }
    }

    pub fn needs_key(self) -> bool {
        match self {
            ProviderKind::Compatible(v) => v.needs_key,
            ProviderKind::Local => false,
            _ => true,
        }
    }

    /// Whether requests go out in the OpenAI wire format (pass-through path).
    pub fn speaks_openai(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi | ProviderKind::Compatible(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Azure: the `api-version` query parameter.
    pub api_version: Option<String>,
    /// Azure: model name → deployment name (a model without an entry uses its own name).
    pub deployments: HashMap<String, String>,
    /// Models this provider serves, for routing names no alias claims.
    pub models: Vec<String>,
    /// Higher wins when several providers list a model.
    pub priority: i64,
    /// Deadline for the whole non-streaming response, or for the first byte of a stream.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown provider kind '{0}' (known: {1})")]
    UnknownKind(String, String),
    #[error("provider '{0}' of kind {1} needs base_url")]
    MissingBaseUrl(String, &'static str),
    #[error(
        "provider '{0}': base_url must be an http(s) URL without credentials, query or fragment"
    )]
    BadBaseUrl(String),
    #[error("provider '{0}' of kind azure_openai needs api_version")]
    MissingApiVersion(String),
    #[error("provider name '{0}' must be 1-64 characters of a-z, 0-9, '-', '_' or '.'")]
    BadName(String),
}

impl ProviderSpec {
    /// Validates and fills defaults. `kind` is the operator's string.
    pub fn build(
        name: &str,
        kind: &str,
        base_url: Option<&str>,
        api_key: Option<Secret>,
    ) -> Result<ProviderSpec, SpecError> {
        validate_name(name)?;
        let kind = ProviderKind::parse(kind).ok_or_else(|| {
            SpecError::UnknownKind(kind.to_string(), ProviderKind::all_names().join(", "))
        })?;
        let base = match base_url.filter(|s| !s.is_empty()) {
            // The local provider's "base URL" is its models directory.
            Some(b) if kind == ProviderKind::Local => b.to_string(),
            None if kind == ProviderKind::Local => {
                models::catalog::default_dir().display().to_string()
            }
            Some(b) => b.trim_end_matches('/').to_string(),
            None => kind
                .default_base_url()
                .ok_or_else(|| SpecError::MissingBaseUrl(name.to_string(), kind.as_str()))?
                .to_string(),
        };
        if kind != ProviderKind::Local {
            check_base_url(name, &base)?;
        }
        Ok(ProviderSpec {
            name: name.to_string(),
            kind,
            base_url: base,
            api_key: api_key.filter(|k| !k.is_empty()),
            api_version: None,
            deployments: HashMap::new(),
            models: Vec::new(),
            priority: 0,
            timeout: Duration::from_secs(600),
        })
    }

    pub fn deployment_for<'a>(&'a self, model: &'a str) -> &'a str {
        self.deployments.get(model).map_or(model, String::as_str)
    }
}

pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_string()))
    }
}

fn check_base_url(name: &str, base: &str) -> Result<(), SpecError> {
    let bad = || SpecError::BadBaseUrl(name.to_string());
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || base.contains('?') || base.contains('#') {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_with_defaults() {
        let s = ProviderSpec::build("g", "groq", None, None).ok();
        assert_eq!(
            s.map(|s| s.base_url),
            Some("https://api.groq.com/openai/v1".to_string())
        );
        assert!(matches!(
            ProviderSpec::build("x", "vllm", None, None),
            Err(SpecError::MissingBaseUrl(..))
        ));
        assert!(matches!(
            ProviderSpec::build("x", "martian", None, None),
            Err(SpecError::UnknownKind(..))
        ));
    }

    #[test]
    fn base_urls_with_credentials_or_queries_are_refused() {
        for b in [
            "ftp://x",
            "http://user:pw@host/v1",
            "http://h/v1?x=1",
            "http:///v1",
        ] {
            assert!(
                ProviderSpec::build("x", "openai_compatible", Some(b), None).is_err(),
                "{b}"
            );
        }
        assert!(
            ProviderSpec::build(
                "x",
                "openai_compatible",
                Some("http://127.0.0.1:8000/v1/"),
                None
            )
            .is_ok()
        );
    }
}
