//! Plans, wallets and cost over real HTTP against the emulator and a real SQLite store: what a
//! consumer is charged, what a response says it cost, and that a wallet never pays for more
//! than it holds.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use access::api::{Api, AuthMode};
use access::keys::{self, DEFAULT_PREFIX};
use billing::{Plan, PriceTable, TokenCounts, WalletUnit};
use futures::StreamExt;
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Route, Target};
use serde_json::{Value, json};
use store::{ConsumerInput, KeyInput, Store};
use testkit::{Emulator, Fault};
use wire::secret::Secret;

struct Env {
    emu: Emulator,
    store: Store,
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

/// A gateway with one key-gated API `paid`, a consumer with a key, and (if given) a plan the
/// consumer is subscribed to.
async fn start(plan: Option<Value>) -> Env {
    start_api(plan, Api::new("paid", AuthMode::Keys)).await
}

async fn start_api(plan: Option<Value>, api: Api) -> Env {
    start_full(plan, api, vec![]).await
}

async fn start_full(
    plan: Option<Value>,
    api: Api,
    functions: Vec<pipeline::functions::Function>,
) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = ok(Emulator::start().await);
    let dir = ok(tempfile::tempdir());
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = ok(Store::connect(&url, store::Cipher::generate().0).await);
    ok(store.migrate().await);
    let gw = Gateway::with_store(Limits::default(), store.clone());
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
    let mut snap = Snapshot::build(
        vec![spec],
        vec![
            Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")]),
            Route::new("gpt-4o-mini", vec![Target::new("openai", "gpt-4o-mini")]),
            Route::new(
                "text-embedding-3-small",
                vec![Target::new("openai", "text-embedding-3-small")],
            ),
        ],
        &http,
    );
    snap.publish(api);
    for f in functions {
        snap.functions
            .insert(f.name.clone(), std::sync::Arc::new(f));
    }
    if plan.is_some() {
        snap.plan_apis.insert("paid".into());
    }
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
    if let Some(p) = plan {
        let spec: Plan = ok(serde_json::from_value(p));
        let rec = ok(store.create_plan("paid", "plan", &spec).await);
        ok(store.subscribe(&consumer, &rec.id).await);
    }

    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let addr = ok(listener.local_addr());
    let app = pipeline::app(gw.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Env {
        emu,
        store,
        gw,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        key: k.raw,
        consumer,
        _dir: dir,
    }
}

fn chat(max_tokens: u32, stream: bool) -> Value {
    let mut b = json!({"model": "gpt-4o", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "Say something short."}]});
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

impl Env {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        ok(self
            .client
            .post(format!("{}/paid{path}", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await)
    }

    /// Status, request id, cost header and body of a chat call.
    async fn chat(&self, body: &Value) -> (u16, String, Option<String>, String) {
        let r = self.post("/v1/chat/completions", body).await;
        let status = r.status().as_u16();
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (id, cost) = (
            header("x-request-id").unwrap_or_default(),
            header("x-gateway-cost-usd"),
        );
        (status, id, cost, ok(r.text().await))
    }

    async fn record(&self, request_id: &str) -> store::UsageRecord {
        self.gw.accounts.flush().await;
        ok(self.store.usage_record(request_id).await)
            .unwrap_or_else(|| panic!("no usage record for {request_id}"))
    }

    async fn wallet(&self) -> store::WalletRecord {
        ok(self.store.wallet(&self.consumer, WalletUnit::Usd).await)
    }

    /// The wallet's ledger sums to its balance and no hold is left.
    async fn assert_settled(&self) {
        self.gw.accounts.flush().await;
        let w = self.wallet().await;
        let mut sum = 0;
        for e in ok(self.store.ledger(&self.consumer).await) {
            match e.kind.as_str() {
                "top_up" | "refund" => sum += e.amount,
                "settle" => sum -= e.amount,
                _ => {}
            }
        }
        assert_eq!(w.balance, sum, "the ledger sums to the balance");
        assert_eq!(w.reserved, 0, "every hold ended");
        assert!(w.balance >= 0);
    }
}

fn gpt4o_cost(prompt: u64, completion: u64) -> String {
    PriceTable::default()
        .lookup("openai", "gpt-4o")
        .unwrap_or_else(|| panic!("gpt-4o has a price"))
        .cost(TokenCounts {
            prompt,
            completion,
            cached: 0,
        })
        .to_string()
}

#[tokio::test]
async fn every_response_carries_its_cost_and_one_usage_record() {
    let env = start(None).await;
    let (st, id, cost, body) = env.chat(&chat(16, false)).await;
    assert_eq!(st, 200, "{body}");
    let v: Value = ok(serde_json::from_str(&body));
    let (p, c) = (
        v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    );
    assert!(p > 0 && c > 0, "{v}");
    assert_eq!(cost.as_deref(), Some(gpt4o_cost(p, c).as_str()));
    let rec = env.record(&id).await;
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens, rec.estimated),
        (
            i64::try_from(p).unwrap_or(0),
            i64::try_from(c).unwrap_or(0),
            false
        )
    );
    assert_eq!(rec.consumer_id.as_deref(), Some(env.consumer.as_str()));
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    assert_eq!(
        (rec.status, rec.charge_micros),
        (200, 0),
        "no plan, no charge"
    );
    assert!(rec.cost_picos > 0);

    // A stream ends with the cost as an SSE comment, before the terminator.
    let (st, id, _, body) = env.chat(&chat(16, true)).await;
    assert_eq!(st, 200);
    let comment = body
        .lines()
        .find_map(|l| l.strip_prefix(": x-gateway-cost-usd="))
        .unwrap_or_else(|| panic!("no cost comment in {body}"));
    assert!(
        body.find(": x-gateway-cost-usd=") < body.find("data: [DONE]"),
        "{body}"
    );
    let rec = env.record(&id).await;
    assert!(!rec.estimated);
    assert_eq!(
        comment,
        gpt4o_cost(
            u64::try_from(rec.prompt_tokens).unwrap_or(0),
            u64::try_from(rec.completion_tokens).unwrap_or(0)
        )
    );

    let r = env
        .post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "hello there"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-gateway-cost-usd"));
}

#[tokio::test]
async fn streams_are_billed_for_what_was_delivered() {
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "wallet": "usd"});
    let env = start(Some(plan)).await;
    ok(env
        .store
        .top_up(&env.consumer, WalletUnit::Usd, 10_000_000, None, None)
        .await);

    // Usage reported: exactly that, charged at $1 per 1k tokens.
    let (_, id, _, _) = env.chat(&chat(16, true)).await;
    let rec = env.record(&id).await;
    assert!(!rec.estimated);
    let tokens = rec.prompt_tokens + rec.completion_tokens;
    assert_eq!(rec.charge_micros, tokens * 1000);

    // No usage from the provider: the prompt counted and one token per delivered chunk.
    env.emu.fail_next(Fault::NoUsage);
    let (st, id, _, body) = env.chat(&chat(16, true)).await;
    assert_eq!(st, 200);
    let chunks = i64::try_from(
        body.lines()
            .filter(|l| l.starts_with("data: {") && l.contains("\"choices\":[{"))
            .count(),
    )
    .unwrap_or(0);
    let rec = env.record(&id).await;
    assert!(rec.estimated, "{rec:?}");
    assert!(rec.prompt_tokens > 0);
    assert_eq!(rec.completion_tokens, chunks);
    assert!(rec.charge_micros > 0);

    // Cut mid-stream: what arrived before the cut.
    env.emu.fail_next(Fault::CutMidStream { after_events: 3 });
    let (_, id, _, body) = env.chat(&chat(16, true)).await;
    assert!(body.contains("error"), "{body}");
    let rec = env.record(&id).await;
    assert!(rec.estimated);
    assert!(rec.completion_tokens <= 3, "{rec:?}");

    // The consumer leaves after the first bytes: billed for what was sent, hold released.
    env.emu.fail_next(Fault::Stall {
        after_events: 2,
        ms: 3_000,
    });
    let r = env.post("/v1/chat/completions", &chat(64, true)).await;
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut body = r.bytes_stream();
    let _ = body.next().await;
    drop(body);
    let mut rec = None;
    for _ in 0..50 {
        env.gw.accounts.flush().await;
        rec = ok(env.store.usage_record(&id).await);
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec = rec.unwrap_or_else(|| panic!("no record after the disconnect"));
    assert!(rec.estimated);
    assert!(rec.completion_tokens <= 2, "{rec:?}");
    env.assert_settled().await;
}

#[tokio::test]
async fn upstream_failures_are_never_charged() {
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "wallet": "usd"});
    let env = start(Some(plan)).await;
    ok(env
        .store
        .top_up(&env.consumer, WalletUnit::Usd, 1_000_000, None, None)
        .await);
    env.emu.fail_next(Fault::status(400));
    let (st, id, cost, _) = env.chat(&chat(16, false)).await;
    assert_eq!(st, 400);
    assert_eq!(cost, None);
    let rec = env.record(&id).await;
    assert_eq!(
        (rec.status, rec.prompt_tokens, rec.charge_micros),
        (400, 0, 0)
    );
    // A stream refused upstream before it opened.
    env.emu.fail_next(Fault::status(400));
    let (st, id, _, _) = env.chat(&chat(16, true)).await;
    assert_eq!(st, 400);
    assert_eq!(env.record(&id).await.charge_micros, 0);
    env.assert_settled().await;
    let w = env.wallet().await;
    assert_eq!(w.balance, 1_000_000, "nothing was charged");
}

#[tokio::test]
async fn a_wallet_pays_the_worst_case_hold_and_then_refuses_with_402() {
    // $1 per 1k tokens; $0.10 buys a few requests of up to 16 output tokens.
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "wallet": "usd"});
    let env = start(Some(plan)).await;
    ok(env
        .store
        .top_up(&env.consumer, WalletUnit::Usd, 100_000, None, None)
        .await);
    let mut admitted = 0;
    let mut refusal = None;
    for _ in 0..100 {
        let (st, _, _, body) = env.chat(&chat(16, false)).await;
        env.gw.accounts.flush().await;
        if st == 200 {
            admitted += 1;
        } else {
            refusal = Some((st, body));
            break;
        }
    }
    let (st, body) = refusal.unwrap_or_else(|| panic!("never refused"));
    assert_eq!(st, 402, "{body}");
    let v: Value = ok(serde_json::from_str(&body));
    assert_eq!(v["error"]["code"], "insufficient_balance");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_tokens"),
        "{v}"
    );
    assert!(admitted > 0);
    assert_eq!(
        env.emu.requests().len(),
        admitted,
        "a refused request never went upstream"
    );
    env.assert_settled().await;
    // A lower max_tokens fits what is left when a larger one did not.
    let w = env.wallet().await;
    assert!(w.balance < 100_000);
}

#[tokio::test]
async fn concurrent_requests_never_overspend_the_wallet() {
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "wallet": "usd"});
    let env = Arc::new(start(Some(plan)).await);
    ok(env
        .store
        .top_up(&env.consumer, WalletUnit::Usd, 200_000, None, None)
        .await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let env = env.clone();
        tasks.spawn(async move { env.chat(&chat(16, false)).await.0 });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(ok(s));
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(admitted > 0 && admitted < 100, "{admitted}");
    env.assert_settled().await;
    let charged: i64 = ok(env
        .store
        .list_usage(Some(&env.consumer), 0, i64::MAX, 1000)
        .await)
    .iter()
    .map(|r| r.charge_micros)
    .sum();
    let w = env.wallet().await;
    assert_eq!(w.balance, 200_000 - charged, "balance = top-ups − charges");
    assert!(w.balance >= 0, "overspend is exactly zero");
}

#[tokio::test]
async fn plan_caps_models_and_cancellation_are_enforced_before_the_upstream() {
    let plan = json!({"kind": "free", "allowance_tokens": 30, "models": ["gpt-4o"]});
    let env = start(Some(plan)).await;
    let (st, _, _, body) = env.chat(&chat(40, false)).await;
    assert_eq!(st, 200, "{body}");
    let mut mini = chat(8, false);
    mini["model"] = json!("gpt-4o-mini");
    let (st, _, _, body) = env.chat(&mini).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("model_not_allowed"), "{body}");
    // The allowance is used up within a few requests.
    let mut capped = None;
    for _ in 0..10 {
        let (st, _, _, body) = env.chat(&chat(40, false)).await;
        env.gw.accounts.flush().await;
        if st == 429 {
            capped = Some(body);
            break;
        }
    }
    let body = capped.unwrap_or_else(|| panic!("the cap never stopped usage"));
    assert!(body.contains("token_cap_reached"), "{body}");
    let upstream = env.emu.requests().len();

    let sub = ok(env.store.subscription(&env.consumer, "paid").await)
        .unwrap_or_else(|| panic!("subscribed"));
    ok(env.store.cancel_subscription(&sub.id).await);
    env.gw.accounts.forget();
    let (st, _, _, body) = env.chat(&chat(8, false)).await;
    assert_eq!(st, 403);
    assert!(body.contains("subscription_inactive"), "{body}");
    assert_eq!(env.emu.requests().len(), upstream);
}

/// A key with its own 60 RPM, 600 requests at once: exactly 60 reach the upstream; the rest
/// get 429 with `Retry-After` and the `x-ratelimit-*` headers.
#[tokio::test]
async fn a_burst_against_a_keys_rpm_admits_exactly_the_limit() {
    let env = Arc::new(start(None).await);
    let consumer = ok(env
        .store
        .create_consumer(&ConsumerInput::new("bursty"))
        .await)
    .id;
    let k = keys::generate(DEFAULT_PREFIX);
    let mut input = KeyInput::new(Some(consumer), "burst", hex::encode(k.hash), k.display);
    input.rpm = Some(60);
    ok(env.store.create_key(&input).await);
    let key = Arc::new(k.raw);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..600 {
        let (env, key) = (env.clone(), key.clone());
        tasks.spawn(async move {
            let r = ok(env
                .client
                .post(format!("{}/paid/v1/chat/completions", env.url))
                .bearer_auth(key.as_str())
                .json(&chat(4, false))
                .send()
                .await);
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            (
                r.status().as_u16(),
                h("retry-after"),
                h("x-ratelimit-limit-requests"),
                h("x-ratelimit-remaining-requests"),
            )
        });
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, retry, limit, remaining) = ok(r);
        assert_eq!(limit.as_deref(), Some("60"));
        match status {
            200 => admitted += 1,
            429 => {
                assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
                assert_eq!(remaining.as_deref(), Some("0"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 60);
    assert_eq!(env.emu.requests().len(), 60);
}

/// A consumer's RPM holds across all its keys: two keys, 40 concurrent requests each, a
/// consumer limit of 30 → exactly 30 answered, and the refusals name the consumer.
#[tokio::test]
async fn a_consumer_rpm_applies_across_its_keys() {
    let env = Arc::new(start(None).await);
    let mut input = ConsumerInput::new("two-keys");
    input.rpm = Some(30);
    let consumer = ok(env.store.create_consumer(&input).await).id;
    let mut keys_raw = Vec::new();
    for label in ["a", "b"] {
        let k = keys::generate(DEFAULT_PREFIX);
        ok(env
            .store
            .create_key(&KeyInput::new(
                Some(consumer.clone()),
                label,
                hex::encode(k.hash),
                k.display,
            ))
            .await);
        keys_raw.push(Arc::new(k.raw));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..80 {
        let (env, key) = (env.clone(), keys_raw[i % 2].clone());
        tasks.spawn(async move {
            let r = ok(env
                .client
                .post(format!("{}/paid/v1/chat/completions", env.url))
                .bearer_auth(key.as_str())
                .json(&chat(4, false))
                .send()
                .await);
            (r.status().as_u16(), ok(r.text().await))
        });
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        match ok(r) {
            (200, _) => admitted += 1,
            (429, body) => assert!(body.contains("this consumer"), "{body}"),
            (other, body) => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(admitted, 30);
    // Another consumer is not affected.
    let (st, _, _, body) = env.chat(&chat(4, false)).await;
    assert_eq!(st, 200, "{body}");
    // A consumer limit out of range is refused by the store.
    let mut bad = ConsumerInput::new("bad-limits");
    bad.tpm = Some(0);
    assert!(env.store.create_consumer(&bad).await.is_err());
}

/// TPM reserves the worst case at admission and gives back what was not used at settlement:
/// sequential requests use (nearly) the whole budget, never more.
#[tokio::test]
async fn tpm_reserves_the_estimate_and_corrects_to_actual_usage() {
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1, "tpm": 300});
    let env = start(Some(plan)).await;
    let mut used = 0;
    let mut refused = None;
    for _ in 0..200 {
        let (st, id, _, body) = env.chat(&chat(16, false)).await;
        if st != 200 {
            refused = Some(body);
            break;
        }
        let rec = env.record(&id).await;
        used += rec.prompt_tokens + rec.completion_tokens;
    }
    let body = refused.unwrap_or_else(|| panic!("the TPM limit never applied"));
    assert!(
        body.contains("rate_limit_exceeded") && body.contains("tokens"),
        "{body}"
    );
    // Each request reserves prompt + 16 but uses far less: without correction only a third
    // of the budget would be usable.
    assert!(used <= 315, "admitted {used} tokens against 300 per minute");
    assert!(used >= 250, "only {used} of 300 tokens were usable");
}

/// `/v1/moderations` passes the same edge and admission as the other `/v1` calls: the key is
/// required, the plan's RPM holds (429 with `Retry-After`), each call leaves a log row, and
/// nothing is charged: an empty wallet and a model allow-list do not refuse it.
#[tokio::test]
async fn moderations_are_admitted_like_every_v1_call_and_never_charged() {
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "rpm": 1,
                      "wallet": "usd", "models": ["gpt-4o"]});
    let env = start(Some(plan)).await;
    let body = json!({"input": "a perfectly ordinary sentence"});

    // Unauthenticated, and with a key that does not exist: 401 before anything else.
    let r = ok(env
        .client
        .post(format!("{}/paid/v1/moderations", env.url))
        .json(&body)
        .send()
        .await);
    assert_eq!(r.status(), 401);
    let r = ok(env
        .client
        .post(format!("{}/paid/v1/moderations", env.url))
        .bearer_auth(format!("{DEFAULT_PREFIX}not-a-real-key-0000000000000000"))
        .json(&body)
        .send()
        .await);
    assert_eq!(r.status(), 401);

    let first = env.post("/v1/moderations", &body).await;
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "x-ratelimit-limit-requests").as_deref(),
        Some("1")
    );
    let first_id = header(&first, "x-request-id").unwrap_or_default();
    let v: Value = ok(first.json().await);
    assert_eq!(v["results"][0]["flagged"], false, "{v}");

    let second = env.post("/v1/moderations", &body).await;
    assert_eq!(second.status(), 429);
    let retry = header(&second, "retry-after").unwrap_or_default();
    assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "{retry:?}");
    let second_id = header(&second, "x-request-id").unwrap_or_default();
    let v: Value = ok(second.json().await);
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the consumer's plan")),
        "{v}"
    );

    // One log row each, with the consumer; no usage record, no hold, no charge.
    let (rows, _) = env.gw.log.subscribe();
    let row = |id: &str| {
        rows.iter()
            .find(|r| r.request_id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no log row for {id}"))
    };
    let (a, b) = (row(&first_id), row(&second_id));
    assert_eq!((a.status, b.status), (200, 429));
    assert_eq!(a.endpoint, "/paid/v1/moderations");
    assert_eq!(a.consumer_id.as_deref(), Some(env.consumer.as_str()));
    assert_eq!(b.error.as_deref(), Some("rate_limit_exceeded"));
    env.gw.accounts.flush().await;
    assert!(ok(env.store.usage_record(&first_id).await).is_none());
    let w = env.wallet().await;
    assert_eq!((w.balance, w.reserved), (0, 0));
    assert!(
        env.emu.requests().is_empty(),
        "the rules classifier needs no upstream"
    );
}

#[tokio::test]
async fn an_api_wide_rpm_applies_across_consumers() {
    let mut api = Api::new("paid", AuthMode::Keys);
    api.settings.limits.rpm = Some(3);
    let env = start_api(None, api).await;
    let body = chat(4, false);
    let statuses: Vec<u16> = futures::future::join_all((0..5).map(|_| env.chat(&body)))
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    let (st, _, _, body) = env.chat(&chat(4, false)).await;
    assert_eq!(st, 429);
    assert!(body.contains("this API"), "{body}");
}

/// Billing events reach the operator's webhook signed, are retried after a failure with the
/// same idempotency id, and are not sent again once delivered.
#[tokio::test]
async fn billing_events_are_signed_retried_and_delivered_once() {
    use std::sync::Mutex;
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000});
    let env = start(Some(plan)).await;
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;
    let seen: Seen = Arc::default();
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let hook = format!("http://{}/hook", ok(listener.local_addr()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.push((h("x-gateway-event-id"), h("x-gateway-signature"), body));
                // The first delivery fails: the event must come again.
                let first = l.len() == 1;
                drop(l);
                if first {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let secret = Secret::new("whsec_test_0123456789");
    ok(env.store.set_billing_webhook(&hook, &secret).await);
    let mut snap = Snapshot::build(
        vec![],
        vec![],
        &ok(providers::http::client(
            providers::egress::EgressPolicy::default(),
        )),
    );
    // Rebuild the served snapshot with events on (what the admin reload does).
    let old = env.gw.snapshot();
    snap.providers = old.providers.clone();
    snap.table = old.table.clone();
    snap.apis = old.apis.clone();
    snap.plan_apis = old.plan_apis.clone();
    snap.billing_events = true;
    env.gw.swap(snap);

    let (st, id, _, _) = env.chat(&chat(8, false)).await;
    assert_eq!(st, 200);
    env.gw.accounts.flush().await;
    let http = ok(providers::http::client(ok(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8"),
    )));
    assert_eq!(
        pipeline::events::deliver_due(&env.store, &http).await,
        0,
        "first try fails"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(pipeline::events::deliver_due(&env.store, &http).await, 1);
    assert_eq!(
        pipeline::events::deliver_due(&env.store, &http).await,
        0,
        "delivered once"
    );

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, seen[1].0, "a retry carries the same event id");
    for (event, sig, body) in &seen {
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad signature header {sig}"));
        assert_eq!(
            sig,
            &pipeline::events::signature(secret.expose(), t, body.as_bytes())
        );
        let v: Value = ok(serde_json::from_str(body));
        assert_eq!(v["id"].as_str(), Some(event.as_str()));
        assert_eq!(v["type"], "usage.settled");
        assert_eq!(v["data"]["request_id"].as_str(), Some(id.as_str()));
        assert!(v["data"]["charge_micros"].as_i64().unwrap_or(0) > 0);
        assert!(!body.contains(secret.expose()));
    }
}

/// A function-backed API's function reports usage; it is recorded and charged like a model's.
#[tokio::test]
async fn a_function_backends_reported_usage_is_billed() {
    let app = axum::Router::new().route(
        "/fn",
        axum::routing::post(|| async {
            axum::Json(
                json!({"answer": "hi", "usage": {"prompt_tokens": 700, "completion_tokens": 300}}),
            )
        }),
    );
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let addr = ok(listener.local_addr());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = ok(providers::http::client(ok(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8"),
    )));
    let f = pipeline::functions::Function::new(
        "backend",
        format!("http://{addr}/fn"),
        Secret::new("function-secret-123"),
        Duration::from_secs(2),
        pipeline::functions::FailureMode::FailOpen,
        http,
    );
    let mut api = Api::new("paid", AuthMode::Keys);
    api.settings.function = Some("backend".into());
    let plan = json!({"kind": "metered", "overage_per_1k_micros": 1_000_000, "wallet": "usd"});
    let env = start_full(Some(plan), api, vec![f]).await;
    ok(env
        .store
        .top_up(&env.consumer, WalletUnit::Usd, 10_000_000, None, None)
        .await);
    let (st, id, _, body) = env.chat(&chat(16, false)).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"answer\":\"hi\""));
    let rec = env.record(&id).await;
    assert_eq!((rec.prompt_tokens, rec.completion_tokens), (700, 300));
    assert_eq!(rec.provider.as_deref(), Some("function"));
    assert_eq!(rec.charge_micros, 1_000_000, "1k tokens at 1 USD per 1k");
    env.assert_settled().await;
    assert_eq!(env.wallet().await.balance, 9_000_000);
}

/// A burst that outruns the usage writer (more records settled at once than its queue holds)
/// loses no record: the ones past the queue wait for room and a flush waits for them.
#[tokio::test]
async fn a_burst_past_the_writer_queue_loses_no_usage_record() {
    use pipeline::account::{self, Outcome, Wants};
    let env = start(None).await;
    let (mut parts, ()) = ok(axum::http::Request::builder()
        .method("POST")
        .uri("/paid/v1/chat/completions")
        .header("authorization", format!("Bearer {}", env.key))
        .body(()))
    .into_parts();
    parts
        .extensions
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            [127, 0, 0, 1],
            50_000,
        ))));
    let snap = env.gw.snapshot();
    let caller = ok(pipeline::edge::auth::admit(&env.gw, &snap, &parts).await);
    let count = || 10;
    let wants = Wants {
        model: "gpt-4o",
        prompt_tokens: &count,
        max_output: Some(16),
        stream: false,
        free: false,
    };
    // Settlement never waits, so nothing drains the queue until this loop is done.
    const BURST: usize = 20_000;
    for _ in 0..BURST {
        let id = pipeline::edge::next_request_id();
        let acct = ok(account::admit(&env.gw, &snap, &caller, &id, &wants).await);
        acct.settle(
            &env.gw,
            &snap.prices,
            Outcome {
                status: 200,
                provider: Some("openai"),
                model: Some("gpt-4o"),
                usage: Some(wire::openai::Usage::new(10, 5, None)),
                delivered_chunks: 0,
                attempts: &[],
            },
        );
    }
    assert!(env.gw.accounts.queued() > 16_000, "the queue never filled");
    env.gw.accounts.flush().await;
    let lines = ok(env.store.usage_lines(&env.consumer, 0, i64::MAX).await);
    let written: i64 = lines.iter().map(|l| l.requests).sum();
    assert_eq!(written, i64::try_from(BURST).unwrap_or(i64::MAX));
    let tokens: i64 = lines
        .iter()
        .map(|l| l.prompt_tokens + l.completion_tokens)
        .sum();
    assert_eq!(tokens, 15 * i64::try_from(BURST).unwrap_or(i64::MAX));
}
