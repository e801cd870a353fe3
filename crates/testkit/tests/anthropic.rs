//! The Anthropic emulator over real HTTP on loopback.

use serde_json::{Value, json};
use testkit::{Emulator, Fault};
use wire::anthropic::{StreamEvent, StreamToChunks};
use wire::openai::Usage;
use wire::sse::SseParser;

async fn start() -> (Emulator, reqwest::Client) {
    // reqwest is built without a TLS crypto provider (plain http needs none, but the client
    // wants one); `Err` only means another test installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => unreachable!("http client: {e}"),
    };
    match Emulator::start().await {
        Ok(em) => (em, http),
        Err(e) => unreachable!("emulator did not start: {e}"),
    }
}

async fn post(
    em: &Emulator,
    http: &reqwest::Client,
    key: &str,
    version: bool,
    body: &Value,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{}/v1/messages", em.url()))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_string());
    if version {
        req = req.header("anthropic-version", "2023-06-01");
    }
    match req.send().await {
        Ok(r) => r,
        Err(e) => unreachable!("request failed: {e}"),
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn hello(max_tokens: u32) -> Value {
    json!({"model": "claude-test", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hello there"}]})
}

/// The SSE events of a body, checking each name matches its JSON `type`.
fn events(body: &[u8]) -> Vec<StreamEvent> {
    let mut p = SseParser::new();
    p.push(body)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let ev: StreamEvent = serde_json::from_str(&e.data).ok()?;
            assert_eq!(e.event.as_deref(), Some(ev.event_type()));
            Some(ev)
        })
        .collect()
}

#[tokio::test]
async fn wrong_key_is_an_authentication_error() {
    let (em, http) = start().await;
    let r = post(&em, &http, "wrong", true, &hello(5)).await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(header(&r, "request-id").is_some_and(|id| id.starts_with("req_")));
    let body = json_of(r).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn malformed_requests_are_invalid_request_errors() {
    let (em, http) = start().await;
    let r = post(&em, &http, "test-key", false, &hello(5)).await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(json_of(r).await["error"]["type"], "invalid_request_error");
    for body in [
        json!({"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "claude-test", "max_tokens": 5, "messages": []}),
        json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]}),
    ] {
        let r = post(&em, &http, "test-key", true, &body).await;
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(json_of(r).await["error"]["type"], "invalid_request_error");
    }
    let r = post(&em, &http, "test-key", true, &json!("not an object")).await;
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn answers_text_with_usage_and_rate_limit_headers() {
    let (em, http) = start().await;
    let r = post(&em, &http, "test-key", true, &hello(5)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(header(&r, "request-id").is_some());
    assert_eq!(
        header(&r, "anthropic-ratelimit-requests-limit").as_deref(),
        Some("1000")
    );
    assert!(header(&r, "anthropic-ratelimit-requests-remaining").is_some());
    assert!(header(&r, "anthropic-ratelimit-tokens-limit").is_some());
    assert!(header(&r, "anthropic-ratelimit-tokens-remaining").is_some());
    let reset = header(&r, "anthropic-ratelimit-tokens-reset").unwrap_or_default();
    assert!(
        reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );
    let body = json_of(r).await;
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Echo: hello there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 2);
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(
        em.last_request().map(|r| r.path),
        Some("/v1/messages".to_string())
    );

    // Cut short of the natural answer.
    let body = json_of(post(&em, &http, "test-key", true, &hello(2)).await).await;
    assert_eq!(body["content"][0]["text"], "Echo: hello");
    assert_eq!(body["stop_reason"], "max_tokens");

    // Prompt caching: half the input is reported as read from cache.
    let cached = json!({"model": "claude-test", "max_tokens": 3,
        "system": [{"type": "text", "text": "one two three four", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "five six"}]});
    let body = json_of(post(&em, &http, "test-key", true, &cached).await).await;
    assert_eq!(body["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(body["usage"]["input_tokens"], 3);
}

#[tokio::test]
async fn tools_are_called_until_a_tool_result_arrives() {
    let (em, http) = start().await;
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}},
                       {"name": "get_time", "input_schema": {"type": "object"}}]);
    let mut req = json!({"model": "claude-test", "max_tokens": 50, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_time"},
        "messages": [{"role": "user", "content": "in Paris"}]});
    let body = json_of(post(&em, &http, "test-key", true, &req).await).await;
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_time");
    assert_eq!(block["input"], json!({"input": "in Paris"}));

    req["messages"] = json!([
        {"role": "user", "content": "in Paris"},
        {"role": "assistant", "content": [block.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "noon"}]}
    ]);
    let body = json_of(post(&em, &http, "test-key", true, &req).await).await;
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"][0]["text"], "Echo: noon");

    req["tool_choice"] = json!({"type": "none"});
    req["messages"] = json!([{"role": "user", "content": "hi"}]);
    let body = json_of(post(&em, &http, "test-key", true, &req).await).await;
    assert_eq!(body["content"][0]["type"], "text");
}

#[tokio::test]
async fn stream_follows_the_documented_event_order() {
    let (em, http) = start().await;
    let mut req = hello(4);
    req["stream"] = json!(true);
    let r = post(&em, &http, "test-key", true, &req).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(header(&r, "anthropic-ratelimit-requests-limit").is_some());
    let evs = events(&r.bytes().await.unwrap_or_default());
    let kinds: Vec<&str> = evs.iter().map(StreamEvent::event_type).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let mut conv = StreamToChunks::new(false);
    let chunks: Vec<_> = evs
        .into_iter()
        .flat_map(|e| conv.on_event(e).unwrap_or_default())
        .collect();
    assert!(conv.is_finished());
    let text: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert_eq!(text, "Echo: hello there");
    assert_eq!(
        chunks.last().and_then(|c| c.usage),
        Some(Usage::new(2, 3, Some(0)))
    );
}

#[tokio::test]
async fn streamed_tool_call_arrives_as_json_fragments() {
    let (em, http) = start().await;
    let req = json!({"model": "claude-test", "max_tokens": 50, "stream": true,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "the answer"}]});
    let r = post(&em, &http, "test-key", true, &req).await;
    let evs = events(&r.bytes().await.unwrap_or_default());
    let mut conv = StreamToChunks::new(false);
    let chunks: Vec<_> = evs
        .into_iter()
        .flat_map(|e| conv.on_event(e).unwrap_or_default())
        .collect();
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .collect();
    assert!(deltas.len() > 2, "input arrives in several fragments");
    let args: String = deltas
        .iter()
        .filter_map(|d| d.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).ok(),
        Some(json!({"input": "the answer"}))
    );
}

#[tokio::test]
async fn status_fault_answers_with_the_error_body_and_retry_after() {
    let (em, http) = start().await;
    em.fail_next(Fault::Status {
        status: 429,
        retry_after: Some(7),
        message: None,
        code: None,
        error_type: None,
        retry_after_ms: None,
    });
    let r = post(&em, &http, "test-key", true, &hello(3)).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("7"));
    assert_eq!(json_of(r).await["error"]["type"], "rate_limit_error");

    em.fail_next(Fault::Status {
        status: 529,
        retry_after: None,
        message: None,
        code: None,
        error_type: None,
        retry_after_ms: None,
    });
    let r = post(&em, &http, "test-key", true, &hello(3)).await;
    assert_eq!(r.status().as_u16(), 529);
    assert_eq!(
        json_of(r).await["error"],
        json!({"type": "overloaded_error", "message": "Overloaded"})
    );

    // The fault was used up.
    let r = post(&em, &http, "test-key", true, &hello(3)).await;
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn no_usage_fault_zeroes_the_counts() {
    let (em, http) = start().await;
    em.fail_next(Fault::NoUsage);
    let body = json_of(post(&em, &http, "test-key", true, &hello(3)).await).await;
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
}

#[tokio::test]
async fn cut_stream_ends_before_message_stop() {
    let (em, http) = start().await;
    em.fail_next(Fault::CutMidStream { after_events: 4 });
    let mut req = hello(6);
    req["stream"] = json!(true);
    let sent = http
        .post(format!("{}/v1/messages", em.url()))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .body(req.to_string())
        .send()
        .await;
    // The emulator drops the connection right after the first events; when they were still in
    // the server's write buffer the client sees no response at all, otherwise a body error.
    let mut body = Vec::new();
    let mut failed = sent.is_err();
    if let Ok(mut r) = sent {
        assert_eq!(r.status().as_u16(), 200);
        loop {
            match r.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    }
    assert!(failed, "a cut stream is an error, not a clean end");
    let evs = events(&body);
    assert!(evs.len() <= 4);
    let mut conv = StreamToChunks::new(false);
    for ev in evs {
        let _ = conv.on_event(ev);
    }
    assert!(!conv.is_finished());
}
