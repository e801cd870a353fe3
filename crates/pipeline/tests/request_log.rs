//! The request log over real HTTP against the emulator and a real SQLite store: one row per
//! request with what an operator needs to find out what happened (success, fallback, refusal,
//! upstream error, streams cut or abandoned), the live tail in order, and a writer that loses
//! no request — only counted rows, within its bound — while the store is down.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use access::api::{Api, AuthMode, LogSettings};
use access::keys::{self, DEFAULT_PREFIX};
use futures::StreamExt;
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Fallbacks, Route, Target};
use serde_json::{Value, json};
use store::{ConsumerInput, KeyInput, LogFilter, LogRow, Store};
use testkit::{Emulator, Fault, FaultRule};
use wire::secret::Secret;

struct Env {
    emu: Emulator,
    store: Store,
    db_url: String,
    gw: Arc<Gateway>,
    url: String,
    client: reqwest::Client,
    key: String,
    consumer: String,
    _dir: tempfile::TempDir,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn start(limits: Limits) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = ok(Emulator::start().await);
    let dir = ok(tempfile::tempdir());
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = ok(Store::connect(&db_url, store::Cipher::generate().0).await);
    ok(store.migrate().await);
    let gw = Gateway::with_store(limits, store.clone());
    let http = ok(providers::http::client(ok(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8"),
    )));
    let mut spec = ok(ProviderSpec::build(
        "openai",
        "openai",
        Some(&format!("{}/v1", emu.url())),
        Some(Secret::new("test-key")),
    ));
    spec.timeout = Duration::from_secs(5);
    let mut primary = Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")]);
    primary.fallbacks = Fallbacks {
        any: vec!["backup".into()],
        ..Default::default()
    };
    let mut snap = Snapshot::build(
        vec![spec],
        vec![
            primary,
            Route::new("backup", vec![Target::new("openai", "gpt-4o-mini")]),
        ],
        &http,
    );
    let mut api = Api::new("paid", AuthMode::Keys);
    api.settings.log = LogSettings {
        bodies: true,
        max_body_bytes: 64,
    };
    snap.publish(api);
    snap.publish(Api::new("quiet", AuthMode::Keys));
    gw.swap(snap);

    let consumer = ok(store.create_consumer(&ConsumerInput::new("acme")).await).id;
    let k = keys::generate(DEFAULT_PREFIX);
    ok(store
        .create_key(&KeyInput::new(
            Some(consumer.clone()),
            "test",
            hex::encode(k.hash),
            k.display,
        ))
        .await);
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let addr = ok(listener.local_addr());
    let app = pipeline::app(gw.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Env {
        emu,
        store,
        db_url,
        gw,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        key: k.raw,
        consumer,
        _dir: dir,
    }
}

fn chat(stream: bool) -> Value {
    let mut b = json!({"model": "gpt-4o", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "Say something short."}]});
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Env {
    fn post(&self, api: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/{api}/v1/chat/completions", self.url))
            .bearer_auth(&self.key)
            .json(body)
    }

    /// The row of a request, once every row so far is written.
    async fn row(&self, request_id: &str) -> LogRow {
        // A stream's row is finished when its last holder lets go, just after the body ends.
        for _ in 0..100 {
            self.gw.log.flush().await;
            if let Some(r) = ok(self.store.get_log(request_id).await) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log row for {request_id}")
    }
}

#[tokio::test]
async fn an_answered_request_leaves_one_complete_row() {
    let env = start(Limits::default()).await;
    let r = ok(env.post("paid", &chat(false)).send().await);
    assert_eq!(r.status(), 200);
    let (id, cost) = (header(&r, "x-request-id"), header(&r, "x-gateway-cost-usd"));
    let body: Value = ok(r.json().await);
    let row = env.row(&id).await;
    assert_eq!(row.api, "paid");
    assert_eq!(row.endpoint, "/paid/v1/chat/completions");
    assert_eq!(row.status, 200);
    assert_eq!(row.consumer_id.as_deref(), Some(env.consumer.as_str()));
    assert!(row.key_id.is_some());
    assert_eq!(row.model_requested.as_deref(), Some("gpt-4o"));
    assert_eq!(row.model.as_deref(), Some("gpt-4o"));
    assert_eq!(row.provider.as_deref(), Some("openai"));
    assert!(!row.stream);
    assert_eq!(
        row.prompt_tokens,
        body["usage"]["prompt_tokens"].as_i64().unwrap_or(-1)
    );
    assert_eq!(
        row.completion_tokens,
        body["usage"]["completion_tokens"].as_i64().unwrap_or(-1)
    );
    assert!(!row.estimated);
    assert_eq!(
        billing::Picos(u128::try_from(row.cost_picos).unwrap_or(0)).to_string(),
        cost
    );
    assert_eq!(row.attempts.as_array().map(Vec::len), Some(1));
    assert!(row.ttft_ms.is_some_and(|t| t <= row.latency_ms));
    assert_eq!(row.error, None);
    // Bodies: this API opted in, capped at 64 bytes.
    let req = row.request_body.unwrap_or_default();
    assert!(
        req.starts_with("{\"max_tokens\":16") || req.contains("\"model\""),
        "{req}"
    );
    assert!(req.len() <= 64 + 3);
    assert!(
        row.response_body
            .is_some_and(|b| !b.is_empty() && b.len() <= 64 + 3)
    );

    // An API that did not opt in keeps no bodies; a refusal at the edge still leaves a row.
    let r = ok(env.post("quiet", &chat(false)).send().await);
    let row = env.row(&header(&r, "x-request-id")).await;
    assert_eq!((row.api.as_str(), row.request_body), ("quiet", None));
    let r = ok(env
        .client
        .post(format!("{}/paid/v1/chat/completions", env.url))
        .bearer_auth("gw_live_not_a_key")
        .json(&chat(false))
        .send()
        .await);
    assert_eq!(r.status(), 401);
    let row = env.row(&header(&r, "x-request-id")).await;
    assert_eq!(row.status, 401);
    assert_eq!(row.consumer_id, None);
    assert!(row.error.is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn fallbacks_and_upstream_errors_are_recorded_with_every_attempt() {
    let env = start(Limits::default()).await;
    env.emu.push_fault(FaultRule {
        fault: Fault::status(500),
        model: Some("gpt-4o".into()),
        vendor: None,
        times: 10,
        for_ms: None,
    });
    let r = ok(env.post("paid", &chat(false)).send().await);
    assert_eq!(r.status(), 200);
    let row = env.row(&header(&r, "x-request-id")).await;
    assert_eq!(row.status, 200);
    assert_eq!(
        row.model.as_deref(),
        Some("gpt-4o-mini"),
        "the backup answered"
    );
    let attempts = row.attempts.as_array().cloned().unwrap_or_default();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts[0]["status"], 500);
    assert!(attempts.last().is_some_and(|a| a.get("error").is_none()));

    // Every target down: the consumer gets the error, the row says which.
    env.emu.push_fault(FaultRule {
        fault: Fault::status(503),
        model: None,
        vendor: None,
        times: 50,
        for_ms: None,
    });
    let r = ok(env.post("paid", &chat(false)).send().await);
    let status = r.status().as_u16();
    assert!(status >= 500, "{status}");
    let row = env.row(&header(&r, "x-request-id")).await;
    assert_eq!(row.status, i64::from(status));
    assert!(row.error.is_some());
    assert_eq!(
        (row.prompt_tokens, row.cost_picos),
        (0, 0),
        "failures cost nothing"
    );
}

#[tokio::test]
async fn streams_record_time_to_first_token_and_how_they_ended() {
    let env = start(Limits::default()).await;
    let r = ok(env.post("paid", &chat(true)).send().await);
    let id = header(&r, "x-request-id");
    let text = ok(r.text().await);
    assert!(text.contains("[DONE]"));
    let row = env.row(&id).await;
    assert!(row.stream);
    assert_eq!(row.status, 200);
    assert_eq!(row.error, None);
    assert!(row.prompt_tokens > 0 && !row.estimated, "{row:?}");
    assert!(row.ttft_ms.is_some_and(|t| t <= row.latency_ms));

    // The upstream stream breaks after two events: delivered, estimated, marked as cut.
    // Every resumption attempt is cut too (the router heals a single cut).
    env.emu.push_fault(FaultRule {
        fault: Fault::CutMidStream { after_events: 3 },
        model: None,
        vendor: None,
        times: 20,
        for_ms: Some(400),
    });
    let r = ok(env.post("paid", &chat(true)).send().await);
    let id = header(&r, "x-request-id");
    let text = ok(r.text().await);
    assert!(text.contains("error"), "{text}");
    let row = env.row(&id).await;
    assert_eq!(row.error.as_deref(), Some("stream_cut"), "{row:?}");
    assert!(row.estimated);
    tokio::time::sleep(Duration::from_millis(450)).await;

    // The consumer leaves mid-stream.
    env.emu.fail_next(Fault::Stall {
        after_events: 2,
        ms: 3_000,
    });
    let r = ok(env.post("paid", &chat(true)).send().await);
    let id = header(&r, "x-request-id");
    let mut body = r.bytes_stream();
    let _ = body.next().await;
    drop(body);
    let row = env.row(&id).await;
    assert_eq!(row.error.as_deref(), Some("client_disconnected"), "{row:?}");
    assert!(row.stream);
}

#[tokio::test]
async fn the_tail_delivers_rows_in_order_and_metrics_count_them() {
    let env = start(Limits::default()).await;
    let (kept, mut live) = env.gw.log.subscribe();
    assert!(kept.is_empty());
    let mut ids = Vec::new();
    for i in 0..20 {
        let api = if i % 2 == 0 { "paid" } else { "quiet" };
        let r = ok(env.post(api, &chat(i % 3 == 0)).send().await);
        ids.push(header(&r, "x-request-id"));
        let _ = r.bytes().await;
        // Rows finish when their response (or stream) ends; wait for each before the next.
        let row = ok(tokio::time::timeout(Duration::from_secs(5), live.recv()).await);
        assert_eq!(ok(row).request_id, ids[i]);
    }
    let (kept, _) = env.gw.log.subscribe();
    let kept: Vec<&str> = kept.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(kept, ids.iter().map(String::as_str).collect::<Vec<_>>());

    let text = env.gw.metrics.render(&env.gw);
    assert!(
        text.contains("gateway_requests_total{api=\"paid\",status=\"2xx\"} 10\n"),
        "{text}"
    );
    assert!(text.contains("gateway_requests_total{api=\"quiet\",status=\"2xx\"} 10\n"));
    assert!(
        text.contains("gateway_upstream_attempts_total{provider=\"openai\",outcome=\"ok\"} 20\n")
    );
    assert!(!text.contains(&env.consumer), "no consumer ids in metrics");
    env.gw.log.flush().await;
    let stats = ok(env.store.log_stats(&LogFilter::default()).await);
    assert_eq!(stats.requests, 20);
}

#[tokio::test]
async fn a_store_outage_drops_counted_rows_within_the_bound_and_recovers() {
    let env = start(Limits {
        log_queue: 16,
        ..Limits::default()
    })
    .await;
    sqlx::any::install_default_drivers();
    let side = ok(sqlx::AnyPool::connect(&env.db_url).await);
    ok(
        sqlx::query("ALTER TABLE request_log RENAME TO request_log_away")
            .execute(&side)
            .await,
    );
    let total = 80;
    let c = env.gw.log.counters.clone();
    for i in 0..total {
        let r = ok(env.post("paid", &chat(false)).send().await);
        assert_eq!(r.status(), 200, "a store outage never fails a request");
        let _ = r.bytes().await;
        if i == 0 {
            // On a fast machine every request could land inside the writer's linger window
            // and ride in its first batch: wait until that batch is held and failing.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c.failed_batches.load(Ordering::Relaxed) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the batch never failed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(c.failed_batches.load(Ordering::Relaxed) > 0);
    let dropped = c.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the queue is bounded");
    // The queue plus the one batch the writer holds is all the memory an outage takes.
    let held = env.gw.log.queued();
    assert!(held <= 16 + pipeline::log::BATCH as u64, "queued {held}");
    assert_eq!(
        env.gw.log.queued() + dropped,
        total,
        "nothing written while down"
    );
    ok(
        sqlx::query("ALTER TABLE request_log_away RENAME TO request_log")
            .execute(&side)
            .await,
    );
    ok(tokio::time::timeout(Duration::from_secs(10), env.gw.log.flush()).await);
    let written = c.written.load(Ordering::Relaxed);
    assert_eq!(
        written + dropped,
        total,
        "every row is written or counted as dropped"
    );
    let rows = ok(env.store.query_logs(&LogFilter::default(), 10_000).await);
    assert_eq!(rows.len() as u64, written);
    // The tail kept every request regardless.
    assert_eq!(env.gw.log.subscribe().0.len(), 80);
    // Writing works again.
    let r = ok(env.post("paid", &chat(false)).send().await);
    let row = env.row(&header(&r, "x-request-id")).await;
    assert_eq!(row.status, 200);
}

#[tokio::test]
async fn readiness_needs_the_store_and_turns_off_when_draining() {
    let env = start(Limits::default()).await;
    let ready = || async {
        ok(env.client.get(format!("{}/readyz", env.url)).send().await)
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    env.gw.set_draining();
    assert_eq!(ready().await, 503, "shutdown turns readiness off first");
    // Requests still arriving while draining are served.
    let r = ok(env.post("paid", &chat(false)).send().await);
    assert_eq!(r.status(), 200);
    let fresh = start(Limits::default()).await;
    fresh.store.close().await;
    let r = ok(fresh
        .client
        .get(format!("{}/readyz", fresh.url))
        .send()
        .await);
    assert_eq!(r.status(), 503, "a store that does not answer is not ready");
    let r = ok(fresh
        .client
        .get(format!("{}/healthz", fresh.url))
        .send()
        .await);
    assert_eq!(r.status(), 200, "but the process is alive");
}
