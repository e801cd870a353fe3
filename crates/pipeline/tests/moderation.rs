//! Moderation and the PII guard over real HTTP: block and flag (streaming and not), classifier
//! failures (non-fatal and fail-closed), output moderation in windows, `/v1/moderations`.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

mod stages_support;

use serde_json::{Value, json};
use stages_support::{api, chat, chat_stream, header, start, start_on, stored_row};

fn rules(extra: Value) -> Value {
    let mut m = json!({"classifier": {"kind": "rules"}});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json!({ "moderation": m })
}

fn apis() -> Vec<access::api::Api> {
    vec![
        api("block", rules(json!({}))),
        api("flag", rules(json!({"mode": "flag"}))),
        api(
            "oai",
            json!({"moderation": {"classifier": {"kind": "openai", "provider": "openai"}}}),
        ),
        api(
            "broken",
            json!({"moderation": {"classifier": {"kind": "openai", "provider": "badkey"}}}),
        ),
        api(
            "closed",
            json!({"moderation": {"classifier": {"kind": "openai", "provider": "down"},
                                      "fail_closed": true}}),
        ),
        api("out", rules(json!({"input": false, "output": true}))),
        api(
            "outflag",
            rules(json!({"input": false, "output": true, "mode": "flag"})),
        ),
        api(
            "outclosed",
            json!({"moderation": {"classifier": {"kind": "openai", "provider": "down"},
                                  "fail_closed": true, "input": false, "output": true}}),
        ),
        api("pii", json!({"pii": {}})),
        api(
            "guard",
            json!({"moderation": {"classifier": {"kind": "llm", "model": "gpt-4o"}}}),
        ),
        api("piicount", json!({"pii": {"redact": false}})),
        api("plain", json!({})),
    ]
}

async fn env() -> stages_support::Env {
    start(apis(), vec![]).await
}

const UNSAFE: &str = "tell me how to build a bomb at home";

#[tokio::test]
async fn block_mode_refuses_before_any_token_is_spent() {
    let env = env().await;
    for body in [chat(UNSAFE), chat_stream(UNSAFE)] {
        let r = env.post("/block/v1/chat/completions", body).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], "content_policy_violation");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("illicit/violent"))
        );
    }
    // The model was never called.
    assert!(env.chat_prompts().is_empty());
    // A safe prompt goes through the same API.
    let r = env.post("/block/v1/chat/completions", chat("hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-moderation"), None);
}

#[tokio::test]
async fn flag_mode_lets_the_request_on_and_marks_it() {
    let env = env().await;
    let r = env.post("/flag/v1/chat/completions", chat(UNSAFE)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-moderation").as_deref(),
        Some("flagged; categories=illicit/violent")
    );
    let r = env
        .post("/flag/v1/chat/completions", chat_stream(UNSAFE))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-moderation").as_deref(),
        Some("flagged; categories=illicit/violent")
    );
    let text = r.text().await.unwrap_or_default();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(env.chat_prompts().len(), 2);
    // The request log marks both for review.
    let mut flagged = 0;
    for _ in 0..100 {
        flagged = env
            .gw
            .log
            .subscribe()
            .0
            .iter()
            .filter(|r| r.moderation.as_deref() == Some("flagged; categories=illicit/violent"))
            .count();
        if flagged == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(flagged, 2, "both rows are marked in the request log");
}

#[tokio::test]
async fn the_openai_classifier_is_called_with_openais_format() {
    let env = env().await;
    let r = env
        .post("/oai/v1/chat/completions", chat("I will kill you"))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("violence"))
    );
    let m = env
        .emu
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/moderations")
        .unwrap_or_else(|| panic!("no moderation call"));
    assert!(
        m.body["input"]
            .as_str()
            .is_some_and(|i| i.contains("kill you"))
    );
    let r = env.post("/oai/v1/chat/completions", chat("hello")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_failing_classifier_lets_the_request_on_and_is_counted() {
    let env = env().await;
    let before = env.gw.counters.moderation_failures();
    let r = env.post("/broken/v1/chat/completions", chat(UNSAFE)).await;
    assert_eq!(r.status(), 200);
    let r = env
        .post("/broken/v1/chat/completions", chat_stream("hello"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(env.gw.counters.moderation_failures(), before + 2);
}

#[tokio::test]
async fn a_fail_closed_api_answers_503_when_its_classifier_is_down() {
    let env = env().await;
    let r = env.post("/closed/v1/chat/completions", chat("hello")).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "moderation_unavailable");
    assert!(env.chat_prompts().is_empty());
}

#[tokio::test]
async fn output_moderation_blocks_a_non_streaming_answer() {
    let env = env().await;
    // The emulator echoes the prompt: the answer carries the unsafe phrase.
    let r = env.post("/out/v1/chat/completions", chat(UNSAFE)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "content_policy_violation");
    assert_eq!(
        env.chat_prompts().len(),
        1,
        "the prompt itself was not checked"
    );
    let r = env.post("/outflag/v1/chat/completions", chat(UNSAFE)).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-gateway-moderation").is_some());
}

#[tokio::test]
async fn output_moderation_ends_a_stream_with_an_error_event() {
    let env = env().await;
    let long = format!("{} {UNSAFE} and more words", "safe words ".repeat(80));
    let r = env
        .post("/out/v1/chat/completions", chat_stream(&long))
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    assert!(
        !text.contains("[DONE]"),
        "a blocked stream is never a success"
    );
    assert!(text.contains("content_policy_violation"), "{text}");
    // Flag mode: the whole stream, then a final comment that marks it.
    let r = env
        .post("/outflag/v1/chat/completions", chat_stream(&long))
        .await;
    let text = r.text().await.unwrap_or_default();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        text.contains(": x-gateway-moderation=flagged; categories=illicit/violent"),
        "{text}"
    );
    // A safe stream passes untouched.
    let r = env
        .post("/out/v1/chat/completions", chat_stream("hello there"))
        .await;
    let text = r.text().await.unwrap_or_default();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn pii_is_redacted_before_the_prompt_leaves_the_gateway() {
    let env = env().await;
    let prompt =
        "I am jane@example.com, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234";
    let r = env.post("/pii/v1/chat/completions", chat(prompt)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-pii").as_deref(),
        Some("email=1,card=1,secret=1")
    );
    let sent = env.chat_prompts().pop().unwrap_or_default();
    assert_eq!(
        sent,
        "I am [REDACTED_EMAIL], card [REDACTED_CARD], key [REDACTED_SECRET]"
    );
    // Detect-only counts without changing what is sent.
    let r = env
        .post("/piicount/v1/chat/completions", chat(prompt))
        .await;
    assert_eq!(
        header(&r, "x-gateway-pii").as_deref(),
        Some("email=1,card=1,secret=1")
    );
    assert_eq!(env.chat_prompts().pop().unwrap_or_default(), prompt);
    // An API without the guard sends the prompt as it came, with no header.
    let r = env.post("/plain/v1/chat/completions", chat(prompt)).await;
    assert_eq!(header(&r, "x-gateway-pii"), None);
}

#[tokio::test]
async fn v1_moderations_answers_in_openais_format() {
    let env = env().await;
    let r = env
        .post(
            "/block/v1/moderations",
            json!({"input": ["hello", "how to build a bomb"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(v["id"].as_str().is_some_and(|i| i.starts_with("modr-")));
    let results = v["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[1]["flagged"], true);
    assert_eq!(results[1]["categories"]["illicit/violent"], true);
    assert_eq!(results[1]["categories"]["hate"], false);
    assert!(results[1]["category_scores"]["violence"].is_number());
    assert_eq!(
        results[1]["category_applied_input_types"]["violence"],
        json!(["text"])
    );
    // Through the OpenAI classifier: the upstream's scores.
    let r = env
        .post(
            "/oai/v1/moderations",
            json!({"input": "you are worthless trash"}),
        )
        .await;
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["results"][0]["categories"]["harassment"], true);
    assert_eq!(v["results"][0]["category_scores"]["harassment"], 0.97);
    // Its classifier down: 503.
    let r = env
        .post("/closed/v1/moderations", json!({"input": "x"}))
        .await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn the_llm_classifier_asks_a_configured_model_and_survives_a_bad_answer() {
    let env = env().await;
    let before = env.gw.counters.moderation_failures();
    let r = env.post("/guard/v1/chat/completions", chat("hello")).await;
    // The emulator's model answers "Echo: …", neither safe nor unsafe: a classifier failure,
    // so the request goes on (non-fatal) and the failure is counted.
    assert_eq!(r.status(), 200);
    assert_eq!(env.gw.counters.moderation_failures(), before + 1);
    let prompts = env.chat_prompts();
    assert_eq!(prompts.len(), 2, "the classifier call, then the request");
    assert!(prompts[0].contains("<BEGIN CONVERSATION>") && prompts[0].contains("hello"));
    assert!(prompts[0].contains("S1: Violent Crimes."));
}

#[tokio::test]
async fn anthropic_ingress_gets_the_same_stages() {
    let env = env().await;
    let body = json!({"model": "gpt-4o", "max_tokens": 50,
                      "messages": [{"role": "user", "content": UNSAFE}]});
    let r = env.post("/block/v1/messages", body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["type"], "error");
    let body = json!({"model": "gpt-4o", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "mail a@b.io"}]});
    let r = env.post("/pii/v1/messages", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-pii").as_deref(), Some("email=1"));
    assert_eq!(
        env.chat_prompts().pop().unwrap_or_default(),
        "mail [REDACTED_EMAIL]"
    );
}

/// What output moderation found reaches the request log's `moderation` column (a real SQLite
/// store), streamed or not: flags in flag mode, the stop in block mode (with its error code,
/// not a cut stream's).
#[tokio::test]
async fn output_moderation_verdicts_reach_the_request_log() {
    let (gw, store, _dir) = stages_support::with_sqlite().await;
    let env = start_on(gw, apis(), vec![]).await;
    let long = format!("{} {UNSAFE} and more words", "safe words ".repeat(80));
    let flagged = "flagged; categories=illicit/violent";
    let blocked = "blocked; categories=illicit/violent";
    // (api, body, status, moderation, error)
    let cases = [
        ("outflag", chat(UNSAFE), 200, Some(flagged), None),
        // Flagged in a window of the stream, after the response started.
        ("outflag", chat_stream(&long), 200, Some(flagged), None),
        // Only at the end of the stream (a last window shorter than a full one).
        ("outflag", chat_stream(UNSAFE), 200, Some(flagged), None),
        (
            "out",
            chat(UNSAFE),
            400,
            Some(blocked),
            Some("content_policy_violation"),
        ),
        (
            "out",
            chat_stream(&long),
            200,
            Some(blocked),
            Some("content_policy_violation"),
        ),
        // The prompt itself is blocked by input moderation.
        (
            "block",
            chat(UNSAFE),
            400,
            Some(blocked),
            Some("content_policy_violation"),
        ),
        (
            "block",
            chat_stream(UNSAFE),
            400,
            Some(blocked),
            Some("content_policy_violation"),
        ),
        // A fail-closed output classifier that is down: no verdict, the stop's own code.
        (
            "outclosed",
            chat("hello"),
            503,
            None,
            Some("moderation_unavailable"),
        ),
        (
            "outclosed",
            chat_stream("hello"),
            200,
            None,
            Some("moderation_unavailable"),
        ),
        ("outflag", chat_stream("hello there"), 200, None, None),
        ("out", chat_stream("hello there"), 200, None, None),
    ];
    for (i, (api, body, status, moderation, error)) in cases.into_iter().enumerate() {
        let r = env.post(&format!("/{api}/v1/chat/completions"), body).await;
        assert_eq!(r.status(), status, "case {i}");
        let id = header(&r, "x-request-id").unwrap_or_default();
        let _ = r.text().await;
        let row = stored_row(&env.gw, &store, &id).await;
        assert_eq!(row.moderation.as_deref(), moderation, "case {i}: {row:?}");
        assert_eq!(row.error.as_deref(), error, "case {i}: {row:?}");
    }
}
