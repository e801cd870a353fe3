use std::collections::HashMap;
use std::sync::Mutex;

use proptest::prelude::*;
use providers::ProviderKind;

use super::*;
use crate::caps::Capabilities;
use crate::fallback::Fallbacks;
use crate::health::Health;
use crate::policy::Timeouts;
use crate::retry::RetryPolicy;
use crate::table::{ProviderEntry, Route};

fn entry(n: &str) -> ProviderEntry {
    ProviderEntry {
        name: n.into(),
        kind: ProviderKind::OpenAi,
        models: vec![],
        priority: 0,
    }
}

fn route(name: &str, provider: &str, fallbacks: Fallbacks) -> Route {
    let mut r = Route::new(name, vec![Target::new(provider, format!("{name}-up"))]);
    r.fallbacks = fallbacks;
    r
}

fn table(routes: Vec<Route>) -> RoutingTable {
    RoutingTable::new(
        ["a", "b", "c", "d"].into_iter().map(entry).collect(),
        routes,
    )
}

/// The standard table: `smart` on a, `backup` on b, `big` on c, `local` on d.
fn std_table(fallbacks: Fallbacks) -> RoutingTable {
    table(vec![
        route("smart", "a", fallbacks),
        route("backup", "b", Fallbacks::default()),
        route("big", "c", Fallbacks::default()),
        route("local", "d", Fallbacks::default()),
    ])
}

/// A provider's scripted answers, in call order; the last one repeats.
type Script = HashMap<&'static str, Vec<Result<(), (ErrorClass, Option<u64>)>>>;

struct Calls {
    at: Mutex<Vec<(String, Instant)>>,
}

impl Calls {
    fn names(&self) -> Vec<String> {
        self.at
            .lock()
            .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    fn gaps_ms(&self) -> Vec<u128> {
        let v = self.at.lock().map(|v| v.clone()).unwrap_or_default();
        v.windows(2)
            .map(|w| (w[1].1 - w[0].1).as_millis())
            .collect()
    }
}

async fn run_with(
    t: &RoutingTable,
    model: &str,
    extra: &[String],
    needs: Needs,
    script: Script,
    health: &Health,
) -> (Result<Outcome<String>, Failure>, Calls) {
    let calls = Calls {
        at: Mutex::new(Vec::new()),
    };
    let counts: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    let plan = Plan {
        needs,
        extra_fallbacks: extra,
        ..Plan::new(model)
    };
    let r = execute(t, health, &plan, |target: Target, _deadline, _caps| {
        let n = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(target.provider.clone()).or_default();
            *n += 1;
            *n
        };
        calls
            .at
            .lock()
            .unwrap()
            .push((target.provider.clone(), Instant::now()));
        let answer = script
            .get(target.provider.as_str())
            .and_then(|s| s.get(n - 1).or(s.last()).cloned())
            .unwrap_or(Ok(()));
        async move {
            match answer {
                Ok(()) => Ok(target.provider.clone()),
                Err((class, ra)) => {
                    let mut e = ProviderError::new(&target.provider, class, "scripted");
                    e.status = Some(match class {
                        ErrorClass::RateLimited => 429,
                        ErrorClass::Server => 503,
                        _ => 400,
                    });
                    Err(e.with_retry_after(ra.map(Duration::from_millis)))
                }
            }
        }
    })
    .await;
    (r, calls)
}

async fn run(t: &RoutingTable, script: Script) -> (Result<Outcome<String>, Failure>, Calls) {
    run_with(
        t,
        "smart",
        &[],
        Needs::default(),
        script,
        &Health::default(),
    )
    .await
}

fn fail(class: ErrorClass) -> Vec<Result<(), (ErrorClass, Option<u64>)>> {
    vec![Err((class, None))]
}

fn served(r: &Result<Outcome<String>, Failure>) -> Option<&str> {
    r.as_ref().ok().map(|o| o.value.as_str())
}

#[tokio::test(start_paused = true)]
async fn a_500_once_is_retried_on_the_same_target_after_a_backoff() {
    let t = std_table(Fallbacks::default());
    let script = Script::from([("a", vec![Err((ErrorClass::Server, None)), Ok(())])]);
    let (r, calls) = run(&t, script).await;
    assert_eq!(served(&r), Some("a"));
    assert_eq!(calls.names(), ["a", "a"]);
    let gap = calls.gaps_ms()[0];
    assert!((100..=200).contains(&gap), "backoff {gap} ms");
    let o = r.unwrap();
    assert_eq!(o.attempts.len(), 2);
    assert_eq!(o.attempts[1].why, Why::Retry);
    assert_eq!(o.attempts[0].status, Some(503));
    assert_eq!(o.fallback_reason, Some(ErrorClass::Server));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_for_when_short() {
    let t = std_table(Fallbacks::default());
    let script = Script::from([(
        "a",
        vec![Err((ErrorClass::RateLimited, Some(1_500))), Ok(())],
    )]);
    let (r, calls) = run(&t, script).await;
    assert_eq!(served(&r), Some("a"));
    assert_eq!(calls.gaps_ms(), [1_500]);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_falls_over_at_once() {
    let t = std_table(Fallbacks {
        rate_limited: vec!["backup".into()],
        ..Default::default()
    });
    let script = Script::from([("a", vec![Err((ErrorClass::RateLimited, Some(60_000)))])]);
    let (r, calls) = run(&t, script).await;
    assert_eq!(served(&r), Some("b"));
    assert_eq!(calls.names(), ["a", "b"]);
    assert_eq!(calls.gaps_ms(), [0]);
    assert_eq!(r.unwrap().fallback_reason, Some(ErrorClass::RateLimited));
}

#[tokio::test(start_paused = true)]
async fn a_persistent_503_is_retried_within_bounds_then_falls_back() {
    let t = std_table(Fallbacks {
        server_error: vec!["backup".into()],
        ..Default::default()
    });
    let script = Script::from([("a", fail(ErrorClass::Server))]);
    let (r, calls) = run(&t, script).await;
    assert_eq!(served(&r), Some("b"));
    // Two attempts on a (the default policy), one on b.
    assert_eq!(calls.names(), ["a", "a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn context_length_uses_its_own_chain_and_skips_any() {
    let t = std_table(Fallbacks {
        any: vec!["backup".into()],
        context_length: vec!["big".into()],
        ..Default::default()
    });
    let (r, calls) = run(&t, Script::from([("a", fail(ErrorClass::ContextLength))])).await;
    assert_eq!(served(&r), Some("c"));
    assert_eq!(calls.names(), ["a", "c"]);
}

#[tokio::test(start_paused = true)]
async fn refusals_are_not_retried_and_reach_the_caller() {
    for class in [ErrorClass::BadRequest, ErrorClass::ContentFilter] {
        let t = std_table(Fallbacks {
            any: vec!["backup".into()],
            ..Default::default()
        });
        let (r, calls) = run(&t, Script::from([("a", fail(class))])).await;
        assert_eq!(calls.names(), ["a"], "{class:?}");
        let err = r.err().map(|f| f.error.to_string()).unwrap_or_default();
        assert!(err.contains("scripted"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_consumer_header_list_comes_after_the_route_chain() {
    let t = std_table(Fallbacks {
        any: vec!["backup".into()],
        ..Default::default()
    });
    let script = Script::from([
        ("a", fail(ErrorClass::Timeout)),
        ("b", fail(ErrorClass::Timeout)),
    ]);
    let extra = vec!["local".to_string()];
    let (r, calls) = run_with(
        &t,
        "smart",
        &extra,
        Needs::default(),
        script,
        &Health::default(),
    )
    .await;
    assert_eq!(served(&r), Some("d"));
    assert_eq!(calls.names(), ["a", "b", "d"]);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_cannot_serve_the_request_is_skipped() {
    let mut small = route("backup", "b", Fallbacks::default());
    small.caps = Capabilities {
        context_window: Some(1_000),
        ..Default::default()
    };
    let mut no_tools = route("big", "c", Fallbacks::default());
    no_tools.caps.tools = Some(false);
    let t = table(vec![
        route(
            "smart",
            "a",
            Fallbacks {
                any: vec!["backup".into(), "big".into(), "local".into()],
                ..Default::default()
            },
        ),
        small,
        no_tools,
        route("local", "d", Fallbacks::default()),
    ]);
    let needs = Needs {
        tools: true,
        est_input_tokens: 5_000,
        ..Default::default()
    };
    let (r, calls) = run_with(
        &t,
        "smart",
        &[],
        needs,
        Script::from([("a", fail(ErrorClass::Timeout))]),
        &Health::default(),
    )
    .await;
    assert_eq!(served(&r), Some("d"));
    assert_eq!(calls.names(), ["a", "d"]);
    let o = r.unwrap();
    let unfit: Vec<_> = o
        .attempts
        .iter()
        .filter(|a| a.why == Why::Unfit)
        .map(|a| a.provider.as_str())
        .collect();
    assert_eq!(unfit, ["b", "c"]);
    let reasons: Vec<_> = o.attempts.iter().filter_map(|a| a.skipped).collect();
    assert_eq!(
        reasons,
        [
            "context window too small for the request",
            "does not support tools"
        ]
    );
}

/// A health whose circuit for `provider`'s `smart-up` has opened.
fn open_circuit(provider: &str) -> Health {
    let h = Health::default();
    let t = Target::new(provider, "smart-up");
    for _ in 0..10 {
        h.record(
            &t,
            Duration::from_millis(5),
            Some(ErrorClass::Server),
            Instant::now(),
        );
    }
    h
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_sends_traffic_to_the_fallback_without_a_call() {
    let t = std_table(Fallbacks {
        server_error: vec!["backup".into()],
        ..Default::default()
    });
    let (r, calls) = run_with(
        &t,
        "smart",
        &[],
        Needs::default(),
        Script::new(),
        &open_circuit("a"),
    )
    .await;
    assert_eq!(served(&r), Some("b"));
    assert_eq!(calls.names(), ["b"]);
    assert_eq!(r.unwrap().attempts[0].why, Why::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_every_wait() {
    let mut smart = route(
        "smart",
        "a",
        Fallbacks {
            any: vec!["backup".into()],
            ..Default::default()
        },
    );
    smart.policy.timeouts = Timeouts {
        total_ms: 1_000,
        ..Default::default()
    };
    smart.policy.retry = RetryPolicy {
        attempts: 5,
        backoff_ms: 400,
        max_backoff_ms: 400,
        ..Default::default()
    };
    let t = table(vec![smart, route("backup", "b", Fallbacks::default())]);
    let start = Instant::now();
    let (r, calls) = run(
        &t,
        Script::from([
            ("a", fail(ErrorClass::Server)),
            ("b", fail(ErrorClass::Server)),
        ]),
    )
    .await;
    assert!(r.is_err());
    // No wait is started that would end past the deadline; both targets got their turn.
    assert!(start.elapsed() < Duration::from_millis(1_000));
    let names = calls.names();
    assert!(names.contains(&"b".to_string()), "{names:?}");
    assert!(names.len() >= 3, "{names:?}");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_ends_at_the_deadline() {
    let mut smart = route("smart", "a", Fallbacks::default());
    smart.policy.timeouts.total_ms = 2_000;
    let t = table(vec![smart]);
    let plan = Plan::new("smart");
    let start = Instant::now();
    let r: Result<Outcome<()>, Failure> =
        execute(&t, &Health::default(), &plan, |_t, _d, _c| async {
            std::future::pending::<Result<(), ProviderError>>().await
        })
        .await;
    assert_eq!(start.elapsed(), Duration::from_millis(2_000));
    let f = r.err().map(|f| f.error.to_string()).unwrap_or_default();
    assert!(f.contains("deadline"), "{f}");
}

#[tokio::test(start_paused = true)]
async fn fallback_cycles_visit_each_target_once() {
    let t = table(vec![
        route(
            "smart",
            "a",
            Fallbacks {
                any: vec!["backup".into(), "smart".into()],
                ..Default::default()
            },
        ),
        route(
            "backup",
            "b",
            Fallbacks {
                any: vec!["smart".into()],
                ..Default::default()
            },
        ),
    ]);
    let extra = vec!["backup".to_string(), "a/smart-up".to_string()];
    let (r, calls) = run_with(
        &t,
        "smart",
        &extra,
        Needs::default(),
        Script::from([
            ("a", fail(ErrorClass::Timeout)),
            ("b", fail(ErrorClass::Timeout)),
        ]),
        &Health::default(),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(calls.names(), ["a", "b"]);
}

#[test]
fn fallback_keys_accept_status_shorthands() {
    let f: Fallbacks =
        serde_json::from_str(r#"{"429":["x"],"5xx":["y"],"timeout":["z"],"any":["w"]}"#).unwrap();
    assert_eq!(f.for_class(ErrorClass::RateLimited), ["x"]);
    assert_eq!(f.for_class(ErrorClass::Server), ["y"]);
    assert_eq!(f.for_class(ErrorClass::Timeout), ["z"]);
    assert_eq!(f.for_class(ErrorClass::Auth), ["w"]);
    assert!(f.for_class(ErrorClass::BadRequest).is_empty());
    assert!(serde_json::from_str::<Fallbacks>(r#"{"4xx":["x"]}"#).is_err());
}

fn class_strategy() -> impl Strategy<Value = ErrorClass> {
    prop::sample::select(vec![
        ErrorClass::RateLimited,
        ErrorClass::Server,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::ContextLength,
        ErrorClass::Auth,
        ErrorClass::BadRequest,
        ErrorClass::NotFound,
        ErrorClass::ContentFilter,
        ErrorClass::StreamBroken,
    ])
}

const NAMES: [&str; 5] = ["m0", "m1", "m2", "m3", "m4"];
const PROVIDERS: [&str; 4] = ["a", "b", "c", "d"];

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(NAMES.to_vec()), 0..6)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

prop_compose! {
    fn any_route(name: &'static str)(
        providers in prop::collection::vec(prop::sample::select(PROVIDERS.to_vec()), 1..4),
        models in prop::collection::vec(prop::sample::select(vec!["x", "y"]), 3),
        any in names(), rate in names(), server in names(), timeout in names(),
        context in names(),
        attempts in 1u32..=5, hops in 1u32..=8,
    ) -> Route {
        let targets = providers.iter().zip(&models).map(|(p, m)| Target::new(*p, *m)).collect();
        let mut r = Route::new(name, targets);
        r.fallbacks = Fallbacks {
            any, rate_limited: rate, server_error: server, timeout, context_length: context,
            ..Default::default()
        };
        r.policy.retry.attempts = attempts;
        r.policy.retry.max_retry_after_ms = 60_000;
        r.policy.max_hops = hops;
        r
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the configuration and however targets fail, a request makes a bounded number
    /// of upstream calls and never comes back to a target it left.
    #[test]
    fn attempts_are_bounded_and_no_target_is_visited_twice(
        routes in (any_route("m0"), any_route("m1"), any_route("m2"), any_route("m3"), any_route("m4")),
        failures in prop::collection::vec(class_strategy(), 1..40),
        extra in names(),
    ) {
        let (r0, r1, r2, r3, r4) = routes;
        let hops = r0.policy.max_hops as usize;
        let t = table(vec![r0, r1, r2, r3, r4]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let seen: Mutex<Vec<Target>> = Mutex::new(Vec::new());
        let n = Mutex::new(0usize);
        let plan = Plan { extra_fallbacks: &extra, ..Plan::new("m0") };
        let r: Result<Outcome<()>, Failure> = rt.block_on(execute(&t, &Health::default(), &plan, |target, _, _| {
            let i = { let mut n = n.lock().unwrap(); *n += 1; *n - 1 };
            seen.lock().unwrap().push(target.clone());
            let class = failures.get(i).copied();
            async move {
                match class {
                    Some(c) => Err(ProviderError::new(&target.provider, c, "x")
                        .with_retry_after(Some(Duration::from_millis(10)))),
                    None => Ok(()),
                }
            }
        }));
        let seen = seen.into_inner().unwrap();
        prop_assert!(seen.len() <= hops * crate::retry::MAX_ATTEMPTS_PER_TARGET as usize);
        // Calls to one target are consecutive (its retries); after leaving it, never again.
        let mut left: Vec<&Target> = Vec::new();
        for w in seen.windows(2) {
            if !w[0].same(&w[1]) {
                left.push(&w[0]);
            }
            prop_assert!(!left.iter().any(|t| t.same(&w[1])), "revisited {:?} in {:?}", w[1], seen);
        }
        let distinct = {
            let mut d: Vec<&Target> = Vec::new();
            for s in &seen { if !d.iter().any(|t| t.same(s)) { d.push(s); } }
            d.len()
        };
        prop_assert!(distinct <= hops, "{distinct} targets > {hops} hops");
        let called = match &r { Ok(o) => o.attempts.iter().filter(|a| a.called()).count(),
                                Err(f) => f.attempts.iter().filter(|a| a.called()).count() };
        prop_assert_eq!(called, seen.len());
    }
}

fn ctx_with<'a>(
    tools: bool,
    meta: &'a dyn crate::rules::Metadata,
) -> crate::rules::RuleContext<'a> {
    crate::rules::RuleContext {
        est_input_tokens: 10,
        tools,
        json: false,
        plan: None,
        metadata: meta,
        now: jiff::Timestamp::UNIX_EPOCH,
        monthly_spend_pct: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_matching_rule_redirects_before_any_target_is_tried() {
    let mut smart = route("smart", "a", Fallbacks::default());
    smart.rules = serde_json::from_value(serde_json::json!([
        {"name": "batch", "when": {"metadata": {"tier": "batch"}}, "then": {"targets": [{"provider": "d", "model": "cheap"}]}},
        {"name": "tools", "when": {"tools": true}, "then": {"model": "big"}},
        {"when": {"tools": true}, "then": {"model": "backup"}}
    ]))
    .unwrap();
    let t = table(vec![
        smart,
        route("backup", "b", Fallbacks::default()),
        route("big", "c", Fallbacks::default()),
    ]);
    let h = Health::default();
    let none: [(&str, &str); 0] = [];
    let batch = [("x-gateway-meta-tier", "batch")];
    let cases: [(bool, &dyn crate::rules::Metadata, &str, Option<&str>); 3] = [
        (true, &none, "c", Some("tools")),
        (false, &none, "a", None),
        (true, &batch, "d", Some("batch")),
    ];
    for (tools, meta, want, rule) in cases {
        let ctx = ctx_with(tools, meta);
        let plan = Plan {
            context: Some(&ctx),
            ..Plan::new("smart")
        };
        let o = execute(&t, &h, &plan, |target: Target, _, _| async move {
            Ok::<_, ProviderError>(target.provider.clone())
        })
        .await
        .unwrap();
        assert_eq!(o.value, want);
        assert_eq!(o.rule.as_deref(), rule);
    }
}
