use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

fn rate(limit: u64, period_ms: u64) -> Rate {
    Rate::new(limit, Duration::from_millis(period_ms)).unwrap_or_else(|e| panic!("{e}"))
}

fn manual(config: InProcessConfig) -> (InProcess<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (InProcess::with_clock(config, clock.clone()), clock)
}

#[test]
fn concurrent_burst_admits_exactly_the_limit() {
    let limiter = Arc::new(InProcess::default());
    let rpm = rate(60, 60_000);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                (0..100)
                    .filter(|_| limiter.decide(&[Check::requests("k", rpm)]).is_allowed())
                    .count()
            })
        })
        .collect();
    let admitted: usize = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|_| panic!("thread panicked")))
        .sum();
    assert_eq!(admitted, 60);
}

#[test]
fn a_denial_consumes_nothing_anywhere() {
    let (limiter, _clock) = manual(InProcessConfig::default());
    let wide = rate(10, 60_000);
    let narrow = rate(1, 60_000);
    assert!(
        limiter
            .decide(&[Check::requests("narrow", narrow)])
            .is_allowed()
    );

    let both = [
        Check::requests("wide", wide),
        Check::tokens("tpm", rate(1_000, 60_000), 400),
        Check::requests("narrow", narrow),
    ];
    let decision = limiter.decide(&both);
    let denial = decision
        .denied
        .unwrap_or_else(|| panic!("narrow must deny"));
    assert_eq!((denial.index, denial.key.as_str()), (2, "narrow"));
    assert_eq!(denial.retry_after, Duration::from_secs(60));
    assert!(!denial.exceeds_limit);
    // Headers on a denial show the state as it is: the narrow limit is the tightest.
    assert_eq!(decision.requests.map(|q| q.remaining), Some(0));
    assert_eq!(decision.tokens.map(|q| q.remaining), Some(1_000));

    let probe = limiter.decide(&[
        Check {
            cost: 0,
            ..Check::requests("wide", wide)
        },
        Check::tokens("tpm", rate(1_000, 60_000), 0),
    ]);
    assert_eq!(probe.requests.map(|q| q.remaining), Some(10));
    assert_eq!(probe.tokens.map(|q| q.remaining), Some(1_000));
}

#[test]
fn the_same_limit_twice_in_one_request_is_charged_twice() {
    let (limiter, _clock) = manual(InProcessConfig::default());
    let r = rate(3, 1_000);
    let twice = [Check::requests("k", r), Check::requests("k", r)];
    assert!(limiter.decide(&twice).is_allowed());
    let d = limiter.decide(&twice);
    assert_eq!(d.denied.map(|d| d.index), Some(1));
    assert!(limiter.decide(&[Check::requests("k", r)]).is_allowed());
}

#[test]
fn a_cost_beyond_the_limit_is_flagged() {
    let (limiter, _clock) = manual(InProcessConfig::default());
    let d = limiter.decide(&[Check::tokens("k", rate(100, 1_000), 101)]);
    let denial = d.denied.unwrap_or_else(|| panic!("must deny"));
    assert!(denial.exceeds_limit);
    assert_eq!(denial.retry_after, Duration::from_secs(1));
}

#[test]
fn headers_report_remaining_and_reset() {
    let (limiter, clock) = manual(InProcessConfig::default());
    let r = rate(10, 1_000);
    for _ in 0..4 {
        limiter.decide(&[Check::requests("k", r)]);
    }
    let d = limiter.decide(&[Check::requests("k", r)]);
    let q = d.requests.unwrap_or_else(|| panic!("a quota"));
    assert_eq!(
        (q.limit, q.remaining, q.reset),
        (10, 5, Duration::from_millis(500))
    );
    clock.advance(Duration::from_millis(250));
    let d = limiter.decide(&[Check {
        cost: 0,
        ..Check::requests("k", r)
    }]);
    let q = d.requests.unwrap_or_else(|| panic!("a quota"));
    assert_eq!((q.remaining, q.reset), (7, Duration::from_millis(250)));
}

#[test]
fn settlement_refunds_down_to_a_full_burst_and_charges_overdraft() {
    let (limiter, clock) = manual(InProcessConfig::default());
    let tpm = rate(1_000, 1_000);
    assert!(limiter.decide(&[Check::tokens("t", tpm, 800)]).is_allowed());
    assert!(!limiter.decide(&[Check::tokens("t", tpm, 800)]).is_allowed());
    limiter.settle("t", tpm, -700); // used 100 of 800
    assert!(limiter.decide(&[Check::tokens("t", tpm, 800)]).is_allowed());
    limiter.settle("t", tpm, -1_000_000); // never more than a full burst back
    let probe = limiter.decide(&[Check::tokens("t", tpm, 0)]);
    assert_eq!(probe.tokens.map(|q| q.remaining), Some(1_000));
    limiter.settle("t", tpm, 2_500); // used far more than reserved: owed, not refused
    let d = limiter.decide(&[Check::tokens("t", tpm, 1)]);
    assert_eq!(
        d.denied.map(|d| d.retry_after),
        Some(Duration::from_millis(1_501))
    );
    clock.advance(Duration::from_millis(1_501));
    assert!(limiter.decide(&[Check::tokens("t", tpm, 1)]).is_allowed());
}

#[test]
fn memory_stays_bounded_and_idle_keys_go_first() {
    let (limiter, clock) = manual(InProcessConfig {
        shards: 4,
        max_keys: 400,
    });
    let r = rate(10, 1_000);
    for i in 0..300 {
        limiter.decide(&[Check::requests(format!("old{i}"), r)]);
    }
    clock.advance(Duration::from_secs(2)); // all idle now
    for i in 0..5_000 {
        limiter.decide(&[Check::requests(format!("new{i}"), r)]);
        assert!(limiter.len() <= 400);
    }
    clock.advance(Duration::from_secs(2));
    assert!(limiter.sweep() > 0);
    assert!(limiter.is_empty());
}

#[test]
fn cost_zero_checks_store_nothing() {
    let (limiter, _clock) = manual(InProcessConfig::default());
    let d = limiter.decide(&[Check {
        cost: 0,
        ..Check::requests("k", rate(5, 1_000))
    }]);
    assert!(d.is_allowed());
    assert!(limiter.is_empty());
}
