//! What the fault and attempt suites share: a client and one chat request per vendor.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use testkit::{Emulator, Vendor};

pub const VENDORS: [Vendor; 4] = [
    Vendor::Openai,
    Vendor::Azure,
    Vendor::Anthropic,
    Vendor::Gemini,
];

/// A plain client. reqwest is built without a TLS crypto provider, so one is installed first
/// (an `Err` only means another test already did).
pub fn http() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder().build()?)
}

/// A chat request in `vendor`'s wire format, with its key; `prefill` ends it with an assistant
/// turn. OpenAI streams ask for usage.
pub fn chat(
    http: &reqwest::Client,
    em: &Emulator,
    vendor: Vendor,
    stream: bool,
    prefill: bool,
) -> reqwest::RequestBuilder {
    let base = em.url();
    let mut openai =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]});
    if prefill {
        push(
            &mut openai["messages"],
            json!({"role": "assistant", "content": "Sure,"}),
        );
    }
    if stream {
        openai["stream"] = json!(true);
        openai["stream_options"] = json!({"include_usage": true});
    }
    match vendor {
        Vendor::Openai => http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth("test-key")
            .json(&openai),
        Vendor::Azure => http
            .post(format!(
                "{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
            ))
            .header("api-key", "test-key")
            .json(&openai),
        Vendor::Anthropic => {
            let mut body = json!({"model": "claude-test", "max_tokens": 50, "stream": stream,
                "messages": [{"role": "user", "content": "hello there"}]});
            if prefill {
                push(
                    &mut body["messages"],
                    json!({"role": "assistant", "content": "Sure,"}),
                );
            }
            http.post(format!("{base}/v1/messages"))
                .header("x-api-key", "test-key")
                .header("anthropic-version", "2023-06-01")
                .json(&body)
        }
        Vendor::Gemini => {
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            let mut body =
                json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
            if prefill {
                push(
                    &mut body["contents"],
                    json!({"role": "model", "parts": [{"text": "Sure,"}]}),
                );
            }
            http.post(format!("{base}/v1beta/models/gemini-2.5-flash:{method}"))
                .header("x-goog-api-key", "test-key")
                .json(&body)
        }
    }
}

fn push(list: &mut Value, item: Value) {
    if let Some(a) = list.as_array_mut() {
        a.push(item);
    }
}

/// Status and body text, bounded so a fault that hangs fails the test instead.
pub async fn send(req: reqwest::RequestBuilder) -> Result<(u16, String)> {
    let resp = tokio::time::timeout(Duration::from_secs(2), req.send()).await??;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}
