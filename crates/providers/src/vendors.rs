//! OpenAI-compatible vendors are data, not code: a row each with the kind name operators write,
//! the default base URL (ending in the API version, e.g. `/v1`) and whether a key is required.

#[derive(Debug, PartialEq, Eq)]
pub struct Vendor {
    /// The `kind` an operator writes in config.
    pub kind: &'static str,
    pub display: &'static str,
    /// `None`: the operator must give `base_url`.
    pub base_url: Option<&'static str>,
    pub needs_key: bool,
    /// Default routing: model names starting with one of these go to this vendor when no alias
    /// or explicit route claims them.
    pub model_prefixes: &'static [&'static str],
}

pub const VENDORS: &[Vendor] = &[
    Vendor {
        kind: "groq",
        display: "Groq",
        base_url: Some("https://api.groq.com/openai/v1"),
        needs_key: true,
        model_prefixes: &[],
    },
    Vendor {
        kind: "mistral",
        display: "Mistral",
        base_url: Some("https://api.mistral.ai/v1"),
        needs_key: true,
        model_prefixes: &[
            "mistral-",
            "codestral-",
            "ministral-",
            "pixtral-",
            "magistral-",
        ],
    },
    Vendor {
        kind: "together",
        display: "Together AI",
        base_url: Some("https://api.together.xyz/v1"),
        needs_key: true,
        model_prefixes: &[],
    },
    Vendor {
        kind: "deepseek",
        display: "DeepSeek",
        base_url: Some("https://api.deepseek.com/v1"),
        needs_key: true,
        model_prefixes: &["deepseek-"],
    },
    Vendor {
        kind: "openrouter",
        display: "OpenRouter",
        base_url: Some("https://openrouter.ai/api/v1"),
        needs_key: true,
        model_prefixes: &[],
    },
    Vendor {
        kind: "fireworks",
        display: "Fireworks AI",
        base_url: Some("https://api.fireworks.ai/inference/v1"),
        needs_key: true,
        model_prefixes: &["accounts/fireworks/"],
    },
    Vendor {
        kind: "cerebras",
        display: "Cerebras",
        base_url: Some("https://api.cerebras.ai/v1"),
        needs_key: true,
        model_prefixes: &[],
    },
    Vendor {
        kind: "xai",
        display: "xAI",
        base_url: Some("https://api.x.ai/v1"),
        needs_key: true,
        model_prefixes: &["grok-"],
    },
    Vendor {
        kind: "cohere",
        display: "Cohere (compatibility API)",
        base_url: Some("https://api.cohere.ai/compatibility/v1"),
        needs_key: true,
        model_prefixes: &["command-", "command", "embed-"],
    },
    Vendor {
        kind: "ollama",
        display: "Ollama",
        base_url: Some("http://127.0.0.1:11434/v1"),
        needs_key: false,
        model_prefixes: &[],
    },
    Vendor {
        kind: "vllm",
        display: "vLLM",
        base_url: None,
        needs_key: false,
        model_prefixes: &[],
    },
    Vendor {
        kind: "lmstudio",
        display: "LM Studio",
        base_url: Some("http://127.0.0.1:1234/v1"),
        needs_key: false,
        model_prefixes: &[],
    },
    Vendor {
        kind: "openai_compatible",
        display: "Any OpenAI-compatible server",
        base_url: None,
        needs_key: false,
        model_prefixes: &[],
    },
];

pub fn find(kind: &str) -> Option<&'static Vendor> {
    VENDORS.iter().find(|v| v.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_urls_are_versioned_roots() {
        for (i, v) in VENDORS.iter().enumerate() {
            assert!(
                VENDORS[i + 1..].iter().all(|w| w.kind != v.kind),
                "{} twice",
                v.kind
            );
            if let Some(u) = v.base_url {
                assert!(u.starts_with("http") && !u.ends_with('/'), "{u}");
            }
        }
        assert_eq!(find("groq").map(|v| v.display), Some("Groq"));
        assert!(find("nope").is_none());
    }
}
