//! OpenTelemetry export (off by default): one span per data-plane request, sent as OTLP/HTTP
//! JSON to `GATEWAY_OTLP_ENDPOINT` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) with the
//! GenAI semantic-convention attributes (`gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`, …).
//!
//! Spans are built from the finished request-log rows (the live tail's feed), so exporting adds
//! nothing to a request's path; a collector that is slow or down costs dropped spans (counted,
//! warned about), never a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use store::LogRow;
use tokio::sync::broadcast::error::RecvError;

/// Spans per export request, and the longest a span waits to be sent.
const BATCH: usize = 512;
const EVERY: Duration = Duration::from_secs(1);

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// `http://host:4318` (the `/v1/traces` path is added) or the full traces URL.
    pub endpoint: String,
    /// Extra headers (`OTEL_EXPORTER_OTLP_HEADERS`: `k=v,k2=v2`), e.g. a collector's API key.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
}

impl OtlpConfig {
    /// From the environment; `None` when no endpoint is set (export off).
    pub fn from_env() -> anyhow::Result<Option<OtlpConfig>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) =
            var("GATEWAY_OTLP_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(endpoint.trim())
            .context("GATEWAY_OTLP_ENDPOINT must be an http(s) URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("GATEWAY_OTLP_ENDPOINT must be an http(s) URL");
        }
        let mut headers = Vec::new();
        for pair in var("OTEL_EXPORTER_OTLP_HEADERS")
            .unwrap_or_default()
            .split(',')
        {
            if pair.trim().is_empty() {
                continue;
            }
            let (k, v) = pair
                .split_once('=')
                .context("OTEL_EXPORTER_OTLP_HEADERS: entries are key=value")?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Some(OtlpConfig {
            endpoint: traces_url(endpoint.trim()),
            headers,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "ai-gateway".into()),
        }))
    }
}

fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

/// Export counters.
#[derive(Debug, Default)]
pub struct OtlpCounters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

fn string(k: &str, v: &str) -> Value {
    json!({"key": k, "value": {"stringValue": v}})
}

fn int(k: &str, v: i64) -> Value {
    // OTLP JSON carries 64-bit integers as strings.
    json!({"key": k, "value": {"intValue": v.to_string()}})
}

fn hex_id(bytes: usize) -> String {
    let u = uuid::Uuid::new_v4();
    u.as_bytes()
        .iter()
        .take(bytes.min(16))
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The GenAI operation of an endpoint.
fn operation(endpoint: &str) -> &'static str {
    if endpoint.ends_with("/embeddings") {
        "embeddings"
    } else if endpoint.ends_with("/models") {
        "list_models"
    } else {
        "chat"
    }
}

/// One request as an OTLP span.
pub fn span(r: &LogRow) -> Value {
    let op = operation(&r.endpoint);
    let model = r.model_requested.as_deref().unwrap_or("");
    let start_ns = i128::from(r.created_at) * 1_000_000;
    let end_ns = start_ns + i128::from(r.latency_ms) * 1_000_000;
    let mut attrs = vec![
        string("gen_ai.operation.name", op),
        string("http.request.method", "POST"),
        string("url.path", &r.endpoint),
        int("http.response.status_code", r.status),
        string("gateway.request_id", &r.request_id),
        string("gateway.api", &r.api),
        int("gen_ai.usage.input_tokens", r.prompt_tokens),
        int("gen_ai.usage.output_tokens", r.completion_tokens),
        int("gateway.cost_picos", r.cost_picos),
        json!({"key": "gateway.stream", "value": {"boolValue": r.stream}}),
        json!({"key": "gateway.tokens_estimated", "value": {"boolValue": r.estimated}}),
        int(
            "gateway.attempts",
            r.attempts.as_array().map_or(0, |a| a.len() as i64),
        ),
    ];
    if !model.is_empty() {
        attrs.push(string("gen_ai.request.model", model));
    }
    if let Some(m) = &r.model {
        attrs.push(string("gen_ai.response.model", m));
    }
    if let Some(p) = &r.provider {
        attrs.push(string("gen_ai.provider.name", p));
    }
    if r.cached_tokens > 0 {
        attrs.push(int("gen_ai.usage.cached_tokens", r.cached_tokens));
    }
    if let Some(t) = r.ttft_ms {
        attrs.push(int("gateway.time_to_first_token_ms", t));
    }
    if let Some(c) = &r.consumer_id {
        attrs.push(string("gateway.consumer_id", c));
    }
    let mut status = json!({"code": 1});
    if let Some(e) = &r.error {
        attrs.push(string("error.type", e));
    }
    if r.status >= 500 || r.error.as_deref() == Some("stream_cut") {
        status = json!({"code": 2, "message": r.error.clone().unwrap_or_default()});
    }
    json!({
        "traceId": hex_id(16),
        "spanId": hex_id(8),
        "name": if model.is_empty() { op.to_string() } else { format!("{op} {model}") },
        "kind": 2,
        "startTimeUnixNano": start_ns.to_string(),
        "endTimeUnixNano": end_ns.to_string(),
        "attributes": attrs,
        "status": status,
    })
}

fn body(service: &str, spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", service)]},
        "scopeSpans": [{"scope": {"name": "ai-gateway", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

/// Exports every finished request of `log` until the process ends.
pub fn spawn(
    log: Arc<pipeline::log::RequestLog>,
    config: OtlpConfig,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Arc<OtlpCounters>)> {
    crate::serve::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .context("cannot build the OTLP client")?;
    let counters = Arc::new(OtlpCounters::default());
    let c = counters.clone();
    let (_, mut rx) = log.subscribe();
    let task = tokio::spawn(async move {
        let mut spans = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(EVERY);
        loop {
            let full = tokio::select! {
                r = rx.recv() => match r {
                    Ok(row) => { spans.push(span(&row)); spans.len() >= BATCH }
                    Err(RecvError::Lagged(n)) => { c.dropped.fetch_add(n, Ordering::Relaxed); false }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => true,
            };
            if !full || spans.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut spans);
            let n = batch.len() as u64;
            let mut req = http
                .post(&config.endpoint)
                .json(&body(&config.service_name, batch));
            for (k, v) in &config.headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    c.exported.fetch_add(n, Ordering::Relaxed);
                }
                Ok(resp) => {
                    c.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(
                        status = resp.status().as_u16(),
                        spans = n,
                        "OTLP collector refused spans"
                    );
                }
                Err(e) => {
                    c.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(error = %e, spans = n, "OTLP export failed");
                }
            }
        }
    });
    Ok((task, counters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c/v1/traces"), "http://c/v1/traces");
    }

    #[tokio::test]
    async fn finished_requests_reach_the_collector_as_genai_spans() {
        let (tx, mut got) = tokio::sync::mpsc::channel::<(Value, Option<String>)>(8);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(v): axum::Json<Value>| {
                    let tx = tx.clone();
                    async move {
                        let auth = headers
                            .get("x-collector-key")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string);
                        let _ = tx.send((v, auth)).await;
                        "{}"
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
        let log = Arc::new(pipeline::log::RequestLog::new(None, 16));
        let (_task, counters) = spawn(
            log.clone(),
            OtlpConfig {
                endpoint: traces_url(&format!("http://{addr}")),
                headers: vec![("x-collector-key".into(), "k1".into())],
                service_name: "gw-test".into(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = log.start("req_otel".into(), "paid", "/paid/v1/chat/completions");
        t.set(|r| {
            r.model_requested = Some("smart".into());
            r.model = Some("gpt-4o".into());
            r.provider = Some("openai".into());
            r.prompt_tokens = 12;
            r.completion_tokens = 7;
            r.status = 200;
        });
        drop(t);
        let (v, auth) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no export"));
        assert_eq!(auth.as_deref(), Some("k1"));
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "gw-test"
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["name"], "chat smart");
        assert_eq!(s["traceId"].as_str().map(str::len), Some(32));
        assert_eq!(s["spanId"].as_str().map(str::len), Some(16));
        let attr = |k: &str| {
            s["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["key"] == k))
                .map(|x| x["value"].clone())
                .unwrap_or(Value::Null)
        };
        assert_eq!(attr("gen_ai.operation.name")["stringValue"], "chat");
        assert_eq!(attr("gen_ai.request.model")["stringValue"], "smart");
        assert_eq!(attr("gen_ai.response.model")["stringValue"], "gpt-4o");
        assert_eq!(attr("gen_ai.provider.name")["stringValue"], "openai");
        assert_eq!(attr("gen_ai.usage.input_tokens")["intValue"], "12");
        assert_eq!(attr("gen_ai.usage.output_tokens")["intValue"], "7");
        assert_eq!(attr("gateway.request_id")["stringValue"], "req_otel");
        assert_eq!(s["status"]["code"], 1);
        // Counted once the collector's answer is back.
        for _ in 0..100 {
            if counters.exported.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(counters.exported.load(Ordering::Relaxed), 1);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    }
}
