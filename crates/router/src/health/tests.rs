use std::time::Duration;

use providers::ErrorClass;
use tokio::time::{Instant, advance};

use super::window::{BINS, bin, representative_us};
use super::*;
use crate::balance::{Strategy, order};

fn target(p: &str, m: &str) -> Target {
    Target {
        provider: p.into(),
        model: m.into(),
        weight: 1,
    }
}

const MS: Duration = Duration::from_millis(1);

fn ok(h: &Health, t: &Target, ms: u64) {
    h.record(t, MS * ms as u32, None, Instant::now());
}

fn fail(h: &Health, t: &Target, class: ErrorClass) {
    h.record(t, 50 * MS, Some(class), Instant::now());
}

fn one(h: &Health) -> TargetReport {
    let r = h.report(Instant::now());
    assert_eq!(r.len(), 1, "{r:?}");
    r.into_iter().next().unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_unknown_target_is_closed_allowed_and_untracked() {
    let h = Health::default();
    let t = target("a", "m");
    assert!(matches!(h.admit(&t, Instant::now()), Admission::Allow));
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
    assert_eq!(h.ewma_ms(&t), None);
    assert!(h.report(Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_window_rolls_off_after_a_minute() {
    let h = Health::default();
    let t = target("a", "m");
    ok(&h, &t, 100);
    fail(&h, &t, ErrorClass::RateLimited);
    advance(Duration::from_secs(30)).await;
    ok(&h, &t, 100);
    let r = one(&h);
    assert_eq!((r.requests, r.errors, r.throttled), (3, 1, 1));
    assert!((r.error_rate - 1.0 / 3.0).abs() < 1e-9);

    advance(Duration::from_secs(30)).await;
    let r = one(&h);
    assert_eq!((r.requests, r.errors, r.throttled), (1, 0, 0), "{r:?}");

    advance(Duration::from_secs(30)).await;
    let r = one(&h);
    assert_eq!((r.requests, r.errors, r.error_rate), (0, 0, 0.0));
    assert_eq!((r.p50_ms, r.p95_ms), (None, None));
    // The estimate is not windowed: the balancer keeps what it learnt.
    assert!(r.ewma_ms.is_some());
}

#[tokio::test(start_paused = true)]
async fn percentiles_are_roughly_right() {
    let h = Health::default();
    let t = target("a", "m");
    for ms in 1..=100 {
        ok(&h, &t, ms);
        advance(Duration::from_millis(200)).await;
    }
    let r = one(&h);
    let (p50, p95) = (r.p50_ms.unwrap(), r.p95_ms.unwrap());
    assert!((p50 - 50.0).abs() <= 50.0 * 0.125, "p50 {p50}");
    assert!((p95 - 95.0).abs() <= 95.0 * 0.125, "p95 {p95}");
    // Failures are counted, not timed.
    for _ in 0..100 {
        h.record(
            &t,
            Duration::from_secs(30),
            Some(ErrorClass::Timeout),
            Instant::now(),
        );
    }
    assert_eq!(one(&h).p95_ms, Some(p95));
}

#[test]
fn histogram_bins_cover_their_representatives() {
    let mut last = 0;
    for us in [
        0,
        127,
        128,
        159,
        160,
        255,
        256,
        1_000,
        123_456,
        10_000_000,
        1 << 27,
    ] {
        let b = bin(us);
        assert!(b >= last, "bins grow with the value");
        last = b;
        if b > 0 {
            let rep = representative_us(b) as f64;
            assert!((rep - us as f64).abs() <= us as f64 * 0.125, "{us} → {rep}");
        }
    }
    assert_eq!(bin(u64::MAX), BINS - 1);
    assert_eq!(bin(1 << 40), BINS - 1);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_requests_but_never_open_the_circuit() {
    let h = Health::default();
    let t = target("a", "m");
    for class in [
        ErrorClass::BadRequest,
        ErrorClass::ContextLength,
        ErrorClass::ContentFilter,
        ErrorClass::NotFound,
    ] {
        for _ in 0..10 {
            fail(&h, &t, class);
        }
    }
    let r = one(&h);
    assert_eq!((r.requests, r.errors, r.client_errors), (40, 0, 40));
    assert_eq!((r.state, r.consecutive_failures), (CircuitState::Closed, 0));
    assert_eq!(r.ewma_ms, None, "client errors say nothing of latency");
}

#[tokio::test(start_paused = true)]
async fn every_target_failure_class_counts() {
    for class in [
        ErrorClass::Server,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::StreamBroken,
        ErrorClass::RateLimited,
        ErrorClass::Auth,
    ] {
        let h = Health::default();
        let t = target("a", "m");
        for _ in 0..5 {
            fail(&h, &t, class);
        }
        assert_eq!(h.state(&t, Instant::now()), CircuitState::Open, "{class:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let h = Health::default();
    let t = target("a", "m");
    for _ in 0..20 {
        ok(&h, &t, 100);
    }
    for i in 1..5 {
        fail(&h, &t, ErrorClass::Server);
        assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
        assert_eq!(one(&h).consecutive_failures, i);
    }
    fail(&h, &t, ErrorClass::Server);
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Open);
    // 5 of 25 is far below the rate: it was the run that opened it.
    assert!(one(&h).error_rate < 0.5);
}

#[tokio::test(start_paused = true)]
async fn a_success_breaks_the_run() {
    let h = Health::default();
    let t = target("a", "m");
    for _ in 0..10 {
        ok(&h, &t, 100);
    }
    for _ in 0..3 {
        for _ in 0..4 {
            fail(&h, &t, ErrorClass::Timeout);
        }
        ok(&h, &t, 100);
        ok(&h, &t, 100);
    }
    // 12 failures of 28: below the rate, and never 5 in a row.
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_with_enough_requests() {
    let h = Health::default();
    let t = target("a", "m");
    ok(&h, &t, 100);
    fail(&h, &t, ErrorClass::Server);
    ok(&h, &t, 100);
    fail(&h, &t, ErrorClass::Server);
    // 2 of 4 is the rate, but 4 requests are too few.
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
    fail(&h, &t, ErrorClass::Server);
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Open);
    assert_eq!(one(&h).consecutive_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn the_rate_forgets_requests_older_than_the_window() {
    let h = Health::default();
    let t = target("a", "m");
    for _ in 0..20 {
        ok(&h, &t, 100);
    }
    advance(Duration::from_secs(60)).await;
    // 3 failures of 5 open it only if the 20 old successes no longer count.
    fail(&h, &t, ErrorClass::Server);
    ok(&h, &t, 100);
    fail(&h, &t, ErrorClass::Server);
    ok(&h, &t, 100);
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
    fail(&h, &t, ErrorClass::Server);
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Open);
}

fn open_circuit(h: &Health, t: &Target) {
    for _ in 0..5 {
        fail(h, t, ErrorClass::Server);
    }
    assert_eq!(h.state(t, Instant::now()), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_and_says_for_how_long() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    let Admission::Reject { retry_in } = h.admit(&t, Instant::now()) else {
        panic!("open circuits reject");
    };
    assert_eq!(retry_in, Duration::from_secs(10));
    advance(Duration::from_secs(4)).await;
    let Admission::Reject { retry_in } = h.admit(&t, Instant::now()) else {
        panic!("still open");
    };
    assert_eq!(retry_in, Duration::from_secs(6));
    assert_eq!(one(&h).open_for_ms, Some(6000));
    // Another target is not affected.
    assert!(matches!(
        h.admit(&target("a", "other"), Instant::now()),
        Admission::Allow
    ));
}

#[tokio::test(start_paused = true)]
async fn admits_one_probe_after_open_for() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    assert_eq!(h.state(&t, Instant::now()), CircuitState::HalfOpen);
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)));
    let second = h.admit(&t, Instant::now());
    assert!(
        matches!(second, Admission::Reject { retry_in } if retry_in == HALF_OPEN_RETRY),
        "{second:?}"
    );
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn more_probe_slots_when_the_policy_says_so() {
    let h = Health::new(CircuitPolicy {
        half_open_probes: 2,
        ..CircuitPolicy::default()
    });
    let t = target("a", "m");
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    let a = h.admit(&t, Instant::now());
    let b = h.admit(&t, Instant::now());
    let c = h.admit(&t, Instant::now());
    assert!(matches!(
        (&a, &b, &c),
        (
            Admission::Probe(_),
            Admission::Probe(_),
            Admission::Reject { .. }
        )
    ));
}

#[tokio::test(start_paused = true)]
async fn a_probe_success_closes_and_forgets_the_outage() {
    let h = Health::default();
    let t = target("a", "m");
    for _ in 0..3 {
        ok(&h, &t, 100);
    }
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)));
    ok(&h, &t, 100);
    drop(probe);
    assert_eq!(h.state(&t, Instant::now()), CircuitState::Closed);
    assert!(matches!(h.admit(&t, Instant::now()), Admission::Allow));
    // The outage is still reported, but one more failure does not reopen at once although
    // the window holds 6 failures of 10.
    fail(&h, &t, ErrorClass::Server);
    let r = one(&h);
    assert_eq!(
        (r.state, r.requests, r.errors),
        (CircuitState::Closed, 10, 6)
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_failure_reopens_for_longer_up_to_the_cap() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    for expected in [20, 20, 20] {
        advance(Duration::from_secs(60)).await;
        let probe = h.admit(&t, Instant::now());
        assert!(matches!(probe, Admission::Probe(_)));
        fail(&h, &t, ErrorClass::Connect);
        drop(probe);
        let Admission::Reject { retry_in } = h.admit(&t, Instant::now()) else {
            panic!("a failed probe reopens");
        };
        assert_eq!(retry_in, Duration::from_secs(expected));
    }
    // A success resets the backoff: the next outage starts at open_for again.
    advance(Duration::from_secs(20)).await;
    let probe = h.admit(&t, Instant::now());
    ok(&h, &t, 100);
    drop(probe);
    open_circuit(&h, &t);
    assert_eq!(one(&h).open_for_ms, Some(10_000));
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_when_the_cap_allows() {
    let h = Health::new(CircuitPolicy {
        open_for: Duration::from_secs(1),
        max_open_for: Duration::from_secs(5),
        ..CircuitPolicy::default()
    });
    let t = target("a", "m");
    open_circuit(&h, &t);
    let mut seen = vec![one(&h).open_for_ms];
    for _ in 0..4 {
        advance(Duration::from_secs(5)).await;
        let probe = h.admit(&t, Instant::now());
        fail(&h, &t, ErrorClass::Server);
        drop(probe);
        seen.push(one(&h).open_for_ms);
    }
    let secs: Vec<_> = seen.into_iter().map(|ms| ms.unwrap() / 1000).collect();
    assert_eq!(secs, [1, 2, 4, 5, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    // The consumer went away: the probe never recorded anything.
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)));
    drop(probe);
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)), "{probe:?}");
    assert_eq!(h.state(&t, Instant::now()), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_leaked_probe_expires() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    std::mem::forget(h.admit(&t, Instant::now()));
    advance(PROBE_EXPIRY - MS).await;
    assert!(matches!(
        h.admit(&t, Instant::now()),
        Admission::Reject { .. }
    ));
    advance(MS).await;
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)));
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_stale_guard_frees_nothing_in_a_later_round() {
    let h = Health::default();
    let t = target("a", "m");
    open_circuit(&h, &t);
    advance(Duration::from_secs(10)).await;
    let old = h.admit(&t, Instant::now());
    fail(&h, &t, ErrorClass::Server);
    advance(Duration::from_secs(20)).await;
    let probe = h.admit(&t, Instant::now());
    assert!(matches!(probe, Admission::Probe(_)));
    // The first probe's guard outlived its round: dropping it must not open a second slot.
    drop(old);
    assert!(matches!(
        h.admit(&t, Instant::now()),
        Admission::Reject { .. }
    ));
    drop(probe);
}

/// A primary that is down for a while, then recovers, with a request every 100 ms: traffic
/// goes to the fallback meanwhile and returns to the primary within 30 s of the recovery.
#[tokio::test(start_paused = true)]
async fn traffic_returns_to_a_recovered_primary_within_30s() {
    for outage_secs in [60, 75, 90, 111, 150] {
        let h = Health::default();
        let targets = [target("primary", "m"), target("backup", "m")];
        let start = Instant::now();
        let recovered_at = start + Duration::from_secs(outage_secs);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let mut served_by_backup = 0;
        let mut back = None;
        while back.is_none() && Instant::now() < recovered_at + Duration::from_secs(60) {
            let now = Instant::now();
            let o = order(Strategy::Priority, &targets, &h, now, &mut rng);
            for t in o.targets(&targets) {
                let admission = h.admit(t, now);
                if !admission.admitted() {
                    continue;
                }
                let up = t.provider == "backup" || now >= recovered_at;
                let class = (!up).then_some(ErrorClass::Server);
                h.record(t, 20 * MS, class, now);
                drop(admission);
                if up {
                    if t.provider == "primary" && now >= recovered_at {
                        back = Some(now - recovered_at);
                    }
                    served_by_backup += usize::from(t.provider == "backup");
                    break;
                }
            }
            advance(100 * MS).await;
        }
        let back = back.expect("the primary never got traffic back");
        assert!(
            back < Duration::from_secs(30),
            "outage {outage_secs}s: back after {back:?}"
        );
        // While the primary was down, the backup served nearly everything.
        assert!(
            served_by_backup >= (outage_secs as usize - 1) * 10,
            "{served_by_backup}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_estimate_follows_latency_and_failures_raise_it() {
    let h = Health::default();
    let t = target("a", "m");
    ok(&h, &t, 100);
    assert_eq!(h.ewma_ms(&t), Some(100.0));
    for _ in 0..30 {
        ok(&h, &t, 200);
        advance(10 * MS).await;
    }
    let e = h.ewma_ms(&t).unwrap();
    assert!((e - 200.0).abs() < 1.0, "{e}");
    // A fast failure must not make the target look fast.
    h.record(&t, MS, Some(ErrorClass::Connect), Instant::now());
    assert!(h.ewma_ms(&t).unwrap() > e);
    // After a long silence the next sample mostly replaces the estimate.
    advance(Duration::from_secs(60)).await;
    ok(&h, &t, 50);
    let e = h.ewma_ms(&t).unwrap();
    assert!((e - 50.0).abs() < 10.0, "{e}");
}

#[tokio::test(start_paused = true)]
async fn report_serialises_for_the_admin_api() {
    let h = Health::default();
    let (a, b) = (target("b-prov", "m"), target("a-prov", "m"));
    ok(&h, &a, 120);
    open_circuit(&h, &b);
    let mut json = serde_json::to_value(h.report(Instant::now())).unwrap();
    // Five failures count as ever slower samples (1 s, then twice the estimate).
    assert!(json[0]["ewma_ms"].as_f64().unwrap() > 2000.0, "{json}");
    json[0]["ewma_ms"] = serde_json::Value::Null;
    assert_eq!(
        json,
        serde_json::json!([
            {
                "provider": "a-prov", "model": "m", "state": "open",
                "requests": 5, "errors": 5, "throttled": 0, "client_errors": 0,
                "error_rate": 1.0, "p50_ms": null, "p95_ms": null, "ewma_ms": null,
                "consecutive_failures": 5, "open_for_ms": 10000
            },
            {
                "provider": "b-prov", "model": "m", "state": "closed",
                "requests": 1, "errors": 0, "throttled": 0, "client_errors": 0,
                "error_rate": 0.0, "p50_ms": 122.88, "p95_ms": 122.88, "ewma_ms": 120.0,
                "consecutive_failures": 0, "open_for_ms": null
            }
        ])
    );
    advance(Duration::from_secs(10)).await;
    let json = serde_json::to_value(h.report(Instant::now())).unwrap();
    assert_eq!(json[0]["state"], "half_open");
}

#[tokio::test(start_paused = true)]
async fn the_map_is_capped_and_forgets_the_stalest() {
    let h = Health::with_max_targets(CircuitPolicy::default(), 16);
    for i in 0..100 {
        ok(&h, &target("p", &format!("m{i}")), 10);
        advance(MS).await;
    }
    let r = h.report(Instant::now());
    assert!(r.len() <= 16, "{}", r.len());
    assert!(r.iter().any(|r| r.model == "m99"), "the newest stays");
    assert!(r.iter().all(|r| r.model != "m0"), "the oldest goes");
}

#[tokio::test(start_paused = true)]
async fn retain_forgets_unconfigured_targets() {
    let h = Health::default();
    ok(&h, &target("a", "x"), 10);
    ok(&h, &target("a", "y"), 10);
    ok(&h, &target("b", "x"), 10);
    h.retain(|p, m| p == "a" && m == "y");
    let r = h.report(Instant::now());
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].provider.as_str(), r[0].model.as_str()), ("a", "y"));
}

#[test]
fn policy_reads_from_config_with_defaults() {
    let p: CircuitPolicy =
        serde_json::from_str(r#"{"open_for": "5s", "max_open_for": "1m", "failure_rate": 0.25}"#)
            .unwrap();
    assert_eq!(p.open_for, Duration::from_secs(5));
    assert_eq!(p.max_open_for, Duration::from_secs(60));
    assert_eq!(p.failure_rate, 0.25);
    assert_eq!(p.min_requests, 5);
    assert_eq!(p.validate(), Ok(()));

    let d: CircuitPolicy = serde_json::from_str("{}").unwrap();
    assert_eq!(d, CircuitPolicy::default());
    let back: CircuitPolicy =
        serde_json::from_value(serde_json::to_value(CircuitPolicy::default()).unwrap()).unwrap();
    assert_eq!(back, CircuitPolicy::default());
    assert_eq!(
        serde_json::to_value(CircuitPolicy::default()).unwrap()["open_for"],
        "10s"
    );

    for bad in [
        r#"{"opne_for": "5s"}"#,
        r#"{"open_for": 5}"#,
        r#"{"open_for": "5 parsecs"}"#,
    ] {
        assert!(serde_json::from_str::<CircuitPolicy>(bad).is_err(), "{bad}");
    }
}

#[test]
fn durations_need_a_unit() {
    use super::circuit::parse_duration as parse;
    assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse(" 2m "), Some(Duration::from_secs(120)));
    assert_eq!(parse("10"), None);
    assert_eq!(parse("-1s"), None);
    assert_eq!(parse("1h"), None);
}

#[test]
fn policy_validation_names_the_field() {
    let bad = |p: CircuitPolicy| p.validate().unwrap_err().field;
    let d = CircuitPolicy::default();
    assert_eq!(
        bad(CircuitPolicy {
            failure_rate: 0.0,
            ..d
        }),
        "failure_rate"
    );
    assert_eq!(
        bad(CircuitPolicy {
            failure_rate: f64::NAN,
            ..d
        }),
        "failure_rate"
    );
    assert_eq!(
        bad(CircuitPolicy {
            min_requests: 0,
            ..d
        }),
        "min_requests"
    );
    assert_eq!(
        bad(CircuitPolicy {
            consecutive_failures: 0,
            ..d
        }),
        "consecutive_failures"
    );
    assert_eq!(
        bad(CircuitPolicy {
            half_open_probes: 0,
            ..d
        }),
        "half_open_probes"
    );
    assert_eq!(
        bad(CircuitPolicy {
            open_for: Duration::ZERO,
            ..d
        }),
        "open_for"
    );
}

#[test]
fn health_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Health>();
    send_sync::<ProbeGuard>();
}
