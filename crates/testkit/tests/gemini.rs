//! The Gemini emulator over real HTTP, with a plain client.

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use testkit::emulator::FaultRule;
use testkit::{Emulator, Fault, Vendor};
use wire::gemini::{GenerateContentResponse, parse_error};
use wire::sse::SseParser;

const MODEL: &str = "gemini-2.5-flash";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("body is not JSON")
    }
}

/// A plain client. reqwest is built without a TLS crypto provider, so one is installed first
/// (an `Err` only means another test already did).
fn http() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder().build()?)
}

async fn send(req: reqwest::RequestBuilder) -> Result<Reply> {
    let resp = req.send().await?;
    Ok(Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await?,
    })
}

/// `POST /v1beta/models/{MODEL}:{method}` with the right key in the header.
async fn call(em: &Emulator, method: &str, body: Value) -> Result<Reply> {
    let url = format!("{}/v1beta/models/{MODEL}:{method}", em.url());
    send(
        http()?
            .post(url)
            .header("x-goog-api-key", "test-key")
            .json(&body),
    )
    .await
}

fn hello() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]})
}

#[tokio::test]
async fn key_in_header_or_query_and_google_errors_otherwise() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let url = format!("{}/v1beta/models/{MODEL}:generateContent", em.url());

    let none = send(http.post(&url).json(&hello())).await?;
    assert_eq!(none.status, 403);
    let e = parse_error(&none.body).ok_or(anyhow!("no Gemini error body"))?;
    assert_eq!(e.error.status, "PERMISSION_DENIED");

    let wrong = send(
        http.post(&url)
            .header("x-goog-api-key", "nope")
            .json(&hello()),
    )
    .await?;
    assert_eq!(wrong.status, 400);
    let body = wrong.json()?;
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");

    let by_query = send(http.post(format!("{url}?key=test-key")).json(&hello())).await?;
    assert_eq!(by_query.status, 200);
    let by_header = call(&em, "generateContent", hello()).await?;
    assert_eq!(by_header.status, 200);
    Ok(())
}

#[tokio::test]
async fn generate_content_echoes_with_usage() -> Result<()> {
    let em = Emulator::start().await?;
    let body = json!({
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "cachedContent": "cachedContents/abc"
    });
    let r = call(&em, "generateContent", body).await?;
    assert_eq!(r.status, 200);
    let resp: GenerateContentResponse = serde_json::from_slice(&r.body)?;
    let cand = &resp.candidates[0];
    assert_eq!(cand.finish_reason.as_deref(), Some("STOP"));
    let content = cand.content.as_ref().ok_or(anyhow!("no content"))?;
    assert_eq!(content.role.as_deref(), Some("model"));
    assert_eq!(content.parts[0].text.as_deref(), Some("Echo: hello there"));
    assert_eq!(resp.model_version.as_deref(), Some(MODEL));
    let u = resp.usage_metadata.ok_or(anyhow!("no usage"))?;
    assert_eq!(u.prompt_token_count, Some(4));
    assert_eq!(u.candidates_token_count, Some(3));
    assert_eq!(u.total_token_count, Some(7));
    assert_eq!(u.cached_content_token_count, Some(2));

    let rec = em.last_request().ok_or(anyhow!("not recorded"))?;
    assert_eq!(rec.vendor, Vendor::Gemini);
    assert_eq!(rec.path, format!("/v1beta/models/{MODEL}:generateContent"));

    // A cap below the natural answer cuts it and says so.
    let capped = json!({"contents": [{"role": "user", "parts": [{"text": "one two three"}]}],
        "generationConfig": {"maxOutputTokens": 2}});
    let resp: GenerateContentResponse =
        serde_json::from_slice(&call(&em, "generateContent", capped).await?.body)?;
    assert_eq!(
        resp.candidates[0].finish_reason.as_deref(),
        Some("MAX_TOKENS")
    );
    let text = resp.candidates[0]
        .content
        .as_ref()
        .and_then(|c| c.parts[0].text.clone());
    assert_eq!(text.as_deref(), Some("Echo: one"));
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() -> Result<()> {
    let em = Emulator::start().await?;
    let url = format!("{}/v1beta/models/{MODEL}:generateContent", em.url());
    let broken = http()?
        .post(url)
        .header("x-goog-api-key", "test-key")
        .body("{not json");
    let r = send(broken).await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()?["error"]["status"], "INVALID_ARGUMENT");

    let empty = call(&em, "generateContent", json!({"contents": []})).await?;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()?["error"]["code"], 400);
    Ok(())
}

/// Every SSE event of a response, each parsed as a whole `GenerateContentResponse`.
fn events(body: &[u8]) -> Result<Vec<GenerateContentResponse>> {
    let mut p = SseParser::new();
    p.push(body)?
        .into_iter()
        .map(|e| serde_json::from_str(&e.data).context("event is not a GenerateContentResponse"))
        .collect()
}

#[tokio::test]
async fn stream_sends_one_event_per_word() -> Result<()> {
    let em = Emulator::start().await?;
    let r = call(&em, "streamGenerateContent?alt=sse", hello()).await?;
    assert_eq!(r.status, 200);
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(ct, Some("text/event-stream"));
    let evs = events(&r.body)?;
    assert_eq!(evs.len(), 3);
    let text: String = evs
        .iter()
        .flat_map(|e| e.candidates[0].content.iter().flat_map(|c| c.parts.iter()))
        .filter_map(|p| p.text.as_deref())
        .collect();
    assert_eq!(text, "Echo: hello there");
    let (last, rest) = evs.split_last().ok_or(anyhow!("no events"))?;
    assert!(
        rest.iter()
            .all(|e| e.candidates[0].finish_reason.is_none() && e.usage_metadata.is_none())
    );
    assert_eq!(last.candidates[0].finish_reason.as_deref(), Some("STOP"));
    let u = last.usage_metadata.as_ref().ok_or(anyhow!("no usage"))?;
    assert_eq!(u.candidates_token_count, Some(3));

    // Without alt=sse the stream is one JSON array of the same responses.
    let arr = call(&em, "streamGenerateContent", hello()).await?;
    assert_eq!(arr.json()?.as_array().map(Vec::len), Some(3));

    // NoUsage drops usageMetadata; stream faults reach the SSE body.
    em.fail_next(Fault::NoUsage);
    let r = call(&em, "streamGenerateContent?alt=sse", hello()).await?;
    assert!(events(&r.body)?.iter().all(|e| e.usage_metadata.is_none()));
    Ok(())
}

#[tokio::test]
async fn declared_tools_get_a_function_call() -> Result<()> {
    let em = Emulator::start().await?;
    let tools = json!([{"functionDeclarations": [
        {"name": "get_weather", "parametersJsonSchema": {"type": "object"}},
        {"name": "get_time"}]}]);
    let ask = json!({"contents": [{"role": "user", "parts": [{"text": "weather in Paris"}]}],
        "tools": tools});
    let resp: GenerateContentResponse =
        serde_json::from_slice(&call(&em, "generateContent", ask).await?.body)?;
    let part = &resp.candidates[0]
        .content
        .as_ref()
        .ok_or(anyhow!("no content"))?
        .parts[0];
    let fc = part
        .function_call
        .as_ref()
        .ok_or(anyhow!("no function call"))?;
    assert_eq!(fc.name, "get_weather");
    assert_eq!(fc.args, Some(json!({"input": "weather in Paris"})));

    // allowedFunctionNames picks the function.
    let only_time = json!({"contents": [{"role": "user", "parts": [{"text": "now?"}]}], "tools": tools,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}});
    let r = call(&em, "streamGenerateContent?alt=sse", only_time).await?;
    let evs = events(&r.body)?;
    assert_eq!(evs.len(), 1);
    let name = evs[0].candidates[0]
        .content
        .as_ref()
        .and_then(|c| c.parts[0].function_call.as_ref());
    assert_eq!(name.map(|f| f.name.as_str()), Some("get_time"));

    // Mode NONE, or a function response in the last user turn: text again.
    let none = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": tools,
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}});
    let answered = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather in Paris"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]}],
        "tools": tools});
    for body in [none, answered] {
        let resp: GenerateContentResponse =
            serde_json::from_slice(&call(&em, "generateContent", body).await?.body)?;
        let part = &resp.candidates[0]
            .content
            .as_ref()
            .ok_or(anyhow!("no content"))?
            .parts[0];
        assert!(part.function_call.is_none());
        assert!(part.text.as_deref().is_some_and(|t| t.starts_with("Echo:")));
    }
    Ok(())
}

#[tokio::test]
async fn embeddings_single_and_batch() -> Result<()> {
    let em = Emulator::start().await?;
    let url = |m: &str| format!("{}/v1beta/models/gemini-embedding-001:{m}", em.url());
    let http = http()?;
    let one = json!({"content": {"parts": [{"text": "hi"}]}});
    let r = send(
        http.post(url("embedContent"))
            .header("x-goog-api-key", "test-key")
            .json(&one),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()?["embedding"]["values"].as_array().map(Vec::len),
        Some(768)
    );

    let batch = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]});
    let r = send(
        http.post(url("batchEmbedContents"))
            .header("x-goog-api-key", "test-key")
            .json(&batch),
    )
    .await?;
    let body = r.json()?;
    let embs = body["embeddings"]
        .as_array()
        .ok_or(anyhow!("no embeddings"))?;
    assert_eq!(embs.len(), 2);
    assert_eq!(embs[0]["values"].as_array().map(Vec::len), Some(8));
    assert_ne!(embs[0], embs[1]);

    let wrong_model =
        json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]});
    let r = send(
        http.post(url("batchEmbedContents"))
            .header("x-goog-api-key", "test-key")
            .json(&wrong_model),
    )
    .await?;
    assert_eq!(r.status, 400);
    Ok(())
}

#[tokio::test]
async fn scripted_503_uses_the_gemini_error_body() -> Result<()> {
    let em = Emulator::start().await?;
    em.push_fault(FaultRule {
        fault: Fault::Status {
            status: 503,
            retry_after: Some(7),
            message: None,
            code: None,
            error_type: None,
            retry_after_ms: None,
        },
        model: Some(MODEL.into()),
        vendor: Some(Vendor::Gemini),
        times: 1,
        for_ms: None,
    });
    let r = call(&em, "generateContent", hello()).await?;
    assert_eq!(r.status, 503);
    let ra = r.headers.get("retry-after").and_then(|v| v.to_str().ok());
    assert_eq!(ra, Some("7"));
    let e = parse_error(&r.body).ok_or(anyhow!("no Gemini error body"))?;
    assert_eq!(
        (e.error.code, e.error.status.as_str()),
        (503, "UNAVAILABLE")
    );
    assert_eq!(e.retry_delay_secs(), Some(7.0));

    em.fail_next(Fault::Status {
        status: 429,
        retry_after: None,
        message: Some("slow down".into()),
        code: None,
        error_type: None,
        retry_after_ms: None,
    });
    let r = call(&em, "streamGenerateContent?alt=sse", hello()).await?;
    let e = parse_error(&r.body).ok_or(anyhow!("no Gemini error body"))?;
    assert_eq!(
        (r.status, e.error.status.as_str(), e.error.message.as_str()),
        (429, "RESOURCE_EXHAUSTED", "slow down")
    );

    // Used up: the next request succeeds.
    assert_eq!(call(&em, "generateContent", hello()).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn models_list_has_the_documented_shape() -> Result<()> {
    let em = Emulator::start().await?;
    let r = send(http()?.get(format!("{}/v1beta/models?key=test-key", em.url()))).await?;
    assert_eq!(r.status, 200);
    let body = r.json()?;
    let models = body["models"].as_array().ok_or(anyhow!("no models"))?;
    assert!(
        models
            .iter()
            .any(|m| m["name"] == "models/gemini-2.5-flash")
    );
    assert!(
        models
            .iter()
            .all(|m| m["supportedGenerationMethods"].is_array())
    );
    Ok(())
}
