//! Admission: read the body under the size limit, parse it once into the canonical request and
//! refuse what must never reach an upstream.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use wire::openai::{ChatRequest, EmbeddingsRequest, Role};

use crate::error::GatewayError;

/// Fields that would let a consumer choose the upstream, its headers or credentials. A request
/// carrying any of them is refused rather than silently cleaned, so the caller learns at once.
const FORBIDDEN: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "azure_endpoint",
    "azure_ad_token",
    "endpoint",
    "url",
    "headers",
    "extra_headers",
    "custom_llm_provider",
    "aws_access_key_id",
    "aws_secret_access_key",
    "vertex_credentials",
];

pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::BodyTooLarge(limit))
        }
        Err(_) => Err(GatewayError::invalid(
            "The request body could not be read.",
            None,
        )),
    }
}

/// Parses JSON with an error that names the line, column and what was wrong.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::InvalidJson(
            "The request body is empty; expected a JSON object.".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "is not valid JSON"
        } else {
            "does not match the expected shape"
        };
        GatewayError::InvalidJson(format!("The request body {what}: {e}"))
    })
}

fn check_forbidden(map: &Map<String, Value>) -> Result<(), GatewayError> {
    match FORBIDDEN.iter().find(|f| map.contains_key(**f)) {
        Some(f) => Err(GatewayError::ForbiddenField((*f).to_string())),
        None => Ok(()),
    }
}

pub fn validate_chat(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "`model` must be a non-empty string.",
            Some("model"),
        ));
    }
    if req.messages.is_empty() {
        return Err(GatewayError::invalid(
            "`messages` must contain at least one message.",
            Some("messages"),
        ));
    }
    check_forbidden(&req.extra)?;
    if let Some(o) = &req.stream_options {
        check_forbidden(&o.extra)?;
    }
    for (i, m) in req.messages.iter().enumerate() {
        check_forbidden(&m.extra)?;
        let empty = m.content.as_ref().is_none_or(|c| c.is_empty());
        let has_calls = m.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
        if empty && !(m.role == Role::Assistant && has_calls) {
            return Err(GatewayError::invalid(
                format!("messages[{i}] has no content."),
                Some(&format!("messages[{i}].content")),
            ));
        }
        if m.role == Role::Tool && m.tool_call_id.is_none() {
            return Err(GatewayError::invalid(
                format!("messages[{i}] has role `tool` but no `tool_call_id`."),
                Some(&format!("messages[{i}].tool_call_id")),
            ));
        }
    }
    if req.n.is_some_and(|n| n == 0 || n > 128) {
        return Err(GatewayError::invalid(
            "`n` must be between 1 and 128.",
            Some("n"),
        ));
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(GatewayError::invalid(
            "`temperature` must be between 0 and 2.",
            Some("temperature"),
        ));
    }
    Ok(())
}

pub fn validate_embeddings(req: &EmbeddingsRequest) -> Result<(), GatewayError> {
    if req.model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "`model` must be a non-empty string.",
            Some("model"),
        ));
    }
    check_forbidden(&req.extra)?;
    if req.input.is_empty() {
        return Err(GatewayError::invalid(
            "`input` must not be empty.",
            Some("input"),
        ));
    }
    if req
        .input
        .texts()
        .is_some_and(|t| t.iter().any(|s| s.is_empty()))
    {
        return Err(GatewayError::invalid(
            "`input` must not contain empty strings.",
            Some("input"),
        ));
    }
    if let Some(f) = req.encoding_format.as_deref()
        && f != "float"
        && f != "base64"
    {
        return Err(GatewayError::invalid(
            "`encoding_format` must be `float` or `base64`.",
            Some("encoding_format"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<(), GatewayError> {
        let r: ChatRequest = parse(body.as_bytes())?;
        validate_chat(&r)
    }

    #[test]
    fn upstream_choosing_fields_are_refused_anywhere_they_can_hide() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"api_base":"http://evil"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"extra_headers":{"a":"b"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","api_key":"k"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"base_url":"x"}}"#,
        ] {
            assert!(
                matches!(chat(body), Err(GatewayError::ForbiddenField(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn a_tool_schema_may_name_a_property_url() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"url":{"type":"string"}}}}}]}"#;
        assert!(chat(body).is_ok());
    }

    #[test]
    fn malformed_and_empty_requests_get_clear_errors() {
        assert!(
            matches!(chat("{"), Err(GatewayError::InvalidJson(m)) if m.contains("not valid JSON"))
        );
        assert!(
            matches!(chat(r#"{"model":1,"messages":[]}"#), Err(GatewayError::InvalidJson(m)) if m.contains("shape"))
        );
        assert!(
            matches!(chat(r#"{"model":"m","messages":[]}"#), Err(GatewayError::InvalidRequest { param: Some(p), .. }) if p == "messages")
        );
        assert!(matches!(
            chat(r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#),
            Err(GatewayError::InvalidRequest { .. })
        ));
        assert!(matches!(
            chat(r#"{"model":"m","messages":[{"role":"user","content":""}]}"#),
            Err(GatewayError::InvalidRequest { .. })
        ));
        assert!(matches!(chat(""), Err(GatewayError::InvalidJson(_))));
    }

    proptest::proptest! {
        // Whatever bytes arrive, admission answers with a value or an error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse::<ChatRequest>(&body).and_then(|r| validate_chat(&r));
        }
    }
}
