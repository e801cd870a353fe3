//! Embedding post-processing shared by every provider.

use base64::Engine;
use serde_json::Value;
use wire::openai::EmbeddingsResponse;

/// Re-encodes float arrays as base64 little-endian f32 — what `encoding_format: "base64"`
/// promises (the OpenAI SDKs ask for it by default) — when the upstream returned floats.
pub fn to_base64(resp: &mut EmbeddingsResponse) {
    for e in &mut resp.data {
        if let Value::Array(xs) = &e.embedding {
            let bytes: Vec<u8> = xs
                .iter()
                .filter_map(Value::as_f64)
                .flat_map(|x| (x as f32).to_le_bytes())
                .collect();
            e.embedding = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
}
