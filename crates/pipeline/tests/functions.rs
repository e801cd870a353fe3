//! Functions over real HTTP: an operator's function is a local axum server on loopback. Pre-hook
//! rewriting and rejecting, post-hook metadata, function backends (JSON and SSE), signatures,
//! and hostile functions, each with its documented outcome and no effect on other APIs.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

mod stages_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use pipeline::functions::{FailureMode, Function};
use serde_json::{Value, json};
use stages_support::{api, chat, chat_stream, header as h, hooks_of, loopback_http, stored_row};
use wire::secret::Secret;

const SECRET: &str = "whsec_test";

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get("x-gateway-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut msg = t.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let Ok(tag) = hex::decode(v1) else {
        return false;
    };
    ring::hmac::verify(&key, &msg, &tag).is_ok()
}

/// The operator's functions: one route per behaviour; every call is recorded with its body.
async fn operator() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/{behaviour}",
        post(
            move |axum::extract::Path(b): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: bytes::Bytes| {
                let s = s.clone();
                async move {
                    if !verify(&headers, &body) {
                        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Ok(mut s) = s.lock() {
                        s.push((b.clone(), v.clone()));
                    }
                    behave(&b, &v).await
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn sse_response(
    stream: impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn behave(b: &str, req: &Value) -> Response {
    match b {
        "continue" => json_response(json!({"action": "continue"})),
        "rewrite" => json_response(json!({"action": "rewrite", "messages": [
            {"role": "system", "content": "context from the hook"},
            {"role": "user", "content": "rewritten by the hook"}]})),
        "reject" => {
            json_response(json!({"action": "reject", "status": 418, "message": "No teapots here."}))
        }
        "post" => json_response(json!({"metadata": {"score": 7, "seen_status": req["status"]}})),
        // Tags each request with its topic (the prompt), as an operator's classifier would.
        "tag" => json_response(json!({"metadata": {
            "topic": req["messages"][0]["content"], "status": req["status"]}})),
        "backend" => json_response(json!({
            "answer": req["body"]["messages"][0]["content"],
            "consumer": req["consumer"],
            "saw_authorization": req["headers"].get("authorization").is_some(),
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        })),
        "backend-sse" => {
            let events = [
                "data: {\"delta\":\"one\"}\n\n",
                "data: {\"delta\":\"two\"}\n\n",
                "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\n",
                "data: [DONE]\n\n",
            ];
            let stream = async_stream::stream! {
                for e in events {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    yield Ok::<_, std::convert::Infallible>(bytes::Bytes::from(e));
                }
            };
            sse_response(stream)
        }
        "backend-unsafe" => json_response(json!({
            "answer": "Sure: here is how to build a bomb at home.",
            "usage": {"prompt_tokens": 3, "completion_tokens": 9},
        })),
        // Chat-completion chunks whose text is unsafe only once both have arrived.
        "backend-sse-unsafe" => {
            let events = [
                "data: {\"choices\":[{\"delta\":{\"content\":\"Sure: here is how to build\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\" a bomb at home.\"}}]}\n\n",
                "data: [DONE]\n\n",
            ];
            let stream = async_stream::stream! {
                for e in events {
                    yield Ok::<_, std::convert::Infallible>(bytes::Bytes::from(e));
                }
            };
            sse_response(stream)
        }
        // One event, then silence past the deadline.
        "sse-stall" => {
            let stream = async_stream::stream! {
                yield Ok::<_, std::convert::Infallible>(bytes::Bytes::from("data: {\"delta\":\"one\"}\n\n"));
                tokio::time::sleep(Duration::from_secs(5)).await;
                yield Ok(bytes::Bytes::from("data: [DONE]\n\n"));
            };
            sse_response(stream)
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_response(json!({"action": "continue"}))
        }
        "error500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "invalid" => (StatusCode::OK, "{not json").into_response(),
        "huge" => {
            let big = format!(
                "{{\"action\":\"continue\",\"pad\":\"{}\"}}",
                "x".repeat(10 << 20)
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                big,
            )
                .into_response()
        }
        "redirect" => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://10.0.0.1/steal")],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A listener that accepts and drops every connection (a reset mid-request).
async fn resetter() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            // SO_LINGER 0: the close is a TCP reset, not an orderly shutdown.
            #[expect(deprecated, reason = "a reset is exactly what this test wants")]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    format!("http://{addr}/")
}

fn function(name: &str, url: String, failure: FailureMode) -> Function {
    Function::new(
        name,
        url,
        Secret::new(SECRET),
        Duration::from_millis(500),
        failure,
        loopback_http(),
    )
}

async fn env() -> (stages_support::Env, Seen) {
    env_on(pipeline::Gateway::new(pipeline::Limits::default())).await
}

async fn env_on(gw: Arc<pipeline::Gateway>) -> (stages_support::Env, Seen) {
    let (base, seen) = operator().await;
    let reset = resetter().await;
    let open = FailureMode::FailOpen;
    let closed = FailureMode::FailClosed;
    // A client with the default egress policy: loopback is refused.
    let strict = providers::http::client(providers::egress::EgressPolicy::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let port = base.rsplit(':').next().unwrap_or("1").to_string();
    let mut functions = vec![
        function("continue", format!("{base}/continue"), open),
        function("rewrite", format!("{base}/rewrite"), open),
        function("reject", format!("{base}/reject"), open),
        function("post", format!("{base}/post"), open),
        function("tag", format!("{base}/tag"), open),
        function("backend", format!("{base}/backend"), open),
        function("backend-sse", format!("{base}/backend-sse"), open),
        function("backend-unsafe", format!("{base}/backend-unsafe"), open),
        function(
            "backend-sse-unsafe",
            format!("{base}/backend-sse-unsafe"),
            open,
        ),
        function("slow", format!("{base}/slow"), open),
        function("sse-stall", format!("{base}/sse-stall"), open),
        function("slow-closed", format!("{base}/slow"), closed),
        function("error500", format!("{base}/error500"), closed),
        function("invalid", format!("{base}/invalid"), closed),
        function("huge", format!("{base}/huge"), closed),
        function("redirect", format!("{base}/redirect"), closed),
        function("reset", reset, closed),
    ];
    functions.push(Function::new(
        "loopback",
        format!("http://localhost:{port}/continue"),
        Secret::new(SECRET),
        Duration::from_millis(500),
        closed,
        strict,
    ));
    let mut apis = vec![
        api("pre-continue", json!({"pre_hook": "continue"})),
        api("pre-rewrite", json!({"pre_hook": "rewrite"})),
        api("pre-reject", json!({"pre_hook": "reject"})),
        api("pre-slow", json!({"pre_hook": "slow"})),
        api("pre-slow-closed", json!({"pre_hook": "slow-closed"})),
        api("post", json!({"post_hook": "post"})),
        api("tagged", json!({"post_hook": "tag"})),
        api("fn", json!({"function": "backend", "post_hook": "post"})),
        api("fn-sse", json!({"function": "backend-sse"})),
        api("fn-sse-stall", json!({"function": "sse-stall"})),
        api(
            "fn-moderated",
            json!({"function": "backend", "moderation": {"classifier": {"kind": "rules"}}}),
        ),
        api("plain", json!({})),
    ];
    for (mode, suffix) in [("block", "block"), ("flag", "flag")] {
        let moderation =
            json!({"classifier": {"kind": "rules"}, "input": false, "output": true, "mode": mode});
        apis.push(api(
            &format!("fn-out-{suffix}"),
            json!({"function": "backend-unsafe", "moderation": moderation}),
        ));
        apis.push(api(
            &format!("fn-sse-out-{suffix}"),
            json!({"function": "backend-sse-unsafe", "moderation": moderation}),
        ));
    }
    for hostile in [
        "slow", "error500", "invalid", "huge", "redirect", "reset", "loopback",
    ] {
        apis.push(api(
            &format!("fn-{hostile}"),
            json!({ "function": hostile }),
        ));
        apis.push(api(
            &format!("pre-{hostile}-x"),
            json!({ "pre_hook": hostile }),
        ));
    }
    (stages_support::start_on(gw, apis, functions).await, seen)
}

fn calls(seen: &Seen, behaviour: &str) -> Vec<Value> {
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|(b, _)| b == behaviour)
                .map(|(_, v)| v.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_pre_hook_sees_the_request_and_may_continue() {
    let (env, seen) = env().await;
    let r = env
        .client
        .post(format!("{}/pre-continue/v1/chat/completions", env.url))
        .header("x-gateway-meta-tenant", "acme")
        .json(&chat("hello"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    assert!(h(&r, "x-gateway-hooks").is_some_and(|v| v.starts_with("pre=ok;")));
    let call = calls(&seen, "continue").pop().unwrap_or(Value::Null);
    assert_eq!(call["stage"], "pre_hook");
    assert_eq!(call["api"], "pre-continue");
    assert_eq!(call["messages"][0]["content"], "hello");
    assert_eq!(call["metadata"]["tenant"], "acme");
    assert_eq!(call["chunks"], json!([]));
    assert!(
        call["request_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("req_"))
    );
}

#[tokio::test]
async fn a_pre_hook_rewrites_the_messages_the_model_gets() {
    let (env, _) = env().await;
    let r = env
        .post("/pre-rewrite/v1/chat/completions", chat("original"))
        .await;
    assert_eq!(r.status(), 200);
    assert!(h(&r, "x-gateway-hooks").is_some_and(|v| v.starts_with("pre=rewrite;")));
    assert_eq!(
        env.chat_prompts().pop().unwrap_or_default(),
        "context from the hook\nrewritten by the hook"
    );
}

#[tokio::test]
async fn a_pre_hook_rejects_with_its_own_status_and_message() {
    let (env, _) = env().await;
    for body in [chat("hello"), chat_stream("hello")] {
        let r = env.post("/pre-reject/v1/chat/completions", body).await;
        assert_eq!(r.status(), 418);
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["message"], "No teapots here.");
        assert_eq!(v["error"]["code"], "hook_rejected");
    }
    assert!(env.chat_prompts().is_empty());
}

#[tokio::test]
async fn a_post_hook_records_metadata_without_delaying_or_changing_the_answer() {
    let (env, seen) = env().await;
    for body in [chat("hello"), chat_stream("hello")] {
        let r = env.post("/post/v1/chat/completions", body).await;
        assert_eq!(r.status(), 200);
        let id = h(&r, "x-request-id").unwrap_or_default();
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains("Echo"));
        let mut found = None;
        for _ in 0..100 {
            found = env.gw.hook_metadata.get(&id);
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = found.unwrap_or_else(|| panic!("no metadata for {id}"));
        assert_eq!(m.metadata["score"], 7);
        assert_eq!(m.metadata["seen_status"], 200);
        // The request-log row carries the hook's outcome and the metadata it returned.
        let mut row_hooks = None;
        for _ in 0..100 {
            row_hooks = env
                .gw
                .log
                .subscribe()
                .0
                .iter()
                .find(|r| r.request_id == id)
                .and_then(|r| r.hooks.clone());
            if row_hooks.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hooks: Value =
            serde_json::from_str(&row_hooks.unwrap_or_default()).unwrap_or(Value::Null);
        let post = hooks
            .as_array()
            .and_then(|l| l.iter().find(|o| o["stage"] == "post_hook").cloned())
            .unwrap_or(Value::Null);
        assert_eq!(post["outcome"], "ok", "{hooks}");
        assert_eq!(post["metadata"]["score"], 7, "{hooks}");
    }
    let call = calls(&seen, "post").pop().unwrap_or(Value::Null);
    assert_eq!(call["stage"], "post_hook");
    assert_eq!(call["provider"], "openai");
    assert!(call["usage"]["completion_tokens"].is_number(), "{call}");
}

/// What a post-hook returns is what an operator filters the log by and groups analytics by:
/// over real HTTP, a real function and a real SQLite store.
#[tokio::test]
async fn post_hook_metadata_is_found_by_log_filters_and_analytics() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let (env, _) = env_on(gw).await;
    let started = store_now();
    for (path, body) in [
        ("/tagged/v1/chat/completions", chat("billing")),
        ("/tagged/v1/chat/completions", chat_stream("billing")),
        ("/tagged/v1/chat/completions", chat("refund")),
        ("/plain/v1/chat/completions", chat("billing")),
    ] {
        let r = env.post(path, body).await;
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.text().await;
    }
    // Each row is finished once its post-hook answers, then written by the batched writer.
    let billing = store::LogFilter {
        meta: vec![store::MetaMatch::new("topic", "billing")],
        ..Default::default()
    };
    let mut rows = Vec::new();
    for _ in 0..100 {
        env.gw.log.flush().await;
        rows = store
            .query_logs(&billing, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rows.len(),
        2,
        "the two tagged billing requests, not the plain one"
    );
    assert!(rows.iter().all(|r| r.api == "tagged"));
    assert_eq!(rows.iter().filter(|r| r.stream).count(), 1);
    // Several conditions, a number among them.
    for (status, want) in [("200", 2), ("502", 0)] {
        let f = store::LogFilter {
            meta: vec![
                store::MetaMatch::new("topic", "billing"),
                store::MetaMatch::new("status", status),
            ],
            ..Default::default()
        };
        let stats = store.log_stats(&f).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats.requests, want, "status {status}");
        if want > 0 {
            assert!(stats.completion_tokens > 0, "{stats:?}");
        }
    }

    let mut usage = None;
    for _ in 0..100 {
        env.gw.log.flush().await;
        let u = store
            .usage_by_metadata("topic", started, store_now() + 1, 1_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if u.matched >= 3 {
            usage = Some(u);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = usage.unwrap_or_else(|| panic!("the refund row never arrived"));
    assert_eq!(usage.scanned, 4, "every row of the window was read");
    let groups: Vec<(&str, i64)> = usage
        .groups
        .iter()
        .map(|g| (g.key.as_str(), g.requests))
        .collect();
    assert_eq!(groups, [("billing", 2), ("refund", 1)]);
    assert!(usage.groups.iter().all(|g| g.prompt_tokens > 0));
}

fn store_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX)
}

#[tokio::test]
async fn a_function_backend_answers_json_with_its_usage() {
    let (env, seen) = env().await;
    let r = env
        .client
        .post(format!("{}/fn/v1/chat/completions", env.url))
        .header("authorization", "Bearer should-not-travel")
        .json(&chat("ping"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    assert!(h(&r, "x-gateway-hooks").is_some_and(|v| v.starts_with("function=ok;")));
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["answer"], "ping");
    assert_eq!(v["saw_authorization"], false);
    assert!(env.chat_prompts().is_empty(), "no model was called");
    // The post-hook hears about it too, with the usage the function reported.
    let mut meta = None;
    for _ in 0..100 {
        meta = calls(&seen, "post").pop();
        if meta.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let meta = meta.unwrap_or(Value::Null);
    assert_eq!(meta["provider"], "function");
    assert_eq!(meta["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn a_function_backend_streams_server_sent_events() {
    let (env, _) = env().await;
    let r = env
        .post("/fn-sse/v1/chat/completions", chat_stream("ping"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "content-type").as_deref(), Some("text/event-stream"));
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("\"one\"") && text.contains("\"two\"") && text.ends_with("[DONE]\n\n"));
}

#[tokio::test]
async fn moderation_still_applies_to_a_function_backed_api() {
    let (env, seen) = env().await;
    let r = env
        .post(
            "/fn-moderated/v1/chat/completions",
            chat("how to build a bomb"),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(calls(&seen, "backend").is_empty());
}

/// Output moderation reads a function backend's answer too, JSON and streamed: block mode
/// stops it (a stream before the function's `[DONE]`), flag mode marks it; the row says which.
#[tokio::test]
async fn output_moderation_applies_to_a_function_backends_answer() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let (env, _) = env_on(gw).await;

    let r = env
        .post("/fn-out-block/v1/chat/completions", chat("hi"))
        .await;
    assert_eq!(r.status(), 400);
    let id = h(&r, "x-request-id").unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "content_policy_violation", "{body}");
    assert!(!body.to_string().contains("bomb at home"), "{body}");
    let row = stored_row(&env.gw, &store, &id).await;
    assert!(
        row.moderation
            .as_deref()
            .is_some_and(|m| m.starts_with("blocked")),
        "{row:?}"
    );

    let r = env
        .post("/fn-out-flag/v1/chat/completions", chat("hi"))
        .await;
    assert_eq!(r.status(), 200);
    assert!(h(&r, "x-gateway-moderation").is_some());
    let id = h(&r, "x-request-id").unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(body["answer"].as_str().is_some_and(|a| a.contains("bomb")));
    let row = stored_row(&env.gw, &store, &id).await;
    assert!(
        row.moderation
            .as_deref()
            .is_some_and(|m| !m.starts_with("blocked")),
        "{row:?}"
    );

    let r = env
        .post("/fn-sse-out-block/v1/chat/completions", chat_stream("hi"))
        .await;
    assert_eq!(r.status(), 200);
    let id = h(&r, "x-request-id").unwrap_or_default();
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("content_policy_violation"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let row = stored_row(&env.gw, &store, &id).await;
    assert!(
        row.moderation
            .as_deref()
            .is_some_and(|m| m.starts_with("blocked")),
        "{row:?}"
    );
    assert_eq!(row.error.as_deref(), Some("content_policy_violation"));

    let r = env
        .post("/fn-sse-out-flag/v1/chat/completions", chat_stream("hi"))
        .await;
    assert_eq!(r.status(), 200);
    let id = h(&r, "x-request-id").unwrap_or_default();
    let text = r.text().await.unwrap_or_default();
    assert!(
        text.contains("bomb at home") && text.ends_with("[DONE]\n\n"),
        "{text}"
    );
    let row = stored_row(&env.gw, &store, &id).await;
    assert!(
        row.moderation
            .as_deref()
            .is_some_and(|m| !m.starts_with("blocked")),
        "{row:?}"
    );
    assert_eq!(row.error, None, "{row:?}");
}

/// A function stream cut short on `/v1/messages` ends with an Anthropic `error` event, which
/// the Anthropic SDK raises, not with an OpenAI-shaped one.
#[tokio::test]
async fn a_function_streams_error_event_speaks_the_consumers_protocol() {
    let (env, _) = env().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": true,
        "messages": [{"role": "user", "content": "ping"}]});
    let r = env.post("/fn-sse-stall/v1/messages", body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("\"type\":\"error\""), "{text}");
    let r = env
        .post("/fn-sse-stall/v1/chat/completions", chat_stream("ping"))
        .await;
    let text = r.text().await.unwrap_or_default();
    assert!(
        !text.contains("event: error") && text.contains("function_timeout"),
        "{text}"
    );
}

#[tokio::test]
async fn hostile_functions_fail_as_documented() {
    let (env, _) = env().await;
    // Function backends: nothing to fall back to.
    for (api, status, code) in [
        ("fn-slow", 504, "function_timeout"),
        ("fn-error500", 502, "function_failed"),
        ("fn-invalid", 502, "function_failed"),
        ("fn-huge", 502, "function_failed"),
        ("fn-redirect", 502, "function_failed"),
        ("fn-reset", 502, "function_failed"),
        ("fn-loopback", 502, "function_failed"),
    ] {
        let started = Instant::now();
        let r = env
            .post(&format!("/{api}/v1/chat/completions"), chat("x"))
            .await;
        assert_eq!(r.status(), status, "{api}");
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], code, "{api}: {v}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{api} kept to its deadline"
        );
    }
    // Fail-closed pre-hooks: 502 hook_failed, the model never called.
    for api in [
        "pre-error500-x",
        "pre-invalid-x",
        "pre-huge-x",
        "pre-redirect-x",
        "pre-reset-x",
        "pre-loopback-x",
        "pre-slow-closed",
    ] {
        let r = env
            .post(&format!("/{api}/v1/chat/completions"), chat("x"))
            .await;
        assert_eq!(r.status(), 502, "{api}");
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], "hook_failed", "{api}");
    }
    assert!(env.chat_prompts().is_empty());
    // A fail-open pre-hook past its deadline: the request goes on, marked.
    let r = env.post("/pre-slow/v1/chat/completions", chat("x")).await;
    assert_eq!(r.status(), 200);
    assert!(h(&r, "x-gateway-hooks").is_some_and(|v| v.starts_with("pre=timeout;")));
    assert!(env.gw.counters.hook_failures() >= 15);
}

#[tokio::test]
async fn a_hanging_function_does_not_slow_another_apis_requests() {
    let (env, _) = env().await;
    let env = Arc::new(env);
    let slow = {
        let env = env.clone();
        tokio::spawn(async move {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(env.post("/fn-slow/v1/chat/completions", chat("x")));
            }
            futures::future::join_all(v).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    for _ in 0..5 {
        let r = env.post("/plain/v1/chat/completions", chat("hello")).await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let slow = slow.await.unwrap_or_default();
    assert!(slow.iter().all(|r| r.status() == 504));
}

/// The entry of `stage` in a row's `hooks`.
fn span(hooks: &[Value], stage: &str) -> Value {
    hooks
        .iter()
        .find(|o| o["stage"] == stage)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every function-backend call is a span in its request-log row (a real SQLite store): the
/// function, its outcome and how long it took, and on a failure what went wrong and that the
/// request failed with it. JSON and SSE answers alike.
#[tokio::test]
async fn function_backend_calls_are_spans_in_the_request_log() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let (env, _) = env_on(gw).await;
    // (api, body, function, outcome, what the error says, at least this many ms)
    let cases = [
        ("fn", chat("ping"), "backend", "ok", None, 0),
        // Four events 20 ms apart: the span lasts until the stream ended.
        ("fn-sse", chat_stream("ping"), "backend-sse", "ok", None, 60),
        (
            "fn-sse-stall",
            chat_stream("ping"),
            "sse-stall",
            "timeout",
            Some("no answer within 500 ms"),
            450,
        ),
        (
            "fn-slow",
            chat("x"),
            "slow",
            "timeout",
            Some("no answer within 500 ms"),
            450,
        ),
        (
            "fn-error500",
            chat("x"),
            "error500",
            "error",
            Some("HTTP 500"),
            0,
        ),
        (
            "fn-invalid",
            chat("x"),
            "invalid",
            "error",
            Some("invalid JSON"),
            0,
        ),
        (
            "fn-huge",
            chat("x"),
            "huge",
            "error",
            Some("larger than"),
            0,
        ),
    ];
    for (api, body, function, outcome, error, at_least) in cases {
        let r = env.post(&format!("/{api}/v1/chat/completions"), body).await;
        let id = h(&r, "x-request-id").unwrap_or_default();
        let _ = r.text().await;
        let row = stored_row(&env.gw, &store, &id).await;
        let hooks = hooks_of(&row);
        let s = span(&hooks, "function");
        assert_eq!(s["function"], function, "{api}: {hooks:?}");
        assert_eq!(s["outcome"], outcome, "{api}: {hooks:?}");
        let ms = s["latency_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{api}: {s}"));
        assert!(ms >= at_least, "{api}: {ms} ms");
        match error {
            None => {
                assert!(s.get("error").is_none(), "{api}: {s}");
                assert!(s.get("failure").is_none(), "{api}: {s}");
            }
            Some(e) => {
                assert!(
                    s["error"].as_str().is_some_and(|m| m.contains(e)),
                    "{api}: {s}"
                );
                // A function backend has nothing to fall back to: the request failed with it.
                assert_eq!(s["failure"], "fail_closed", "{api}: {s}");
            }
        }
    }
}

/// The function's span and then the post-hook's, in the order they ran; and a stream the
/// function stopped feeding past its deadline ends with an error event and is an error in the
/// row, not a success.
#[tokio::test]
async fn a_function_backends_row_lists_its_span_before_the_post_hooks() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let (env, _) = env_on(gw).await;
    let r = env.post("/fn/v1/chat/completions", chat("ping")).await;
    assert_eq!(r.status(), 200);
    let id = h(&r, "x-request-id").unwrap_or_default();
    let row = stored_row(&env.gw, &store, &id).await;
    let stages: Vec<Value> = hooks_of(&row).iter().map(|o| o["stage"].clone()).collect();
    assert_eq!(stages, [json!("function"), json!("post_hook")], "{row:?}");

    let r = env
        .post("/fn-sse-stall/v1/chat/completions", chat_stream("ping"))
        .await;
    let id = h(&r, "x-request-id").unwrap_or_default();
    let text = r.text().await.unwrap_or_default();
    assert!(
        text.contains("function_timeout") && !text.contains("[DONE]"),
        "{text}"
    );
    let row = stored_row(&env.gw, &store, &id).await;
    assert_eq!(row.status, 504, "{row:?}");
    assert_eq!(row.error.as_deref(), Some("function_timeout"), "{row:?}");

    // The consumer leaves mid-stream: the span says so.
    let mut r = env
        .post("/fn-sse/v1/chat/completions", chat_stream("ping"))
        .await;
    let id = h(&r, "x-request-id").unwrap_or_default();
    let first = r.chunk().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(first.is_some());
    drop(r);
    let row = stored_row(&env.gw, &store, &id).await;
    let s = span(&hooks_of(&row), "function");
    assert_eq!(s["outcome"], "cancelled", "{row:?}");
    assert_eq!(row.status, 499, "{row:?}");
}

/// A pre-hook's span reaches the row whatever the hook decided, and says whether its failure
/// let the request on (`fail_open`) or failed it (`fail_closed`).
#[tokio::test]
async fn pre_hook_spans_reach_the_row_when_the_hook_rejects_or_fails() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let (env, _) = env_on(gw).await;
    // (api, status, outcome, what the error says, failure mode)
    let cases = [
        ("pre-continue", 200, "ok", None, None),
        ("pre-reject", 418, "reject", None, None),
        (
            "pre-error500-x",
            502,
            "error",
            Some("HTTP 500"),
            Some("fail_closed"),
        ),
        (
            "pre-invalid-x",
            502,
            "error",
            Some("invalid JSON"),
            Some("fail_closed"),
        ),
        (
            "pre-slow",
            200,
            "timeout",
            Some("no answer within 500 ms"),
            Some("fail_open"),
        ),
    ];
    for (api, status, outcome, error, failure) in cases {
        let r = env
            .post(&format!("/{api}/v1/chat/completions"), chat("x"))
            .await;
        assert_eq!(r.status(), status, "{api}");
        let id = h(&r, "x-request-id").unwrap_or_default();
        let row = stored_row(&env.gw, &store, &id).await;
        let hooks = hooks_of(&row);
        let s = span(&hooks, "pre_hook");
        assert_eq!(s["outcome"], outcome, "{api}: {hooks:?}");
        assert!(s["latency_ms"].is_u64(), "{api}: {s}");
        assert_eq!(
            s["error"]
                .as_str()
                .map(|e| error.is_some_and(|w| e.contains(w))),
            error.map(|_| true),
            "{api}: {s}"
        );
        assert_eq!(s["failure"].as_str(), failure, "{api}: {s}");
    }
}
