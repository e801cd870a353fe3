//! What a model can serve, from the catalogue, and what a request needs of it. A fallback target
//! is only used when it can serve the request; the primary is always tried (the consumer chose it).

use serde::{Deserialize, Serialize};

/// A model's capabilities. An absent field is unknown and assumed available, except `prefill`
/// (continuing an assistant message), which must be declared: guessing wrong corrupts answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<bool>,
    /// Input tokens the model accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

/// What a request uses, computed once by the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub images: bool,
    pub json_schema: bool,
    pub est_input_tokens: u64,
}

impl Capabilities {
    /// Why this model cannot serve the request, if it cannot.
    pub fn unfit(&self, n: &Needs) -> Option<&'static str> {
        if n.tools && self.tools == Some(false) {
            return Some("does not support tools");
        }
        if n.images && self.vision == Some(false) {
            return Some("does not accept images");
        }
        if n.json_schema && self.json_schema == Some(false) {
            return Some("does not support JSON schema output");
        }
        if let Some(w) = self.context_window
            && n.est_input_tokens > w
        {
            return Some("context window too small for the request");
        }
        None
    }

    pub fn accepts_prefill(&self) -> bool {
        self.prefill == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_capabilities_serve_everything_but_prefill() {
        let c = Capabilities::default();
        let n = Needs {
            tools: true,
            images: true,
            json_schema: true,
            est_input_tokens: 1_000_000,
        };
        assert_eq!(c.unfit(&n), None);
        assert!(!c.accepts_prefill());
    }

    #[test]
    fn declared_limits_refuse_what_they_cannot_serve() {
        let c = Capabilities {
            tools: Some(false),
            context_window: Some(8_000),
            ..Default::default()
        };
        let tools = Needs {
            tools: true,
            ..Default::default()
        };
        let long = Needs {
            est_input_tokens: 9_000,
            ..Default::default()
        };
        let fits = Needs {
            est_input_tokens: 8_000,
            ..Default::default()
        };
        assert!(c.unfit(&tools).is_some());
        assert!(c.unfit(&long).is_some());
        assert_eq!(c.unfit(&fits), None);
    }
}
