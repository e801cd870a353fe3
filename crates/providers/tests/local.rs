//! The `local` provider on the real small models (MiniLM, SmolLM2 from PyPI): chat, streaming and
//! embeddings in the OpenAI shapes, and what happens when a model is not installed.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

use futures::StreamExt;
use providers::{ErrorClass, Provider, ProviderSpec, StreamItem};
use wire::openai::{ChatRequest, EmbeddingsRequest, FinishReason};

fn local(models_dir: &std::path::Path) -> Provider {
    let spec = ProviderSpec::build("local", "local", models_dir.to_str(), None).unwrap();
    Provider::new(
        spec,
        providers::http::client(providers::egress::EgressPolicy::parse_allow("").unwrap()).unwrap(),
    )
}

/// A provider over a models directory with both test models, or `None` when they are skipped.
fn installed() -> Option<(tempfile::TempDir, Provider)> {
    let dir = tempfile::tempdir().unwrap();
    testkit::models::install(dir.path())?;
    let p = local(dir.path());
    Some((dir, p))
}

fn chat(body: &str) -> ChatRequest {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn answers_a_chat_with_usage_and_a_finish_reason() {
    let Some((_dir, p)) = installed() else { return };
    p.health().await.unwrap();
    let req = chat(
        r#"{"model":"smollm2","max_tokens":12,"temperature":0,
            "messages":[{"role":"system","content":"You are terse."},
                        {"role":"user","content":"What is the capital of France?"}]}"#,
    );
    let out = p.chat(&req, "smollm2").await.unwrap();
    let c = out.into_completion("local").unwrap();
    let text = c.choices[0].message.content.clone().unwrap();
    assert!(!text.trim().is_empty(), "empty answer");
    assert_eq!(c.model, "smollm2");
    let usage = c.usage.unwrap();
    assert!(
        usage.prompt_tokens > 10,
        "prompt tokens: {}",
        usage.prompt_tokens
    );
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 12);
    let finish = c.choices[0].finish_reason.unwrap();
    if usage.completion_tokens == 12 {
        assert_eq!(finish, FinishReason::Length);
    }
    // Greedy decoding is deterministic: the same request gives the same answer.
    let again = p.chat(&req, "smollm2").await.unwrap();
    let again = again.into_completion("local").unwrap();
    assert_eq!(again.choices[0].message.content.clone().unwrap(), text);
}

#[tokio::test]
async fn an_unknown_model_name_is_answered_by_the_default_chat_model() {
    let Some((_dir, p)) = installed() else { return };
    let req =
        chat(r#"{"model":"gpt-4o","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#);
    let c = p
        .chat(&req, "gpt-4o")
        .await
        .unwrap()
        .into_completion("local")
        .unwrap();
    assert_eq!(c.model, "smollm2");
}

#[tokio::test]
async fn streams_a_role_chunk_then_text_then_finish_then_usage() {
    let Some((_dir, p)) = installed() else { return };
    let req = chat(
        r#"{"model":"smollm2","max_tokens":8,"temperature":0,"stream":true,
            "messages":[{"role":"user","content":"Count to five."}]}"#,
    );
    let blocking = p
        .chat(&req, "smollm2")
        .await
        .unwrap()
        .into_completion("local")
        .unwrap();
    let mut stream = p.chat_stream(&req, "smollm2").await.unwrap();
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamItem::Chunk(c) => chunks.push(c),
            other => panic!("unexpected stream item {other:?}"),
        }
    }
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert_eq!(
        chunks[0].choices[0].delta.role,
        Some(wire::openai::Role::Assistant)
    );
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    // The stream says what the non-streaming answer says.
    assert_eq!(text, blocking.choices[0].message.content.clone().unwrap());
    let n = chunks.len();
    assert!(chunks[n - 2].choices[0].finish_reason.is_some());
    assert!(chunks[n - 1].choices.is_empty());
    let usage = chunks[n - 1].usage.unwrap();
    assert_eq!(usage, blocking.usage.unwrap());
}

#[tokio::test]
async fn a_dropped_stream_stops_generating() {
    let Some((_dir, p)) = installed() else { return };
    let req = chat(
        r#"{"model":"smollm2","max_tokens":400,"stream":true,
            "messages":[{"role":"user","content":"Write a long story about a ship."}]}"#,
    );
    let mut stream = p.chat_stream(&req, "smollm2").await.unwrap();
    let _ = stream.next().await.unwrap().unwrap();
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    // With the consumer gone, the blocking thread must finish long before 400 tokens would take;
    // a second request gets the model's lock (one generation at a time) quickly.
    let started = std::time::Instant::now();
    let quick =
        chat(r#"{"model":"smollm2","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#);
    p.chat(&quick, "smollm2").await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the abandoned generation kept running: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn embeds_texts_as_floats_and_base64() {
    let Some((_dir, p)) = installed() else { return };
    let req: EmbeddingsRequest = serde_json::from_str(
        r#"{"model":"minilm","input":["The cat sits on the mat.","A kitten rests on a rug.","Quarterly tax filing deadlines"]}"#,
    )
    .unwrap();
    let r = p.embeddings(&req).await.unwrap();
    assert_eq!(r.model, "minilm");
    assert_eq!(r.data.len(), 3);
    let v: Vec<Vec<f32>> = r
        .data
        .iter()
        .map(|d| serde_json::from_value(d.embedding.clone()).unwrap())
        .collect();
    assert!(v.iter().all(|x| x.len() == 384));
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2);
    assert!(r.usage.prompt_tokens > 10);

    let b64: EmbeddingsRequest = serde_json::from_str(
        r#"{"model":"minilm","input":"The cat sits on the mat.","encoding_format":"base64"}"#,
    )
    .unwrap();
    let r = p.embeddings(&b64).await.unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r.data[0].embedding.as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats.len(), 384);
    assert!(floats.iter().zip(&v[0]).all(|(a, b)| (a - b).abs() < 1e-5));

    let wrong: EmbeddingsRequest =
        serde_json::from_str(r#"{"model":"minilm","input":"x","dimensions":1536}"#).unwrap();
    let e = p.embeddings(&wrong).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::BadRequest);
    assert!(e.message.contains("384"), "{}", e.message);
}

#[tokio::test]
async fn a_model_that_is_not_installed_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let p = local(empty.path());
    let e = p.health().await.unwrap_err();
    assert!(e.message.contains("gateway models pull"), "{}", e.message);
    let req = chat(r#"{"model":"smollm2","messages":[{"role":"user","content":"hi"}]}"#);
    let e = p.chat(&req, "smollm2").await.unwrap_err();
    // NotFound lets a fallback chain move on to its next target.
    assert_eq!(e.class, ErrorClass::NotFound);
    assert!(
        e.message.contains("gateway models pull smollm2"),
        "{}",
        e.message
    );
}
