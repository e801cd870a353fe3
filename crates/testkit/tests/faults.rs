//! The connection, stream and error faults, for every vendor's chat route, over real HTTP.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use support::{VENDORS, chat, http, send};
use testkit::emulator::{FaultRule, PREFILL_REFUSED};
use testkit::{Emulator, Fault, Vendor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn status_with(status: u16, code: Option<&str>, error_type: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        message: None,
        code: code.map(str::to_string),
        error_type: error_type.map(str::to_string),
        retry_after_ms: None,
    }
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response_byte() -> Result<()> {
    let em = Emulator::start().await?;
    em.fail_next(Fault::Reset);
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut sock = tokio::net::TcpStream::connect(em.addr).await?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: emulator\r\nauthorization: Bearer test-key\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    let mut got = Vec::new();
    // A clean close or a reset, either way before a single byte.
    let read = tokio::time::timeout(Duration::from_secs(1), sock.read_to_end(&mut got)).await?;
    ensure!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got));
    ensure!(read.is_ok_and(|n| n == 0) || got.is_empty());
    // The request was read before the connection went.
    ensure!(em.requests().len() == 1);
    Ok(())
}

#[tokio::test]
async fn reset_fails_every_vendor_request_before_headers_and_is_not_retried() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let mut attempts = 0;
    for vendor in VENDORS {
        for stream in [false, true] {
            em.fail_next(Fault::Reset);
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                chat(&http, &em, vendor, stream, false).send(),
            )
            .await?;
            attempts += 1;
            let err = match sent {
                Ok(r) => anyhow::bail!("{vendor:?}: answered {}", r.status()),
                Err(e) => e,
            };
            ensure!(
                !err.is_timeout() && err.status().is_none(),
                "{vendor:?}: {err}"
            );
        }
    }
    em.fail_next(Fault::Reset);
    let embed = http
        .post(format!("{}/v1/embeddings", em.url()))
        .bearer_auth("test-key")
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await;
    attempts += 1;
    ensure!(embed.is_err());
    // The client did not quietly try again: the emulator saw each attempt once.
    ensure!(em.requests().len() == attempts);
    // The connection pool recovers: the next request is answered.
    let (status, _) = send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    ensure!(status == 200);
    Ok(())
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    for vendor in VENDORS {
        em.fail_next(Fault::Hang);
        let started = Instant::now();
        let sent = chat(&http, &em, vendor, true, false)
            .timeout(Duration::from_millis(150))
            .send()
            .await;
        ensure!(sent.is_err_and(|e| e.is_timeout()), "{vendor:?}");
        ensure!(started.elapsed() < Duration::from_secs(1));
    }
    Ok(())
}

#[tokio::test]
async fn no_done_sends_every_event_but_the_terminator() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    for vendor in VENDORS {
        em.fail_next(Fault::NoDone);
        let (status, text) = send(chat(&http, &em, vendor, true, false)).await?;
        ensure!(status == 200, "{vendor:?}: {status}");
        match vendor {
            Vendor::Openai | Vendor::Azure => {
                ensure!(text.contains(r#""finish_reason":"stop""#), "{text}");
                ensure!(text.contains(r#""prompt_tokens":"#), "usage: {text}");
                ensure!(!text.contains("[DONE]"), "{text}");
            }
            Vendor::Anthropic => {
                ensure!(text.contains("event: message_delta"), "{text}");
                ensure!(text.contains(r#""stop_reason":"end_turn""#), "{text}");
                ensure!(!text.contains("message_stop"), "{text}");
            }
            // No terminator to leave out.
            Vendor::Gemini => ensure!(text.contains(r#""finishReason":"STOP""#), "{text}"),
        }
        // Only that stream: the next one is whole again.
        let (_, text) = send(chat(&http, &em, vendor, true, false)).await?;
        if matches!(vendor, Vendor::Openai | Vendor::Azure) {
            ensure!(text.ends_with("data: [DONE]\n\n"));
        }
        if vendor == Vendor::Anthropic {
            ensure!(text.contains("event: message_stop"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn status_code_picks_openai_and_azure_error_shapes() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let error_of = async |vendor, fault| -> Result<(u16, Value)> {
        em.fail_next(fault);
        let (status, text) = send(chat(&http, &em, vendor, false, false)).await?;
        Ok((status, json(&text)["error"].clone()))
    };

    let (status, e) = error_of(
        Vendor::Openai,
        status_with(400, Some("context_length_exceeded"), None),
    )
    .await?;
    ensure!(
        status == 400 && e["code"] == "context_length_exceeded",
        "{e}"
    );
    ensure!(
        e["type"] == "invalid_request_error" && e["param"] == "messages",
        "{e}"
    );
    ensure!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum context length")),
        "{e}"
    );

    let (status, e) = error_of(
        Vendor::Openai,
        status_with(400, Some("content_policy_violation"), None),
    )
    .await?;
    ensure!(
        status == 400 && e["code"] == "content_policy_violation",
        "{e}"
    );
    ensure!(e["type"] == "invalid_request_error", "{e}");
    ensure!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("safety system")),
        "{e}"
    );

    let (status, e) = error_of(
        Vendor::Azure,
        status_with(400, Some("content_filter"), None),
    )
    .await?;
    ensure!(status == 400 && e["code"] == "content_filter", "{e}");
    ensure!(
        e["innererror"]["code"] == "ResponsibleAIPolicyViolation",
        "{e}"
    );
    ensure!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("content management policy")),
        "{e}"
    );

    // A code the emulator has no wording for keeps the status's message; the type overrides.
    let (status, e) = error_of(
        Vendor::Openai,
        status_with(429, Some("insufficient_quota"), Some("insufficient_quota")),
    )
    .await?;
    ensure!(status == 429 && e["code"] == "insufficient_quota", "{e}");
    ensure!(e["type"] == "insufficient_quota", "{e}");

    // Without a code, as before.
    let (status, e) = error_of(Vendor::Openai, Fault::status(503)).await?;
    ensure!(status == 503 && e["type"] == "server_error" && e["code"].is_null());
    Ok(())
}

#[tokio::test]
async fn status_code_picks_anthropic_and_gemini_error_shapes() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let body_of = async |vendor, fault| -> Result<(u16, Value)> {
        em.fail_next(fault);
        let (status, text) = send(chat(&http, &em, vendor, false, false)).await?;
        Ok((status, json(&text)))
    };

    let (status, v) = body_of(
        Vendor::Anthropic,
        status_with(400, Some("context_length_exceeded"), None),
    )
    .await?;
    ensure!(status == 400 && v["type"] == "error", "{v}");
    ensure!(v["error"]["type"] == "invalid_request_error", "{v}");
    ensure!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("prompt is too long")),
        "{v}"
    );

    let (_, v) = body_of(
        Vendor::Anthropic,
        status_with(400, Some("content_policy_violation"), None),
    )
    .await?;
    ensure!(
        v["error"]["message"] == "Output blocked by content filtering policy",
        "{v}"
    );

    let (status, v) = body_of(
        Vendor::Anthropic,
        status_with(500, None, Some("overloaded_error")),
    )
    .await?;
    ensure!(
        status == 500 && v["error"]["type"] == "overloaded_error",
        "{v}"
    );

    let (status, v) = body_of(
        Vendor::Gemini,
        status_with(400, Some("context_length_exceeded"), None),
    )
    .await?;
    let e = &v["error"];
    ensure!(
        status == 400 && e["code"] == 400 && e["status"] == "INVALID_ARGUMENT",
        "{v}"
    );
    ensure!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds the maximum number of tokens")),
        "{v}"
    );
    ensure!(
        e["details"][0]["reason"] == "context_length_exceeded",
        "{v}"
    );

    let (_, v) = body_of(
        Vendor::Gemini,
        status_with(400, None, Some("FAILED_PRECONDITION")),
    )
    .await?;
    ensure!(v["error"]["status"] == "FAILED_PRECONDITION", "{v}");
    Ok(())
}

#[tokio::test]
async fn retry_after_goes_out_in_seconds_and_retry_after_ms_when_scripted() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    for vendor in VENDORS {
        em.fail_next(Fault::Status {
            status: 429,
            retry_after: Some(3),
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: Some(2500),
        });
        let r = chat(&http, &em, vendor, false, false).send().await?;
        let header = |name| r.headers().get(name).and_then(|v| v.to_str().ok());
        ensure!(r.status() == 429, "{vendor:?}");
        ensure!(header("retry-after") == Some("3"), "{vendor:?}");
        ensure!(header("retry-after-ms") == Some("2500"), "{vendor:?}");
    }
    em.fail_next(Fault::status(429));
    let r = chat(&http, &em, Vendor::Openai, false, false)
        .send()
        .await?;
    ensure!(r.headers().get("retry-after-ms").is_none());
    Ok(())
}

#[tokio::test]
async fn reject_prefill_refuses_only_a_request_ending_with_the_assistant() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    for vendor in VENDORS {
        em.fail_next(Fault::RejectPrefill);
        // A request ending with the user passes the rule by…
        let (status, _) = send(chat(&http, &em, vendor, false, false)).await?;
        ensure!(status == 200, "{vendor:?}: {status}");
        // …which waits for a prefill,
        let (status, text) = send(chat(&http, &em, vendor, true, true)).await?;
        let v = json(&text);
        ensure!(status == 400, "{vendor:?}: {status} {text}");
        ensure!(
            v["error"]["message"] == PREFILL_REFUSED,
            "{vendor:?}: {text}"
        );
        let kind = match vendor {
            Vendor::Openai | Vendor::Azure => &v["error"]["type"],
            Vendor::Anthropic => &v["error"]["type"],
            Vendor::Gemini => &v["error"]["status"],
        };
        ensure!(
            kind == "invalid_request_error" || kind == "INVALID_ARGUMENT",
            "{vendor:?}: {text}"
        );
        // …and is used up by it.
        let (status, _) = send(chat(&http, &em, vendor, false, true)).await?;
        ensure!(status == 200, "{vendor:?}: {status}");
    }
    Ok(())
}

#[tokio::test]
async fn a_windowed_rule_fails_every_request_until_it_expires() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let rule =
        json!({"fault": {"kind": "status", "status": 503}, "vendor": "openai", "for_ms": 400});
    let pushed = Instant::now();
    let r = http
        .post(format!("{}/_emulator/faults", em.url()))
        .json(&rule)
        .send()
        .await?;
    ensure!(r.status() == 204);
    for _ in 0..4 {
        let (status, _) = send(chat(&http, &em, Vendor::Openai, false, false)).await?;
        ensure!(status == 503);
    }
    // Other vendors are not affected.
    let (status, _) = send(chat(&http, &em, Vendor::Anthropic, false, false)).await?;
    ensure!(status == 200);
    ensure!(
        pushed.elapsed() < Duration::from_millis(400),
        "too slow to test the window"
    );
    tokio::time::sleep(Duration::from_millis(450).saturating_sub(pushed.elapsed())).await;
    let (status, _) = send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    ensure!(status == 200);
    Ok(())
}

#[tokio::test]
async fn the_control_route_accepts_every_new_fault_shape() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let shapes = [
        json!({"kind": "reset"}),
        json!({"kind": "hang"}),
        json!({"kind": "no_done"}),
        json!({"kind": "reject_prefill"}),
        json!({"kind": "status", "status": 400, "code": "content_policy_violation",
               "error_type": "invalid_request_error", "retry_after_ms": 1500}),
    ];
    for fault in shapes {
        let r = http
            .post(format!("{}/_emulator/faults", em.url()))
            .json(&json!({"fault": fault, "model": "nobody", "times": 2, "for_ms": 1000}))
            .send()
            .await?;
        ensure!(r.status() == 204, "{fault}");
    }
    em.push_fault(FaultRule {
        model: Some("gpt-4o".into()),
        ..FaultRule::once(status_with(400, Some("content_policy_violation"), None))
    });
    let (status, text) = send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    ensure!(status == 400 && json(&text)["error"]["code"] == "content_policy_violation");
    Ok(())
}
