//! The Redis backend against a real redis-server (`scripts/test-redis.sh`): several limiter
//! instances, each with its own connection, sharing one server as gateway instances would.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use limits::{Check, Limiter, Rate, RedisConfig, RedisLimiter};
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;

use common::{PrivateServer, client, config, limiter, prefix, redis_url};

fn rate(limit: u64, period_ms: u64) -> Rate {
    Rate::new(limit, Duration::from_millis(period_ms)).unwrap_or_else(|e| panic!("{e}"))
}

/// These tests check the scripts' arithmetic, so every call must reach Redis: the production
/// 50 ms timeout can pass on a loaded CI machine (lazy connect plus the first script load),
/// which would correctly, but here uselessly, switch to degraded mode. degraded.rs tests that.
fn healthy(url: &str, prefix: &str) -> RedisLimiter {
    limiter(RedisConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..config(url, prefix)
    })
}

fn instances(url: &str, prefix: &str, n: usize) -> Vec<RedisLimiter> {
    (0..n).map(|_| healthy(url, prefix)).collect()
}

fn assert_healthy(limiters: &[RedisLimiter]) {
    for l in limiters {
        assert_eq!(
            (l.degraded_decisions(), l.redis_errors()),
            (0, 0),
            "no call may have failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_admit_exactly_the_limit_of_a_concurrent_burst() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let limiters = instances(&url, &prefix, 3);
    let rpm = rate(60, 60_000);
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let limiter = limiters[i % 3].clone();
            tokio::spawn(async move {
                limiter
                    .check(&[Check::requests("consumer:1", rpm)])
                    .await
                    .is_allowed()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(admitted, 60);
    assert_healthy(&limiters);
    let d = limiters[0]
        .check(&[Check::requests("consumer:1", rpm)])
        .await;
    let denial = d.denied.unwrap_or_else(|| panic!("the limit is spent"));
    assert!(denial.retry_after <= Duration::from_secs(1), "{denial:?}");
    assert_eq!(d.requests.map(|q| (q.limit, q.remaining)), Some((60, 0)));
}

#[tokio::test]
async fn after_a_full_burst_admissions_follow_the_steady_rate() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let limiters = instances(&url, &prefix, 2);
    let r = rate(10, 1_000); // one per 100 ms
    let check = [Check::requests("k", r)];
    let start = Instant::now();
    let mut burst = 0;
    for i in 0..30 {
        burst += usize::from(limiters[i % 2].check(&check).await.is_allowed());
    }
    assert_eq!(burst, 10);
    // Two periods of polling. GCRA's bound, from the start: by time t at most the burst plus
    // t / interval (+1 for the cell in progress), so no second burst at the period boundary,
    // however the polls are scheduled; and about the steady rate in all (a stalled poller
    // only delays cells, which accrue).
    let mut times = Vec::new();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2_000) {
        if limiters[i % 2].check(&check).await.is_allowed() {
            times.push(start.elapsed());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (n, t) in times.iter().enumerate() {
        // The (n+1)-th cell after the burst is due (n+1) intervals after it; one of slack.
        let due = n as u128;
        assert!(
            due <= t.as_millis() / 100,
            "cell {} at {t:?}: {times:?}",
            n + 1
        );
    }
    assert!(
        (17..=21).contains(&times.len()),
        "{} admitted: {times:?}",
        times.len()
    );
    assert_healthy(&limiters);
}

#[tokio::test]
async fn no_cell_comes_half_an_interval_early() {
    let Some(url) = redis_url() else { return };
    let limiter = healthy(&url, &prefix());
    let r = rate(10, 10_000); // one cell per second after a burst of 10
    let check = [Check::requests("k", r)];
    let start = Instant::now();
    for _ in 0..10 {
        assert!(limiter.check(&check).await.is_allowed());
    }
    // 0.6 s after the burst began the next cell is still 0.4 s away (the script's rounding
    // slack once admitted it after half an interval).
    tokio::time::sleep_until((start + Duration::from_millis(600)).into()).await;
    let d = limiter.check(&check).await;
    if start.elapsed() < Duration::from_millis(990) {
        let denial = d.denied.unwrap_or_else(|| panic!("a cell came early"));
        assert!(denial.retry_after >= Duration::from_millis(1), "{denial:?}");
    }
    tokio::time::sleep_until((start + Duration::from_millis(1_000)).into()).await;
    assert!(limiter.check(&check).await.is_allowed(), "the cell is due");
    assert_healthy(&[limiter]);
}

#[tokio::test]
async fn a_denied_multi_limit_check_consumes_nothing() {
    let Some(url) = redis_url() else { return };
    let limiter = healthy(&url, &prefix());
    let wide = rate(10, 60_000);
    let narrow = rate(1, 60_000);
    let tpm = rate(1_000, 60_000);
    assert!(
        limiter
            .check(&[Check::requests("narrow", narrow)])
            .await
            .is_allowed()
    );
    let d = limiter
        .check(&[
            Check::requests("wide", wide),
            Check::tokens("tpm", tpm, 400),
            Check::requests("narrow", narrow),
        ])
        .await;
    let denial = d.denied.unwrap_or_else(|| panic!("narrow must deny"));
    assert_eq!((denial.index, denial.key.as_str()), (2, "narrow"));
    assert_eq!(d.requests.map(|q| q.remaining), Some(0));
    assert_eq!(d.tokens.map(|q| q.remaining), Some(1_000));
    let probe = limiter
        .check(&[
            Check {
                cost: 0,
                ..Check::requests("wide", wide)
            },
            Check::tokens("tpm", tpm, 0),
        ])
        .await;
    assert_eq!(probe.requests.map(|q| q.remaining), Some(10));
    assert_eq!(probe.tokens.map(|q| q.remaining), Some(1_000));
    assert_healthy(&[limiter]);
}

#[tokio::test]
async fn settlement_refunds_and_charges_overdraft() {
    let Some(url) = redis_url() else { return };
    let limiter = healthy(&url, &prefix());
    let tpm = rate(1_000, 10_000);
    let reserve = |n| [Check::tokens("t", tpm, n)];
    assert!(limiter.check(&reserve(800)).await.is_allowed());
    assert!(!limiter.check(&reserve(800)).await.is_allowed());
    limiter.adjust("t", tpm, -700).await;
    assert!(limiter.check(&reserve(800)).await.is_allowed());
    limiter.adjust("t", tpm, -1_000_000).await;
    let full = limiter.check(&reserve(0)).await;
    assert_eq!(full.tokens.map(|q| q.remaining), Some(1_000));
    limiter.adjust("t", tpm, 2_000).await; // 20 s of debt
    let d = limiter.check(&reserve(1)).await;
    let wait = d.denied.map(|d| d.retry_after).unwrap_or_default();
    assert!(
        wait > Duration::from_millis(10_000) && wait <= Duration::from_millis(10_010),
        "{wait:?}"
    );
    assert_healthy(&[limiter]);
}

#[tokio::test]
async fn keys_expire_when_their_limit_is_full_again() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let limiter = healthy(&url, &prefix);
    let mut conn = client(&url).await;
    let key = format!("{prefix}:r:idle");
    assert!(
        limiter
            .check(&[Check::requests("idle", rate(5, 300))])
            .await
            .is_allowed()
    );
    let ttl: i64 = conn.pttl(&key).await.unwrap_or_else(|e| panic!("{e}"));
    assert!((1..=62).contains(&ttl), "pttl {ttl}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let exists: bool = conn.exists(&key).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!exists, "an idle key must vanish");
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_without_an_error() {
    // SCRIPT FLUSH is server-wide: on the shared server it could land between another test's
    // reload and retry and fail that call, so this test flushes a server of its own.
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let url = server.url();
    let limiter = healthy(&url, &prefix());
    let r = rate(5, 60_000);
    assert!(limiter.check(&[Check::requests("k", r)]).await.is_allowed());
    let mut conn = client(&url).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let d = limiter.check(&[Check::requests("k", r)]).await;
    assert_eq!(d.requests.map(|q| q.remaining), Some(3));
    assert_healthy(&[limiter]);
}

#[tokio::test]
async fn the_heartbeat_counts_live_instances() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let limiters = instances(&url, &prefix, 3);
    for l in &limiters {
        l.beat().await;
    }
    assert_eq!(limiters[0].beat().await, Some(3));
    assert_eq!(limiters[2].instances(), 3);
    limiters[1].leave().await;
    assert_eq!(limiters[0].beat().await, Some(2));
    assert_eq!(limiters[0].instances(), 2);
}

/// TPM on Redis in real time: workers on three instances reserve an estimate, wait a random
/// latency and settle to a random actual. After the first period, every one-period window
/// admits actual tokens within 5 % of the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_reservations_settle_to_the_limit() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let limiters = instances(&url, &prefix, 3);
    const LIMIT: u64 = 50_000;
    const ESTIMATE: u64 = 500;
    let tpm = rate(LIMIT, 1_000);
    let start = Instant::now();
    let run = Duration::from_millis(4_000);
    let admitted = Arc::new(std::sync::Mutex::new(Vec::<(Duration, u64)>::new()));
    let workers: Vec<_> = (0..18)
        .map(|w| {
            let limiter = limiters[w % 3].clone();
            let admitted = Arc::clone(&admitted);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                while start.elapsed() < run {
                    let d = limiter.check(&[Check::tokens("tpm", tpm, ESTIMATE)]).await;
                    match d.denied {
                        None => {
                            let actual = rng.gen_range(50..=ESTIMATE);
                            let at = start.elapsed();
                            admitted
                                .lock()
                                .unwrap_or_else(|e| panic!("{e}"))
                                .push((at, actual));
                            let latency = rng.gen_range(5..60);
                            tokio::time::sleep(Duration::from_millis(latency)).await;
                            limiter
                                .adjust("tpm", tpm, actual as i64 - ESTIMATE as i64)
                                .await;
                        }
                        Some(denial) => {
                            tokio::time::sleep(denial.retry_after.min(Duration::from_millis(20)))
                                .await;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let admitted = admitted.lock().unwrap_or_else(|e| panic!("{e}")).clone();
    let window = |from: Duration| -> u64 {
        admitted
            .iter()
            .filter(|(t, _)| *t >= from && *t < from + Duration::from_secs(1))
            .map(|(_, a)| a)
            .sum()
    };
    assert!(window(Duration::ZERO) <= 2 * LIMIT + LIMIT / 20);
    let mut worst = 0.0f64;
    for ms in (1_000..=2_900).step_by(20) {
        let sum = window(Duration::from_millis(ms)) as f64;
        let off = (sum - LIMIT as f64).abs() / LIMIT as f64;
        worst = worst.max(off);
        assert!(
            off <= 0.05,
            "window at {ms} ms admitted {sum} actual tokens"
        );
    }
    eprintln!(
        "redis: worst one-period window {:.2} % off the limit",
        worst * 100.0
    );
    assert_healthy(&limiters);
}
