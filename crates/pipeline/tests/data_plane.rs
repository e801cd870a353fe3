//! The data plane over real HTTP on loopback, against the provider emulators.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::time::Duration;

use access::api::{Api, AuthMode, DEFAULT_API};
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Fallbacks, Route, Target};
use serde_json::{Value, json};
use testkit::Emulator;
use testkit::emulator::{Fault, FaultRule, Vendor};
use wire::secret::Secret;

struct Env {
    emu: Emulator,
    url: String,
    client: reqwest::Client,
}

fn spec(name: &str, kind: &str, base: String, key: &str) -> ProviderSpec {
    let mut s = ProviderSpec::build(name, kind, Some(&base), Some(Secret::new(key)))
        .unwrap_or_else(|e| panic!("{e}"));
    if kind == "azure_openai" {
        s.api_version = Some("2024-10-21".into());
    }
    s.timeout = Duration::from_secs(5);
    s
}

async fn start_with(max_body: usize, extra: Vec<ProviderSpec>) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let e = emu.url();
    let mut specs = vec![
        spec("openai", "openai", format!("{e}/v1"), "test-key"),
        spec("azure", "azure_openai", e.clone(), "test-key"),
        spec("claude", "anthropic", e.clone(), "test-key"),
        spec("gem", "gemini", e.clone(), "test-key"),
        spec("groq", "groq", format!("{e}/v1"), "test-key"),
        spec("badkey", "openai", format!("{e}/v1"), "sk-wrong-secret-123"),
    ];
    specs.extend(extra);
    let mut smart = Route::new("smart", vec![Target::new("claude", "claude-sonnet-4-5")]);
    smart.fallbacks = Fallbacks {
        any: vec!["gpt-4o".into()],
        ..Default::default()
    };
    let routes = vec![
        smart,
        Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")]),
    ];
    let http = providers::http::client(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::new(Limits {
        max_body_bytes: max_body,
        ..Default::default()
    });
    let mut snap = Snapshot::build(specs, routes, &http);
    // Auth has its own suite (tests/edge_auth.rs); these are about the data plane itself.
    snap.publish(Api::new(DEFAULT_API, AuthMode::Public));
    gw.swap(snap);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, pipeline::app(gw)).await;
    });
    Env {
        emu,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

async fn start() -> Env {
    start_with(1024 * 1024, vec![]).await
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap_or(Value::Null)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn every_provider_kind_answers_in_openai_format() {
    let env = start().await;
    for model in [
        "gpt-4o",
        "azure/gpt-4o",
        "claude-sonnet-4-5",
        "gem/gemini-2.0-flash",
        "groq/llama-3.1-8b",
    ] {
        let r = env.post("/v1/chat/completions", hello(model)).await;
        assert_eq!(r.status(), 200, "{model}");
        assert!(r.headers().contains_key("x-request-id"));
        assert!(r.headers().contains_key("x-gateway-provider"));
        let v = json_of(r).await;
        assert_eq!(
            v["choices"][0]["message"]["content"], "Echo: hello there",
            "{model}: {v}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{model}");
        assert!(
            v["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
            "{model}: {v}"
        );
    }
}

#[tokio::test]
async fn streams_from_every_kind_concatenate_to_the_full_answer() {
    let env = start().await;
    for model in [
        "gpt-4o",
        "azure/gpt-4o",
        "claude-sonnet-4-5",
        "gem/gemini-2.0-flash",
    ] {
        let mut body = hello(model);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = env.post("/v1/chat/completions", body).await;
        assert_eq!(r.status(), 200, "{model}");
        let text = r.text().await.unwrap_or_default();
        let data = sse_data(&text);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{model}: {text}"
        );
        let chunks: Vec<Value> = data
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Echo: hello there", "{model}");
        let last = chunks.last().cloned().unwrap_or_default();
        assert!(
            last["usage"]["completion_tokens"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{model}: {last}"
        );
    }
}

#[tokio::test]
async fn usage_is_not_streamed_unless_asked_for_but_the_upstream_is_still_asked() {
    let env = start().await;
    let mut body = hello("gpt-4o");
    body["stream"] = json!(true);
    let text = env
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !sse_data(&text)
            .iter()
            .any(|d| d.contains("\"prompt_tokens\"")),
        "{text}"
    );
    let upstream = env.emu.last_request().map(|r| r.body).unwrap_or_default();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn unknown_fields_pass_through_and_the_consumer_credential_does_not() {
    let env = start().await;
    let mut body = hello("gpt-4o");
    body["logprobs"] = json!(true);
    body["prompt_cache_key"] = json!("k1");
    let r = env
        .client
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth("consumer-secret")
        .header("x-custom", "1")
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    // Unknown response fields survive too, as does cached-token usage.
    assert_eq!(v["system_fingerprint"], "fp_emulator");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    let rec = env
        .emu
        .last_request()
        .unwrap_or_else(|| panic!("no upstream request"));
    assert_eq!(rec.body["logprobs"], true);
    let auth: Vec<&String> = rec
        .headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(auth, vec!["Bearer test-key"]);
    assert!(
        !rec.headers
            .iter()
            .any(|(k, v)| k == "x-custom" || v.contains("consumer-secret"))
    );
}

#[tokio::test]
async fn a_provider_429_reaches_the_consumer_as_a_rate_limit_with_retry_after() {
    let env = start().await;
    env.emu.push_fault(FaultRule {
        fault: Fault::Status {
            status: 429,
            retry_after: Some(7),
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        },
        model: Some("gpt-4o".into()),
        vendor: None,
        times: 1,
        for_ms: None,
    });
    let r = env.post("/v1/chat/completions", hello("gpt-4o")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn a_failing_target_falls_back_and_says_why() {
    let env = start().await;
    env.emu.push_fault(FaultRule {
        fault: Fault::Status {
            status: 529,
            retry_after: None,
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        },
        model: Some("claude-sonnet-4-5".into()),
        vendor: Some(Vendor::Anthropic),
        // The retry on the same target fails too.
        times: 2,
        for_ms: None,
    });
    let r = env.post("/v1/chat/completions", hello("smart")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-gateway-fallback-reason")
            .and_then(|v| v.to_str().ok()),
        Some("server_error")
    );
    assert_eq!(
        r.headers()
            .get("x-gateway-provider")
            .and_then(|v| v.to_str().ok()),
        Some("openai")
    );
    assert_eq!(
        r.headers()
            .get("x-gateway-model")
            .and_then(|v| v.to_str().ok()),
        Some("gpt-4o")
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_still_falls_back() {
    let env = start().await;
    env.emu.push_fault(FaultRule {
        fault: Fault::CutMidStream { after_events: 0 },
        model: Some("claude-sonnet-4-5".into()),
        vendor: None,
        times: 2,
        for_ms: None,
    });
    let mut body = hello("smart");
    body["stream"] = json!(true);
    let r = env.post("/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200);
    // A connection dropped before any byte reads as a connect error; either way it fell back.
    let reason = r
        .headers()
        .get("x-gateway-fallback-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert!(
        matches!(reason.as_deref(), Some("stream_broken" | "connect_error")),
        "{reason:?}"
    );
    assert_eq!(
        r.headers()
            .get("x-gateway-provider")
            .and_then(|v| v.to_str().ok()),
        Some("openai")
    );
    let text = r.text().await.unwrap_or_default();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_in_an_error_not_done() {
    let env = start().await;
    for (model, vendor) in [
        ("gpt-4o", Vendor::Openai),
        ("claude-sonnet-4-5", Vendor::Anthropic),
        ("gem/gemini-2.0-flash", Vendor::Gemini),
    ] {
        let upstream = model.rsplit('/').next().unwrap_or(model).to_string();
        env.emu.push_fault(FaultRule {
            fault: Fault::CutMidStream { after_events: 3 },
            model: Some(upstream),
            vendor: Some(vendor),
            times: 1,
            for_ms: None,
        });
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "one two three four five six seven"}]});
        body["stream"] = json!(true);
        let text = env
            .post("/v1/chat/completions", body)
            .await
            .text()
            .await
            .unwrap_or_default();
        let data = sse_data(&text);
        assert!(!data.iter().any(|d| d == "[DONE]"), "{model}: {text}");
        let last: Value = data
            .last()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        assert_eq!(
            last["error"]["code"], "upstream_stream_broken",
            "{model}: {text}"
        );
    }
}

#[tokio::test]
async fn a_malformed_upstream_chunk_is_an_error_not_garbage() {
    let env = start().await;
    env.emu.fail_next(Fault::MalformedChunk { after_events: 2 });
    let mut body = hello("gpt-4o");
    body["stream"] = json!(true);
    let text = env
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !text.contains(r#""id": "broken""#),
        "the malformed bytes reached the consumer: {text}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn a_rejected_provider_key_is_a_gateway_error_that_hides_the_key() {
    let env = start().await;
    let r = env
        .post("/v1/chat/completions", hello("badkey/gpt-4o"))
        .await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("upstream_auth_failed"), "{text}");
    assert!(!text.contains("sk-wrong"), "{text}");
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_errors() {
    let env = start().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"model": "gpt-4o", "messages": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "gpt-4o", "messages": "hi"}),
            400,
            "invalid_json",
        ),
        (
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}),
            400,
            "forbidden_field",
        ),
    ];
    for (body, status, code) in cases {
        let r = env.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        assert!(r.headers().contains_key("x-request-id"));
        assert_eq!(json_of(r).await["error"]["code"], code, "{body}");
    }
    let r = env
        .client
        .post(format!("{}/v1/chat/completions", env.url))
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let env = start_with(1000, vec![]).await;
    let big = "x".repeat(5000);
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": big}]}),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r).await["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn tool_calls_translate_for_every_kind() {
    let env = start().await;
    for model in ["gpt-4o", "claude-sonnet-4-5", "gem/gemini-2.0-flash"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "weather in Paris"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}]});
        let v = json_of(env.post("/v1/chat/completions", body).await).await;
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather", "{model}: {v}");
        let args: Value = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        assert_eq!(args["input"], "weather in Paris", "{model}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{model}");
    }
}

#[tokio::test]
async fn anthropic_ingress_is_served_by_any_provider() {
    let env = start().await;
    for model in ["claude-sonnet-4-5", "gpt-4o", "gem/gemini-2.0-flash"] {
        let body = json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hello there"}]});
        let r = env.post("/v1/messages", body.clone()).await;
        assert_eq!(r.status(), 200, "{model}");
        let v = json_of(r).await;
        assert_eq!(v["type"], "message", "{model}: {v}");
        assert_eq!(v["content"][0]["text"], "Echo: hello there", "{model}");
        assert_eq!(v["stop_reason"], "end_turn", "{model}");

        let mut sbody = body;
        sbody["stream"] = json!(true);
        let text = env
            .post("/v1/messages", sbody)
            .await
            .text()
            .await
            .unwrap_or_default();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(kinds.first(), Some(&"message_start"), "{model}: {text}");
        assert_eq!(kinds.last(), Some(&"message_stop"), "{model}: {text}");
        assert!(
            kinds.contains(&"content_block_delta") && kinds.contains(&"message_delta"),
            "{model}"
        );
    }
}

#[tokio::test]
async fn anthropic_ingress_errors_use_anthropic_bodies() {
    let env = start().await;
    env.emu.push_fault(FaultRule {
        fault: Fault::Status {
            status: 429,
            // Longer than the router waits for: it reaches the consumer.
            retry_after: Some(20),
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        },
        model: Some("gpt-4o".into()),
        vendor: None,
        times: 1,
        for_ms: None,
    });
    let r = env.post("/v1/messages", json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(r.status(), 429);
    let v = json_of(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn embeddings_work_for_openai_azure_and_gemini_in_both_encodings() {
    let env = start().await;
    for model in [
        "text-embedding-3-small",
        "azure/text-embedding-3-small",
        "gem/text-embedding-004",
    ] {
        let v = json_of(
            env.post(
                "/v1/embeddings",
                json!({"model": model, "input": ["a b", "c"], "dimensions": 8}),
            )
            .await,
        )
        .await;
        assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{model}: {v}");
        assert_eq!(
            v["data"][0]["embedding"].as_array().map(Vec::len),
            Some(8),
            "{model}"
        );
        let b = json_of(env.post("/v1/embeddings", json!({"model": model, "input": "a b", "dimensions": 8, "encoding_format": "base64"})).await).await;
        let s = b["data"][0]["embedding"].as_str().unwrap_or_default();
        assert_eq!(
            s.len(),
            44,
            "{model}: 8 f32 = 32 bytes = 44 base64 chars, got {b}"
        );
    }
}

#[tokio::test]
async fn redirects_from_a_provider_are_never_followed() {
    use axum::response::IntoResponse;
    let emu_target = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let location = format!("{}/v1/chat/completions", emu_target.url());
    let app = axum::Router::new().fallback(move || {
        let l = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [("location", l)],
            )
                .into_response()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let env = start_with(
        1 << 20,
        vec![spec(
            "redir",
            "openai_compatible",
            format!("http://{addr}/v1"),
            "test-key",
        )],
    )
    .await;
    let r = env
        .post("/v1/chat/completions", hello("redir/gpt-4o"))
        .await;
    assert_eq!(r.status(), 502);
    assert!(
        emu_target.requests().is_empty(),
        "the provider key followed a redirect"
    );
}

#[tokio::test]
async fn the_model_list_shows_aliases_and_provider_models() {
    let env = start().await;
    let v = json_of(
        env.client
            .get(format!("{}/v1/models", env.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"smart") && ids.contains(&"gpt-4o"), "{v}");
    assert_eq!(v["object"], "list");
}
