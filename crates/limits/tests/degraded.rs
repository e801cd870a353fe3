//! Degraded mode against private redis-servers this suite starts, stops and pauses (so the
//! shared test server is never disturbed): decisions stay fast, each instance admits at most
//! its share, every degraded decision is counted, and the backend recovers by itself.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

mod common;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use limits::{Check, Decision, Limiter, Rate, RedisLimiter};

use common::{PrivateServer, client, config, limiter, prefix};

fn rpm(limit: u64) -> Rate {
    Rate::per_minute(limit).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `n` checks; returns (admitted, slowest decision).
async fn run(limiter: &RedisLimiter, key: &str, rate: Rate, n: usize) -> (usize, Duration) {
    let mut admitted = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        let d = limiter.check(&[Check::requests(key, rate)]).await;
        slowest = slowest.max(start.elapsed());
        admitted += usize::from(d.is_allowed());
    }
    (admitted, slowest)
}

/// Polls until a decision comes from Redis again, within `limit`.
async fn until_recovered(limiter: &RedisLimiter, within: Duration) -> Decision {
    let start = Instant::now();
    loop {
        let d = limiter.check(&[Check::requests("probe", rpm(1_000))]).await;
        if !d.degraded {
            return d;
        }
        assert!(start.elapsed() < within, "no recovery within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_degrades_to_a_share_per_instance_and_recovers() {
    let Some(mut server) = PrivateServer::start() else {
        return;
    };
    let prefix = prefix();
    let limiters: Vec<_> = (0..3)
        .map(|_| limiter(config(&server.url(), &prefix)))
        .collect();
    for l in &limiters {
        l.beat().await;
    }
    assert_eq!(limiters[0].beat().await, Some(3));
    for l in &limiters {
        l.beat().await;
        assert_eq!(l.instances(), 3);
        assert!(!l.check(&[Check::requests("warm", rpm(10))]).await.degraded);
    }

    server.stop();
    for l in &limiters {
        let (admitted, slowest) = run(l, "k", rpm(60), 100).await;
        assert_eq!(admitted, 20, "60 / 3 instances");
        assert!(slowest < Duration::from_millis(300), "slowest {slowest:?}");
        assert!(l.is_degraded());
        assert!(l.redis_errors() >= 1);
        assert!(l.degraded_decisions() >= 90, "{}", l.degraded_decisions());
    }
    // While degraded, requests do not wait on Redis: 200 decisions well inside one timeout each.
    let start = Instant::now();
    run(&limiters[0], "other", rpm(60), 200).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    server.restart();
    for l in &limiters {
        until_recovered(l, Duration::from_secs(5)).await;
        assert!(!l.is_degraded());
    }
    // Shared again: the three instances together admit exactly the limit.
    let mut admitted = 0;
    for l in &limiters {
        admitted += run(l, "after", rpm(60), 40).await.0;
    }
    assert_eq!(admitted, 60);
}

#[tokio::test]
async fn an_unreachable_redis_decides_in_process_from_the_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let limiter = limiter(limits::RedisConfig {
        instances: NonZeroU32::new(4),
        ..config(&format!("redis://127.0.0.1:{port}"), &prefix())
    });
    let start = Instant::now();
    let (admitted, slowest) = run(&limiter, "k", rpm(40), 50).await;
    assert_eq!(admitted, 10, "40 / 4 configured instances");
    assert!(slowest < Duration::from_millis(600), "slowest {slowest:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(limiter.is_degraded());
    assert!(limiter.redis_errors() >= 1);
    assert!(limiter.degraded_decisions() >= 49);
    // Settlement while degraded goes to the share as well: a refund gives tokens back.
    let tpm = rpm(400); // 100 tokens per instance
    let reserve = [Check::tokens("t", tpm, 100)];
    assert!(limiter.check(&reserve).await.is_allowed());
    assert!(!limiter.check(&reserve).await.is_allowed());
    limiter.adjust("t", tpm, -100).await;
    assert!(limiter.check(&reserve).await.is_allowed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_times_out_fast_and_recovers() {
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let limiter = limiter(config(&server.url(), &prefix()));
    // One per 10 s, so that nothing comes back during the test.
    let r = Rate::new(60, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!limiter.check(&[Check::requests("k", r)]).await.degraded);
    let mut admin = client(&server.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let start = Instant::now();
    let d = limiter.check(&[Check::requests("k", r)]).await;
    let first = start.elapsed();
    assert!(d.degraded && d.is_allowed());
    assert!(
        first >= Duration::from_millis(45) && first < Duration::from_millis(250),
        "the first decision waits one timeout (50 ms), took {first:?}"
    );
    assert_eq!(limiter.redis_errors(), 1);
    // The fallback has its own state (one instance: the full limit); the pause costs each
    // later decision nothing until the next probe.
    let (admitted, slowest) = run(&limiter, "k", r, 100).await;
    assert_eq!(admitted, 59, "the fallback's own 60, one already spent");
    assert!(slowest < Duration::from_millis(250), "slowest {slowest:?}");
    assert!(limiter.degraded_decisions() >= 95);

    until_recovered(&limiter, Duration::from_secs(5)).await;
    // Redis's state applies again: one of its 60 was spent before the pause, and each call
    // that timed out still ran once the pause ended (a timeout cannot be taken back).
    let d = limiter
        .check(&[Check {
            cost: 0,
            ..Check::requests("k", r)
        }])
        .await;
    assert!(!d.degraded);
    let remaining = d.requests.map_or(0, |q| q.remaining);
    let timed_out = limiter.redis_errors();
    assert!(
        remaining < 59 && remaining + timed_out >= 59,
        "{remaining} remaining after {timed_out} timeouts"
    );
}
