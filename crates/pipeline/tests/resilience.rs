//! Router resilience over real HTTP on loopback: scripted provider faults in the emulator, and
//! for each what the consumer sees, how many attempts the emulator saw and how far apart, and
//! how long it took.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use access::api::{Api, AuthMode, DEFAULT_API};
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Capabilities, CircuitPolicy, Fallbacks, Health, Route, Target};
use serde_json::{Value, json};
use testkit::Emulator;
use testkit::emulator::{Fault, FaultRule, Outcome, Recorded};
use wire::secret::Secret;

struct Env {
    emu: Emulator,
    url: String,
    client: reqwest::Client,
}

fn spec(name: &str, kind: &str, base: String, timeout: Duration) -> ProviderSpec {
    let mut s = ProviderSpec::build(name, kind, Some(&base), Some(Secret::new("test-key")))
        .unwrap_or_else(|e| panic!("{e}"));
    s.timeout = timeout;
    s
}

fn route(name: &str, provider: &str, model: &str) -> Route {
    Route::new(name, vec![Target::new(provider, model)])
}

fn with_fallbacks(mut r: Route, f: Fallbacks) -> Route {
    r.fallbacks = f;
    r
}

fn any(names: &[&str]) -> Fallbacks {
    Fallbacks {
        any: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

struct Setup {
    routes: Vec<Route>,
    keepalive: Duration,
    health: Arc<Health>,
    circuit: CircuitPolicy,
    monthly_spend_pct: Option<f64>,
}

impl Setup {
    fn new(routes: Vec<Route>) -> Self {
        Setup {
            routes,
            keepalive: Duration::from_secs(30),
            health: Arc::new(Health::default()),
            circuit: CircuitPolicy::default(),
            monthly_spend_pct: None,
        }
    }
}

/// Providers: `openai` (OpenAI format), `claude` (Anthropic), `gem` (Gemini), all on one
/// emulator; `short` is `openai` with a 1 s per-attempt timeout.
async fn start(setup: Setup) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let e = emu.url();
    let long = Duration::from_secs(10);
    let specs = vec![
        spec("openai", "openai", format!("{e}/v1"), long),
        spec("claude", "anthropic", e.clone(), long),
        spec("gem", "gemini", e.clone(), long),
        spec("short", "openai", format!("{e}/v1"), Duration::from_secs(1)),
    ];
    let http = providers::http::client(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::with_health(
        Limits {
            sse_keepalive: setup.keepalive,
            ..Default::default()
        },
        setup.health,
    );
    let mut snap = Snapshot::build(specs, setup.routes, &http);
    snap.publish(Api::new(DEFAULT_API, AuthMode::Public));
    snap.circuit = setup.circuit;
    snap.monthly_spend_pct = setup.monthly_spend_pct;
    gw.swap(snap);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, pipeline::app(gw)).await;
    });
    Env {
        emu,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

fn rule(fault: Fault, model: &str) -> FaultRule {
    FaultRule {
        fault,
        model: Some(model.into()),
        vendor: None,
        times: 1,
        for_ms: None,
    }
}

fn times(mut r: FaultRule, n: usize) -> FaultRule {
    r.times = n;
    r
}

fn status(code: u16, retry_after: Option<u64>) -> Fault {
    let mut f = Fault::status(code);
    if let Fault::Status { retry_after: r, .. } = &mut f {
        *r = retry_after;
    }
    f
}

fn coded(code: u16, what: &str, message: &str) -> Fault {
    Fault::Status {
        status: code,
        retry_after: None,
        message: Some(message.into()),
        code: Some(what.into()),
        error_type: None,
        retry_after_ms: None,
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "one two three four five six seven eight"}]})
}

fn stream(model: &str) -> Value {
    let mut b = chat(model);
    b["stream"] = json!(true);
    b
}

impl Env {
    async fn post(&self, body: Value) -> reqwest::Response {
        self.post_with(body, &[]).await
    }

    async fn post_with(&self, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Chat requests the emulator saw, by upstream model.
    fn seen(&self) -> Vec<(String, u64)> {
        self.emu
            .requests()
            .iter()
            .filter(|r| !r.path.starts_with("/_emulator"))
            .map(|r| (upstream_model(r), r.at_ms))
            .collect()
    }

    fn seen_models(&self) -> Vec<String> {
        self.seen().into_iter().map(|(m, _)| m).collect()
    }
}

fn upstream_model(r: &Recorded) -> String {
    if let Some(m) = r.body["model"].as_str() {
        return m.to_string();
    }
    // Gemini names the model in the path.
    r.path
        .split("/models/")
        .nth(1)
        .and_then(|p| p.split(':').next())
        .unwrap_or_default()
        .to_string()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

/// The streamed answer's text (OpenAI chunks), and whether it ended with `[DONE]`.
fn streamed_text(body: &str) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for d in sse_data(body) {
        if d == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap_or(Value::Null);
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    (text, done)
}

fn stream_error(body: &str) -> Option<Value> {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("error").is_some())
}

// --- retries ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_wait() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(status(429, Some(1)), "gpt-4o"));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-attempts").as_deref(), Some("2"));
    let seen = env.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].1 - seen[0].1;
    assert!((1_000..1_400).contains(&gap), "waited {gap} ms");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_then_falls_back_when_persistent() {
    let env = start(Setup::new(vec![
        with_fallbacks(
            route("m", "openai", "gpt-4o"),
            Fallbacks {
                rate_limited: vec!["b".into()],
                ..Default::default()
            },
        ),
        route("b", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu
        .push_fault(times(rule(status(429, None), "gpt-4o"), 5));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-fallback-reason").as_deref(),
        Some("rate_limited")
    );
    assert_eq!(header(&r, "x-gateway-provider").as_deref(), Some("claude"));
    let seen = env.seen();
    let models: Vec<_> = seen.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(models, ["gpt-4o", "gpt-4o", "claude-sonnet-4-5"]);
    // Equal jitter on a 200 ms base: the retry waited 100–200 ms.
    let gap = seen[1].1 - seen[0].1;
    assert!((100..=260).contains(&gap), "backoff {gap} ms");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_long_retry_after_falls_over_at_once_and_reaches_the_consumer_when_alone() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(status(429, Some(30)), "gpt-4o"));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("30"));
    assert_eq!(env.seen().len(), 1);
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_500_once_is_retried_on_the_same_target() {
    let env = start(Setup::new(vec![route("m", "claude", "claude-sonnet-4-5")])).await;
    env.emu
        .push_fault(rule(status(500, None), "claude-sonnet-4-5"));
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-provider").as_deref(), Some("claude"));
    assert_eq!(
        env.seen_models(),
        ["claude-sonnet-4-5", "claude-sonnet-4-5"]
    );
}

#[tokio::test]
async fn a_persistent_503_is_tried_twice_then_the_5xx_chain_answers() {
    let env = start(Setup::new(vec![
        with_fallbacks(
            route("m", "claude", "claude-sonnet-4-5"),
            Fallbacks {
                server_error: vec!["flash".into()],
                ..Default::default()
            },
        ),
        route("flash", "gem", "gemini-2.0-flash"),
    ]))
    .await;
    env.emu
        .push_fault(times(rule(status(503, None), "claude-sonnet-4-5"), 100));
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-fallback-reason").as_deref(),
        Some("server_error")
    );
    let v: Value = r.json().await.unwrap_or(Value::Null);
    // The response names the model that actually answered.
    assert_eq!(v["model"], "gemini-2.0-flash");
    assert_eq!(
        env.seen_models(),
        ["claude-sonnet-4-5", "claude-sonnet-4-5", "gemini-2.0-flash"]
    );
}

#[tokio::test]
async fn a_connection_reset_before_any_byte_is_retried() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(Fault::Reset, "gpt-4o"));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    let seen = env.emu.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].outcome, Outcome::Faulted);
    assert_eq!(seen[1].outcome, Outcome::Completed);
}

#[tokio::test]
async fn no_response_at_all_times_out_and_falls_back() {
    let env = start(Setup::new(vec![
        with_fallbacks(route("m", "short", "gpt-4o"), any(&["b"])),
        route("b", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu.push_fault(rule(Fault::Hang, "gpt-4o"));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-fallback-reason").as_deref(),
        Some("timeout")
    );
    // Timeouts move on without a retry on the same target.
    assert_eq!(env.seen_models(), ["gpt-4o", "claude-sonnet-4-5"]);
    let elapsed = t.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // The hung upstream request was abandoned, not left running.
    let first = env.emu.wait_for_outcome(0, Duration::from_secs(1)).await;
    assert_eq!(first.map(|r| r.outcome), Some(Outcome::Cancelled));
}

#[tokio::test]
async fn a_primary_down_for_a_while_is_cut_off_then_gets_traffic_back_soon_after_recovery() {
    // The default policy (10 s open, probes, back within 30 s of recovery) is shown with
    // paused time in router::health; here the same path runs over HTTP on a shorter clock.
    let circuit = CircuitPolicy {
        consecutive_failures: 3,
        open_for: Duration::from_millis(200),
        max_open_for: Duration::from_millis(400),
        ..Default::default()
    };
    let health = Arc::new(Health::default());
    let mut setup = Setup::new(vec![
        with_fallbacks(route("m", "openai", "gpt-4o"), any(&["b"])),
        route("b", "claude", "claude-sonnet-4-5"),
    ]);
    setup.health = health.clone();
    setup.circuit = circuit;
    let env = start(setup).await;
    let down = Duration::from_millis(1_500);
    env.emu.push_fault(FaultRule {
        fault: status(503, None),
        model: Some("gpt-4o".into()),
        vendor: None,
        times: 1,
        for_ms: Some(down.as_millis() as u64),
    });
    let start = Instant::now();
    let mut back_at = None;
    while start.elapsed() < Duration::from_millis(3_000) {
        let r = env.post(chat("m")).await;
        assert_eq!(r.status(), 200, "the consumer never sees the outage");
        let served_by = header(&r, "x-gateway-provider");
        if start.elapsed() > down && served_by.as_deref() == Some("openai") && back_at.is_none() {
            back_at = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let back_at = back_at.unwrap_or_else(|| panic!("traffic never returned to the primary"));
    assert!(
        back_at < down + Duration::from_millis(800),
        "back after {back_at:?}"
    );
    // While down, the open circuit kept the primary from being hammered: the requests that
    // reached it are the first failures and the half-open probes, not one per request.
    let during: Vec<_> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.at_ms < down.as_millis() as u64 && upstream_model(r) == "gpt-4o")
        .collect();
    let total = env.emu.requests().len();
    assert!(
        during.len() <= 12,
        "{} primary attempts while down",
        during.len()
    );
    assert!(total > 40, "only {total} requests were made");
    let report = health.report(tokio::time::Instant::now());
    let primary = report.iter().find(|r| r.model == "gpt-4o");
    assert!(primary.is_some_and(|p| p.errors >= 3), "{report:?}");
}

#[tokio::test]
async fn routing_rules_redirect_by_metadata_header_and_spend_first_match_wins() {
    let mut m = route("m", "openai", "gpt-4o");
    m.rules = serde_json::from_value(json!([
        {"name": "batch", "when": {"metadata": {"tier": "batch"}}, "then": {"model": "b"}},
        {"name": "saver", "when": {"monthly_spend_pct": {"gte": 80}}, "then": {"targets": [{"provider": "gem", "model": "gemini-2.0-flash"}]}}
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut setup = Setup::new(vec![m, route("b", "claude", "claude-sonnet-4-5")]);
    setup.monthly_spend_pct = Some(85.0);
    let env = start(setup).await;
    let batch = env
        .post_with(chat("m"), &[("x-gateway-meta-tier", "batch")])
        .await;
    assert_eq!(header(&batch, "x-gateway-rule").as_deref(), Some("batch"));
    assert_eq!(
        header(&batch, "x-gateway-provider").as_deref(),
        Some("claude")
    );
    let plain = env.post(chat("m")).await;
    assert_eq!(header(&plain, "x-gateway-rule").as_deref(), Some("saver"));
    assert_eq!(header(&plain, "x-gateway-provider").as_deref(), Some("gem"));
    assert_eq!(env.seen_models(), ["claude-sonnet-4-5", "gemini-2.0-flash"]);
}

#[tokio::test]
async fn weighted_targets_share_the_traffic_by_weight() {
    // Two providers on one upstream stand for two keys of one account.
    let mut m = Route::new(
        "m",
        vec![
            Target {
                weight: 3,
                ..Target::new("openai", "gpt-4o")
            },
            Target::new("claude", "claude-sonnet-4-5"),
        ],
    );
    m.strategy = router::Strategy::Weighted;
    let env = start(Setup::new(vec![m])).await;
    let mut first = 0;
    let n = 200;
    for _ in 0..n {
        let r = env.post(chat("m")).await;
        if header(&r, "x-gateway-provider").as_deref() == Some("openai") {
            first += 1;
        }
    }
    // 3:1 → 150 of 200 expected; 5 standard deviations either side.
    assert!(
        (120..=180).contains(&first),
        "{first} of {n} to the weight-3 target"
    );
}

// --- refusals --------------------------------------------------------------------------------

#[tokio::test]
async fn context_length_exceeded_goes_to_the_context_length_chain() {
    let env = start(Setup::new(vec![
        with_fallbacks(
            route("m", "openai", "gpt-4o"),
            Fallbacks {
                context_length: vec!["long".into()],
                any: vec!["other".into()],
                ..Default::default()
            },
        ),
        route("long", "gem", "gemini-1.5-pro"),
        route("other", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu.push_fault(rule(
        coded(
            400,
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens.",
        ),
        "gpt-4o",
    ));
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-fallback-reason").as_deref(),
        Some("context_length")
    );
    assert_eq!(env.seen_models(), ["gpt-4o", "gemini-1.5-pro"]);
}

#[tokio::test]
async fn a_content_policy_refusal_is_not_retried_and_its_reason_reaches_the_caller() {
    let env = start(Setup::new(vec![
        with_fallbacks(route("m", "openai", "gpt-4o"), any(&["other"])),
        route("other", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu.push_fault(rule(
        coded(
            400,
            "content_policy_violation",
            "Your request was rejected by the safety system.",
        ),
        "gpt-4o",
    ));
    let t = Instant::now();
    let r = env.post(chat("m")).await;
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "content_filter");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("safety system"), "{msg}");
    assert_eq!(env.seen_models(), ["gpt-4o"]);
}

#[tokio::test]
async fn the_consumer_fallback_header_is_used_after_the_route_chain_and_refuses_urls() {
    let env = start(Setup::new(vec![
        route("m", "openai", "gpt-4o"),
        route("b", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu
        .push_fault(times(rule(status(503, None), "gpt-4o"), 10));
    let r = env
        .post_with(chat("m"), &[("x-gateway-fallback", "b")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-provider").as_deref(), Some("claude"));
    let bad = env
        .post_with(
            chat("m"),
            &[("x-gateway-fallback", "http://evil.example/v1")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    let v: Value = bad.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["param"], "x-gateway-fallback");
}

#[tokio::test]
async fn an_anthropic_content_refusal_is_a_content_filter_error_too() {
    let env = start(Setup::new(vec![
        with_fallbacks(route("m", "claude", "claude-sonnet-4-5"), any(&["other"])),
        route("other", "openai", "gpt-4o"),
    ]))
    .await;
    // No message: the emulator uses Anthropic's own wording for the code.
    let fault = Fault::Status {
        status: 400,
        retry_after: None,
        message: None,
        code: Some("content_filter".into()),
        error_type: None,
        retry_after_ms: None,
    };
    env.emu.push_fault(rule(fault, "claude-sonnet-4-5"));
    let r = env.post(chat("m")).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "content_filter", "{v}");
    assert_eq!(env.seen_models(), ["claude-sonnet-4-5"]);
}

// --- streams ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_first_token_fails_over_within_the_first_token_timeout() {
    let mut m = with_fallbacks(route("m", "openai", "gpt-4o"), any(&["b"]));
    m.policy.timeouts.first_token_ms = 500;
    let env = start(Setup::new(vec![
        m,
        route("b", "claude", "claude-sonnet-4-5"),
    ]))
    .await;
    env.emu
        .push_fault(rule(Fault::SlowFirstToken { ms: 5_000 }, "gpt-4o"));
    let t = Instant::now();
    let r = env.post(stream("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-gateway-fallback-reason").as_deref(),
        Some("timeout")
    );
    let (text, done) = streamed_text(&r.text().await.unwrap_or_default());
    assert!(done);
    assert!(!text.is_empty());
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    assert_eq!(env.seen_models(), ["gpt-4o", "claude-sonnet-4-5"]);
    let first = env.emu.wait_for_outcome(0, Duration::from_secs(1)).await;
    assert_eq!(first.map(|r| r.outcome), Some(Outcome::Cancelled));
}

#[tokio::test]
async fn a_slow_first_token_gets_keep_alive_comments_then_the_answer() {
    let mut setup = Setup::new(vec![route("m", "openai", "gpt-4o")]);
    setup.keepalive = Duration::from_millis(200);
    let env = start(setup).await;
    env.emu
        .push_fault(rule(Fault::SlowFirstToken { ms: 1_000 }, "gpt-4o"));
    let r = env.post(stream("m")).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap_or_default();
    let comments = body.matches(": keep-alive\n\n").count();
    assert!((3..=6).contains(&comments), "{comments} comments in {body}");
    let (text, done) = streamed_text(&body);
    assert!(done && !text.is_empty(), "{body}");
}

#[tokio::test]
async fn a_stream_cut_mid_answer_continues_on_a_prefill_fallback() {
    let mut b = route("b", "claude", "claude-sonnet-4-5");
    b.caps = Capabilities {
        prefill: Some(true),
        ..Default::default()
    };
    let env = start(Setup::new(vec![
        with_fallbacks(route("m", "openai", "gpt-4o"), any(&["b"])),
        b,
    ]))
    .await;
    env.emu
        .push_fault(rule(Fault::CutMidStream { after_events: 4 }, "gpt-4o"));
    let r = env.post(stream("m")).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap_or_default();
    let (text, done) = streamed_text(&body);
    assert!(done, "{body}");
    assert!(stream_error(&body).is_none(), "{body}");
    let seen = env.emu.requests();
    assert_eq!(seen.len(), 2);
    // The fallback got the partial answer as a prefill: the conversation ends with it.
    let msgs = seen[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["role"], "assistant", "{msgs:?}");
    let partial = last["content"].to_string();
    assert!(!partial.is_empty());
    assert!(text.len() > 10, "{text}");
}

#[tokio::test]
async fn a_fallback_that_rejects_prefill_gets_a_continuation_prompt() {
    let env = start(Setup::new(vec![
        with_fallbacks(route("m", "claude", "claude-sonnet-4-5"), any(&["b"])),
        // No `prefill: true` in the catalogue: the gateway must not send one.
        route("b", "openai", "gpt-4o"),
    ]))
    .await;
    env.emu.push_fault(rule(
        Fault::CutMidStream { after_events: 5 },
        "claude-sonnet-4-5",
    ));
    env.emu.push_fault(rule(Fault::RejectPrefill, "gpt-4o"));
    let r = env.post(stream("m")).await;
    let body = r.text().await.unwrap_or_default();
    let (_, done) = streamed_text(&body);
    assert!(done, "{body}");
    let seen = env.emu.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let msgs = seen[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = msgs.len();
    assert!(n >= 3);
    assert_eq!(msgs[n - 2]["role"], "assistant");
    assert_eq!(msgs[n - 1]["role"], "user");
    assert!(
        msgs[n - 1]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Continue")),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn a_cut_stream_without_a_fallback_ends_with_an_error_event_not_done() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu
        .push_fault(rule(Fault::CutMidStream { after_events: 3 }, "gpt-4o"));
    let body = env.post(stream("m")).await.text().await.unwrap_or_default();
    let (_, done) = streamed_text(&body);
    assert!(!done, "{body}");
    assert!(stream_error(&body).is_some(), "{body}");
}

#[tokio::test]
async fn a_stalled_stream_is_detected_within_the_idle_timeout() {
    let mut m = route("m", "openai", "gpt-4o");
    m.policy.timeouts.idle_ms = 400;
    let env = start(Setup::new(vec![m])).await;
    env.emu.push_fault(rule(
        Fault::Stall {
            after_events: 3,
            ms: 10_000,
        },
        "gpt-4o",
    ));
    let t = Instant::now();
    let body = env.post(stream("m")).await.text().await.unwrap_or_default();
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    let err = stream_error(&body).unwrap_or(Value::Null);
    assert_eq!(err["error"]["code"], "upstream_timeout", "{body}");
    assert!(!streamed_text(&body).1);
    let first = env.emu.wait_for_outcome(0, Duration::from_secs(1)).await;
    assert_eq!(first.map(|r| r.outcome), Some(Outcome::Cancelled));
}

#[tokio::test]
async fn a_malformed_chunk_never_reaches_the_consumer() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu
        .push_fault(rule(Fault::MalformedChunk { after_events: 2 }, "gpt-4o"));
    let body = env.post(stream("m")).await.text().await.unwrap_or_default();
    for d in sse_data(&body) {
        assert!(
            d == "[DONE]" || serde_json::from_str::<Value>(&d).is_ok(),
            "garbage passed on: {d}"
        );
    }
    // Either skipped (the complete answer) or a clean error event; never a silent success.
    let (text, done) = streamed_text(&body);
    assert!(done != stream_error(&body).is_some(), "{body}");
    if done {
        assert_eq!(text, clean_answer(&env).await);
    }
}

#[tokio::test]
async fn a_stream_without_done_is_finalised_promptly() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(Fault::NoDone, "gpt-4o"));
    let t = Instant::now();
    let body = env.post(stream("m")).await.text().await.unwrap_or_default();
    assert!(t.elapsed() < Duration::from_millis(500));
    let (text, done) = streamed_text(&body);
    assert!(done, "{body}");
    assert_eq!(text, clean_answer(&env).await);
}

/// What a stream for `m` says without any fault.
async fn clean_answer(env: &Env) -> String {
    let body = env.post(stream("m")).await.text().await.unwrap_or_default();
    let (text, done) = streamed_text(&body);
    assert!(done, "{body}");
    text
}

// --- client disconnects ----------------------------------------------------------------------

async fn hang_up_after(env: &Env, body: Value, after: Duration) {
    let client = env.client.clone();
    let url = format!("{}/v1/chat/completions", env.url);
    let req = tokio::spawn(async move {
        if let Ok(r) = client.post(url).json(&body).send().await {
            let mut r = r;
            while let Ok(Some(_)) = r.chunk().await {}
        }
    });
    tokio::time::sleep(after).await;
    req.abort();
}

async fn assert_cancelled_within_a_second(env: &Env) {
    let t = Instant::now();
    let rec = env.emu.wait_for_outcome(0, Duration::from_secs(2)).await;
    assert_eq!(rec.map(|r| r.outcome), Some(Outcome::Cancelled));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streaming_request_cancels_the_upstream_call() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(Fault::Hang, "gpt-4o"));
    hang_up_after(&env, chat("m"), Duration::from_millis(300)).await;
    assert_cancelled_within_a_second(&env).await;
}

#[tokio::test]
async fn a_client_that_leaves_while_waiting_for_the_first_token_cancels_the_upstream_call() {
    let mut setup = Setup::new(vec![route("m", "openai", "gpt-4o")]);
    setup.keepalive = Duration::from_millis(100);
    let env = start(setup).await;
    env.emu
        .push_fault(rule(Fault::SlowFirstToken { ms: 20_000 }, "gpt-4o"));
    hang_up_after(&env, stream("m"), Duration::from_millis(500)).await;
    assert_cancelled_within_a_second(&env).await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_call() {
    let env = start(Setup::new(vec![route("m", "openai", "gpt-4o")])).await;
    env.emu.push_fault(rule(
        Fault::Stall {
            after_events: 3,
            ms: 20_000,
        },
        "gpt-4o",
    ));
    hang_up_after(&env, stream("m"), Duration::from_millis(300)).await;
    assert_cancelled_within_a_second(&env).await;
}
