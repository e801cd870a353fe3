//! The upstream client against scripted raw-socket servers on loopback: how transport failures
//! are classified, that redirects are not followed, that `https://` speaks TLS, and what an
//! OpenAI stream's chunks carry.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use providers::{ErrorClass, Provider, ProviderError, ProviderSpec, StreamItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::openai::ChatRequest;
use wire::secret::Secret;

fn provider(base: &str, timeout: Duration) -> Provider {
    let mut spec =
        ProviderSpec::build("up", "openai", Some(base), Some(Secret::new("sk-test"))).unwrap();
    spec.timeout = timeout;
    Provider::new(
        spec,
        providers::http::client(
            providers::egress::EgressPolicy::parse_allow("127.0.0.0/8").unwrap(),
        )
        .unwrap(),
    )
}

fn hello() -> ChatRequest {
    serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap()
}

/// Reads one request head and body (Content-Length) and returns it as text.
async fn read_request(sock: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A server that runs `script` on each accepted connection.
async fn serve<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            tokio::spawn(script(sock));
        }
    });
    addr
}

fn err_of<T>(r: Result<T, ProviderError>) -> ProviderError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    let e = err_of(p.chat(&hello(), "m").await);
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
    assert!(e.message.contains("could not connect"), "{e}");
}

#[tokio::test]
async fn a_connection_closed_before_any_byte_is_a_retryable_connect_error() {
    let addr = serve(|mut sock| async move {
        let _ = read_request(&mut sock).await;
        drop(sock);
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    for stream in [false, true] {
        let e = if stream {
            err_of(p.chat_stream(&hello(), "m").await)
        } else {
            err_of(p.chat(&hello(), "m").await)
        };
        assert_eq!(e.class, ErrorClass::Connect, "{e}");
        assert!(e.class.retryable());
        assert!(e.message.contains("closed the connection"), "{e}");
    }
}

#[tokio::test]
async fn no_answer_in_time_is_a_timeout() {
    let addr = serve(|mut sock| async move {
        let _ = read_request(&mut sock).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_millis(200));
    assert_eq!(
        err_of(p.chat(&hello(), "m").await).class,
        ErrorClass::Timeout
    );
    assert_eq!(
        err_of(p.chat_stream(&hello(), "m").await).class,
        ErrorClass::Timeout
    );
}

#[tokio::test]
async fn a_body_that_stops_half_way_is_a_timeout_too() {
    let addr = serve(|mut sock| async move {
        let _ = read_request(&mut sock).await;
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"id\":")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_millis(200));
    assert_eq!(
        err_of(p.chat(&hello(), "m").await).class,
        ErrorClass::Timeout
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let addr = serve(|mut sock| async move {
        let _ = read_request(&mut sock).await;
        let _ = sock
            .write_all(
                b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/x\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    let e = err_of(p.chat(&hello(), "m").await);
    assert_eq!(e.class, ErrorClass::Server);
    assert!(e.message.contains("redirect"), "{e}");
}

#[tokio::test]
async fn requests_carry_the_key_the_path_and_a_json_body() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |mut sock| {
        let tx = tx.clone();
        async move {
            let req = read_request(&mut sock).await;
            let _ = tx.send(req);
            let body = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        }
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    let out = p.chat(&hello(), "gpt-4o").await.unwrap();
    assert_eq!(out.usage().map(|u| u.total_tokens), Some(5));
    let req = rx.recv().await.unwrap();
    let lower = req.to_ascii_lowercase();
    assert!(
        req.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(lower.contains("authorization: bearer sk-test\r\n"), "{req}");
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{req}"
    );
    assert!(lower.contains(&format!("host: {addr}\r\n")), "{req}");
    assert!(lower.contains("user-agent: ai-gateway/"), "{req}");
    assert!(req.contains(r#"{"model":"gpt-4o","messages""#), "{req}");
}

#[tokio::test]
async fn an_https_base_url_speaks_tls() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |mut sock| {
        let tx = tx.clone();
        async move {
            let mut first = [0u8; 3];
            let _ = sock.read_exact(&mut first).await;
            let _ = tx.send(first);
        }
    })
    .await;
    let p = provider(&format!("https://{addr}/v1"), Duration::from_secs(5));
    let e = err_of(p.chat(&hello(), "m").await);
    // A TLS handshake record (0x16, version 3.x), not a plain HTTP request line.
    let first = rx.recv().await.unwrap();
    assert_eq!(&first[..2], &[0x16, 0x03], "{first:?}");
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
}

fn sse_response(events: &[&str]) -> Vec<u8> {
    let mut body = String::new();
    for e in events {
        body.push_str("data: ");
        body.push_str(e);
        body.push_str("\n\n");
    }
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn stream_of(events: Vec<&'static str>) -> Vec<Result<StreamItem, ProviderError>> {
    let addr = serve(move |mut sock| {
        let answer = sse_response(&events);
        async move {
            let _ = read_request(&mut sock).await;
            let _ = sock.write_all(&answer).await;
        }
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    let s = p.chat_stream(&hello(), "m").await.unwrap();
    s.collect().await
}

#[tokio::test]
async fn stream_chunks_are_forwarded_raw_with_only_usage_and_choices_read() {
    let chunk = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"extra":{"kept":true}}"#;
    let usage = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let items = stream_of(vec![chunk, usage, "[DONE]"]).await;
    assert_eq!(items.len(), 2);
    match &items[0] {
        Ok(StreamItem::Raw { json, usage, .. }) => {
            assert_eq!(&json[..], chunk.as_bytes());
            assert!(usage.is_none());
        }
        other => panic!("{other:?}"),
    }
    let first = items[0].as_ref().unwrap();
    assert!(!first.is_usage_only());
    let full = first.clone().into_chunk("up").unwrap();
    assert_eq!(full.choices[0].delta.content.as_deref(), Some("hi"));
    let last = items[1].as_ref().unwrap();
    assert!(last.is_usage_only());
    assert_eq!(last.usage().map(|u| u.total_tokens), Some(4));
}

#[tokio::test]
async fn a_stream_without_done_is_broken_and_an_error_object_is_a_server_error() {
    let chunk = r#"{"choices":[{"index":0,"delta":{}}]}"#;
    let items = stream_of(vec![r#"{"choices":[]}"#]).await;
    assert!(
        matches!(items.last(), Some(Err(e)) if e.class == ErrorClass::StreamBroken),
        "{items:?}"
    );
    let items = stream_of(vec![
        chunk,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        "[DONE]",
    ])
    .await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        matches!(&items[1], Err(e) if e.class == ErrorClass::Server && e.message == "overloaded"),
        "{items:?}"
    );
    let items = stream_of(vec!["{not json", "[DONE]"]).await;
    assert!(
        matches!(&items[..], [Err(e)] if e.class == ErrorClass::StreamBroken),
        "{items:?}"
    );
}

#[tokio::test]
async fn a_finished_stream_leaves_its_connection_for_the_next_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let addr = serve(move |mut sock| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            loop {
                if read_request(&mut sock).await.is_empty() {
                    return;
                }
                let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                // The body's last chunk comes after the terminator, as from a real server.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = sock.write_all(b"0\r\n\r\n").await;
            }
        }
    })
    .await;
    let p = provider(&format!("http://{addr}/v1"), Duration::from_secs(5));
    for _ in 0..3 {
        let items: Vec<_> = p.chat_stream(&hello(), "m").await.unwrap().collect().await;
        assert!(matches!(&items[..], [Ok(_)]), "{items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
