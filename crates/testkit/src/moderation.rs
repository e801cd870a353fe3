//! OpenAI's `POST /v1/moderations`, in its exact response shape: one result per input with
//! `flagged`, `categories`, `category_scores` and `category_applied_input_types` for all
//! thirteen categories. Deterministic: a category scores 0.97 when the input contains its
//! trigger phrase ([`TRIGGERS`]), 0.0001 otherwise.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::emulator::{Shared, Vendor};

pub const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Phrases that make the emulator flag a category.
pub const TRIGGERS: [(&str, &str); 3] = [
    ("kill you", "violence"),
    ("build a bomb", "illicit/violent"),
    ("worthless trash", "harassment"),
];

fn texts(input: &Value) -> Vec<String> {
    match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                other => other["text"].as_str().map(str::to_string),
            })
            .collect(),
        _ => vec![],
    }
}

fn result(text: &str) -> Value {
    let lower = text.to_lowercase();
    let (mut cats, mut scores, mut types) = (Map::new(), Map::new(), Map::new());
    let mut flagged = false;
    for c in CATEGORIES {
        let hit = TRIGGERS
            .iter()
            .any(|(p, cat)| *cat == c && lower.contains(p));
        flagged |= hit;
        cats.insert(c.into(), Value::Bool(hit));
        scores.insert(c.into(), json!(if hit { 0.97 } else { 0.0001 }));
        types.insert(c.into(), json!(["text"]));
    }
    json!({
        "flagged": flagged,
        "categories": cats,
        "category_scores": scores,
        "category_applied_input_types": types,
    })
}

pub async fn openai_moderations(
    State(s): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !crate::openai::bearer_ok(&s, &headers) {
        return crate::openai::auth_error();
    }
    let _attempt = s.record(Vendor::Openai, uri.path(), &headers, &body);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = req["model"].as_str().unwrap_or("omni-moderation-latest");
    let results: Vec<Value> = texts(&req["input"]).iter().map(|t| result(t)).collect();
    Json(json!({
        "id": format!("modr-{:x}", body.len()),
        "model": model,
        "results": results,
    }))
    .into_response()
}
