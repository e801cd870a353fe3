//! A gateway API as the edge sees it: its slug (the first path segment, `default` for the bare
//! `/v1/...` paths), how consumers authenticate, and its IP rules. Stage settings of later
//! stages join [`ApiSettings`]; unknown fields are refused so a typo never silently disables a
//! rule.

use serde::{Deserialize, Serialize};

use crate::ip::IpRules;
use crate::stages::{ModerationSettings, PiiSettings};

/// The API the bare `/v1/...` paths serve.
pub const DEFAULT_API: &str = "default";

/// How consumers of an API prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credential: anyone who passes the IP rules.
    Public,
    /// A gateway key (`Authorization: Bearer gw_…` or `x-api-key`).
    Keys,
    /// The consumer's own JWT, verified against the API's JWKS.
    Jwt,
    /// Either.
    KeysOrJwt,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Public => "public",
            AuthMode::Keys => "keys",
            AuthMode::Jwt => "jwt",
            AuthMode::KeysOrJwt => "keys_or_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<AuthMode> {
        Some(match s {
            "public" => AuthMode::Public,
            "keys" => AuthMode::Keys,
            "jwt" => AuthMode::Jwt,
            "keys_or_jwt" => AuthMode::KeysOrJwt,
            _ => return None,
        })
    }

    pub fn accepts_keys(self) -> bool {
        matches!(self, AuthMode::Keys | AuthMode::KeysOrJwt)
    }

    pub fn accepts_jwt(self) -> bool {
        matches!(self, AuthMode::Jwt | AuthMode::KeysOrJwt)
    }
}

/// What an API's stored `settings` object holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Checked before any authentication.
    #[serde(default, skip_serializing_if = "IpRules::is_empty")]
    pub ip: IpRules,
    /// Required when the auth mode accepts JWTs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<crate::jwt::JwtConfig>,
    /// Limits on the whole API, all consumers together.
    #[serde(default, skip_serializing_if = "ApiLimits::is_empty")]
    pub limits: ApiLimits,
    /// What the request log keeps of this API's requests beyond the metadata.
    #[serde(default, skip_serializing_if = "LogSettings::is_default")]
    pub log: LogSettings,
    /// The PII guard on prompts (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiSettings>,
    /// Input/output moderation (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationSettings>,
    /// Retrieval from a knowledge base, injected before the question (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<crate::stages::RagSettings>,
    /// A function called before the LLM stage (may rewrite or reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_hook: Option<String>,
    /// A function told about each response once it starts (metadata only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_hook: Option<String>,
    /// A function that replaces the LLM stage (a function-backed API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// Prompt and response bodies in the request log: off unless the operator opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub bodies: bool,
    /// Each body is cut to this many bytes.
    #[serde(default = "LogSettings::default_max")]
    pub max_body_bytes: usize,
}

impl LogSettings {
    fn default_max() -> usize {
        16 * 1024
    }

    pub fn is_default(&self) -> bool {
        *self == LogSettings::default()
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            bodies: false,
            max_body_bytes: Self::default_max(),
        }
    }
}

impl ApiSettings {
    /// The functions these settings name, with the field naming each.
    pub fn functions(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("pre_hook", self.pre_hook.as_deref()),
            ("post_hook", self.post_hook.as_deref()),
            ("function", self.function.as_deref()),
        ]
        .into_iter()
        .filter_map(|(f, n)| n.map(|n| (f, n)))
    }
}

/// Requests and tokens per minute across every consumer of an API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

impl ApiLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("auth: must be one of public, keys, jwt, keys_or_jwt")]
    UnknownAuth,
    #[error("limits: rpm and tpm must be between 1 and 60000000 when set")]
    Limits,
    #[error("settings.jwt: required when auth is {0}")]
    MissingJwt(&'static str),
    #[error("settings.jwt.{0}")]
    Jwt(String),
    #[error("settings.log.max_body_bytes: must be between 1 and 1048576")]
    LogBodies,
    #[error("settings.{0}")]
    Stage(#[from] crate::stages::StageError),
}

/// A validated gateway API.
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    pub slug: String,
    pub auth: AuthMode,
    pub settings: ApiSettings,
    pub enabled: bool,
}

impl Api {
    /// An enabled API with no IP rules.
    pub fn new(slug: impl Into<String>, auth: AuthMode) -> Api {
        Api {
            slug: slug.into(),
            auth,
            settings: ApiSettings::default(),
            enabled: true,
        }
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |v: Option<u64>| v.is_some_and(|n| n == 0 || n > 60_000_000);
        if bad(self.settings.limits.rpm) || bad(self.settings.limits.tpm) {
            return Err(ApiError::Limits);
        }
        if !(1..=1_048_576).contains(&self.settings.log.max_body_bytes) {
            return Err(ApiError::LogBodies);
        }
        let st = &self.settings;
        crate::stages::validate(
            st.pii.as_ref(),
            st.moderation.as_ref(),
            st.rag.as_ref(),
            [
                ("pre_hook", st.pre_hook.as_deref()),
                ("post_hook", st.post_hook.as_deref()),
                ("function", st.function.as_deref()),
            ],
        )?;
        if self.auth.accepts_jwt() {
            match &self.settings.jwt {
                None => return Err(ApiError::MissingJwt(self.auth.as_str())),
                Some(j) => j.validate().map_err(|e| ApiError::Jwt(e.to_string()))?,
            }
        }
        Ok(())
    }
}
