//! Stage settings of a gateway API (part of [`crate::api::ApiSettings`]): the PII guard,
//! moderation, the pre/post hooks and a function backend. Each stage is off unless its field is
//! set, so the data plane's check for a disabled stage is one field test on the snapshot.
//! Unknown fields are refused; [`validate`] checks what serde cannot.

use serde::{Deserialize, Serialize};

/// The PII guard: which kinds are looked for in prompts, and whether they are redacted before
/// the prompt leaves the gateway (otherwise only counted, in `x-gateway-pii`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiSettings {
    /// Replace each finding with `[REDACTED_<KIND>]` (default); `false` only detects.
    #[serde(default = "yes")]
    pub redact: bool,
    /// Kinds to look for (default: all): `email`, `phone`, `card`, `national_id`, `secret`.
    #[serde(default = "PiiKind::all")]
    pub kinds: Vec<PiiKind>,
}

impl Default for PiiSettings {
    fn default() -> Self {
        PiiSettings {
            redact: true,
            kinds: PiiKind::all(),
        }
    }
}

/// A kind of personal data or secret the PII guard finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    /// A payment-card number that passes the Luhn check.
    Card,
    /// US social security numbers and IBANs (checksum-verified).
    NationalId,
    /// API-key-like secrets (`sk-…`, `AKIA…`, `ghp_…`, long tokens after "key"/"token").
    Secret,
}

impl PiiKind {
    pub fn all() -> Vec<PiiKind> {
        vec![
            PiiKind::Email,
            PiiKind::Phone,
            PiiKind::Card,
            PiiKind::NationalId,
            PiiKind::Secret,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::NationalId => "national_id",
            PiiKind::Secret => "secret",
        }
    }

    /// What a finding is replaced with.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[REDACTED_EMAIL]",
            PiiKind::Phone => "[REDACTED_PHONE]",
            PiiKind::Card => "[REDACTED_CARD]",
            PiiKind::NationalId => "[REDACTED_NATIONAL_ID]",
            PiiKind::Secret => "[REDACTED_SECRET]",
        }
    }
}

/// Which classifier decides SAFE or UNSAFE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Classifier {
    /// Built-in word rules per category: no key, no network, microseconds.
    Rules,
    /// OpenAI's moderation API through a configured `openai` provider.
    Openai {
        provider: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// Any configured chat model with a Llama-Guard-style classification prompt (the built-in
    /// one unless `prompt` is set; it must contain `{{content}}`).
    Llm {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    /// No key and no prompt: the text's similarity to built-in examples of each category, with
    /// any embedding model (`local/minilm` runs on the gateway's CPU). A category's score is
    /// the highest cosine similarity; `threshold` applies to it.
    Embedding { model: String },
}

/// What an UNSAFE verdict does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationMode {
    /// 400 `content_policy_violation` before any token is spent.
    #[default]
    Block,
    /// The request goes on, marked (`x-gateway-moderation: flagged; categories=…`).
    Flag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationSettings {
    pub classifier: Classifier,
    /// Categories that count (empty: every category the classifier reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Score at or above which a category counts (classifiers with scores), 0 < t ≤ 1.
    #[serde(default = "half")]
    pub threshold: f64,
    #[serde(default)]
    pub mode: ModerationMode,
    /// A classifier that fails or times out fails the request (503) instead of letting it on.
    #[serde(default)]
    pub fail_closed: bool,
    /// Check prompts (default).
    #[serde(default = "yes")]
    pub input: bool,
    /// Also check the model's answer (streams in windows as they flow).
    #[serde(default)]
    pub output: bool,
    /// How long the classifier may take, in milliseconds (default 2000).
    #[serde(default = "two_seconds")]
    pub timeout_ms: u64,
}

fn yes() -> bool {
    true
}
fn half() -> f64 {
    0.5
}
fn two_seconds() -> u64 {
    2000
}

/// Retrieval from a knowledge base (the RAG stage): which base, how many chunks, how similar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagSettings {
    /// The knowledge base's name (several APIs may share one).
    pub knowledge_base: String,
    /// Chunks injected at most (1-50, default 5).
    #[serde(default = "five")]
    pub top_k: usize,
    /// Cosine similarity below which a chunk is never injected (-1 to 1, default 0.2).
    #[serde(default = "fifth")]
    pub min_score: f32,
    /// `hybrid` (vector + full text, default), `vector` or `text`.
    #[serde(default = "hybrid")]
    pub mode: String,
    /// A failing retrieval (embedder down) fails the request (503) instead of going on without context.
    #[serde(default)]
    pub fail_closed: bool,
}

fn five() -> usize {
    5
}
fn fifth() -> f32 {
    0.2
}
fn hybrid() -> String {
    "hybrid".into()
}

impl RagSettings {
    fn validate(&self) -> Result<(), StageError> {
        if !valid_function_name(&self.knowledge_base) {
            return Err(StageError::Rag(
                "knowledge_base: 1-64 letters, digits, '-' or '_'",
            ));
        }
        if !(1..=50).contains(&self.top_k) {
            return Err(StageError::Rag("top_k: between 1 and 50"));
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return Err(StageError::Rag("min_score: between -1 and 1"));
        }
        if !matches!(self.mode.as_str(), "hybrid" | "vector" | "text") {
            return Err(StageError::Rag("mode: hybrid, vector or text"));
        }
        Ok(())
    }
}

/// Why stage settings were refused (the path inside `settings` first).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StageError {
    #[error("moderation.threshold: must be greater than 0 and at most 1")]
    Threshold,
    #[error("moderation.timeout_ms: must be between 1 and 30000")]
    Timeout,
    #[error("moderation.classifier.{0}: must not be empty")]
    Empty(&'static str),
    #[error("moderation.classifier.prompt: must contain {{{{content}}}}")]
    Prompt,
    #[error("moderation: checks neither input nor output")]
    Nothing,
    #[error("pii.kinds: must name at least one kind")]
    NoKinds,
    #[error("{0}: a function name is 1-64 letters, digits, '-' or '_'")]
    FunctionName(&'static str),
    #[error("rag.{0}")]
    Rag(&'static str),
}

/// A function's name (as in `/admin/functions/{name}`).
pub fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks stage settings beyond their shape.
pub fn validate(
    pii: Option<&PiiSettings>,
    moderation: Option<&ModerationSettings>,
    rag: Option<&RagSettings>,
    hooks: [(&'static str, Option<&str>); 3],
) -> Result<(), StageError> {
    if let Some(r) = rag {
        r.validate()?;
    }
    if let Some(p) = pii
        && p.kinds.is_empty()
    {
        return Err(StageError::NoKinds);
    }
    if let Some(m) = moderation {
        if !(m.threshold > 0.0 && m.threshold <= 1.0) {
            return Err(StageError::Threshold);
        }
        if m.timeout_ms == 0 || m.timeout_ms > 30_000 {
            return Err(StageError::Timeout);
        }
        if !m.input && !m.output {
            return Err(StageError::Nothing);
        }
        match &m.classifier {
            Classifier::Rules => {}
            Classifier::Openai { provider, .. } if provider.trim().is_empty() => {
                return Err(StageError::Empty("provider"));
            }
            Classifier::Openai { .. } => {}
            Classifier::Embedding { model } if model.trim().is_empty() => {
                return Err(StageError::Empty("model"));
            }
            Classifier::Embedding { .. } => {}
            Classifier::Llm { model, prompt } => {
                if model.trim().is_empty() {
                    return Err(StageError::Empty("model"));
                }
                if prompt.as_ref().is_some_and(|p| !p.contains("{{content}}")) {
                    return Err(StageError::Prompt);
                }
            }
        }
    }
    for (field, name) in hooks {
        if let Some(n) = name
            && !valid_function_name(n)
        {
            return Err(StageError::FunctionName(field));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderation(json: &str) -> Result<ModerationSettings, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn moderation_settings_have_safe_defaults_and_refuse_typos() {
        let m = moderation(r#"{"classifier":{"kind":"rules"}}"#).unwrap_or_else(|e| {
            unreachable!("{e}");
        });
        assert_eq!(m.mode, ModerationMode::Block);
        assert!(m.input && !m.output && !m.fail_closed);
        assert_eq!(m.threshold, 0.5);
        assert!(moderation(r#"{"classifier":{"kind":"rules"},"mdoe":"flag"}"#).is_err());
        assert!(moderation(r#"{"classifier":{"kind":"gpt"}}"#).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut m = moderation(r#"{"classifier":{"kind":"llm","model":"m","prompt":"x"}}"#)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let none = [("pre_hook", None), ("post_hook", None), ("function", None)];
        assert_eq!(
            validate(None, Some(&m), None, none),
            Err(StageError::Prompt)
        );
        m.classifier = Classifier::Rules;
        m.threshold = 0.0;
        assert_eq!(
            validate(None, Some(&m), None, none),
            Err(StageError::Threshold)
        );
        assert_eq!(
            validate(
                None,
                None,
                None,
                [
                    ("pre_hook", Some("bad name")),
                    ("post_hook", None),
                    ("function", None)
                ]
            ),
            Err(StageError::FunctionName("pre_hook"))
        );
        let pii = PiiSettings {
            redact: true,
            kinds: vec![],
        };
        assert_eq!(
            validate(Some(&pii), None, None, none),
            Err(StageError::NoKinds)
        );
        let rag: RagSettings = serde_json::from_str(r#"{"knowledge_base":"docs"}"#)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (rag.top_k, rag.min_score, rag.mode.as_str()),
            (5, 0.2, "hybrid")
        );
        assert_eq!(validate(None, None, Some(&rag), none), Ok(()));
        let wide = RagSettings {
            top_k: 51,
            ..rag.clone()
        };
        assert_eq!(
            validate(None, None, Some(&wide), none).map_err(|e| e.to_string()),
            Err("rag.top_k: between 1 and 50".to_string())
        );
        let odd = RagSettings {
            mode: "semantic".into(),
            ..rag
        };
        assert!(validate(None, None, Some(&odd), none).is_err());
    }
}
