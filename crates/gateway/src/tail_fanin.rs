//! The live tail across instances: with `GATEWAY_REDIS_URL` set, every instance publishes the
//! rows it finishes to one Redis channel and shows the other instances' rows in its own tail, so
//! `gateway logs tail` against any instance sees every request.
//!
//! Publishing is fire-and-forget from a task fed by the log's local broadcast: a slow or
//! unreachable Redis costs tail rows (counted), never a request. Rows from one instance arrive
//! in the order that instance finished them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pipeline::log::RequestLog;
use serde::{Deserialize, Serialize};
use store::LogRow;
use tokio::sync::broadcast::error::RecvError;

/// The Redis channel, under the limiter's key prefix so deployments sharing a Redis stay apart.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}tail")
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance (its own rows are already in its tail).
    from: String,
    row: LogRow,
}

#[derive(Debug, Default)]
pub struct FaninCounters {
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub lost: AtomicU64,
}

/// Starts the publisher and the subscriber; both reconnect by themselves.
pub fn spawn(
    log: Arc<RequestLog>,
    client: redis::Client,
    channel: String,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<FaninCounters>) {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let counters = Arc::new(FaninCounters::default());
    let publisher = tokio::spawn(publish(
        log.clone(),
        client.clone(),
        channel.clone(),
        instance.clone(),
        counters.clone(),
    ));
    let subscriber = tokio::spawn(subscribe(log, client, channel, instance, counters.clone()));
    (vec![publisher, subscriber], counters)
}

async fn publish(
    log: Arc<RequestLog>,
    client: redis::Client,
    channel: String,
    instance: String,
    counters: Arc<FaninCounters>,
) {
    let mut rx = log.subscribe_local();
    let mut conn = None;
    loop {
        let row = match rx.recv().await {
            Ok(r) => r,
            Err(RecvError::Lagged(n)) => {
                counters.lost.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            counters.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let env = Envelope {
            from: instance.clone(),
            row: (*row).clone(),
        };
        let Ok(payload) = serde_json::to_string(&env) else {
            continue;
        };
        let sent = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async::<i64>(c),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                counters.published.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

async fn subscribe(
    log: Arc<RequestLog>,
    client: redis::Client,
    channel: String,
    instance: String,
    counters: Arc<FaninCounters>,
) {
    use futures::StreamExt as _;
    let mut wait = Duration::from_millis(100);
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "tail fan-in: Redis unreachable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if pubsub.subscribe(&channel).await.is_err() {
            tokio::time::sleep(wait).await;
            continue;
        }
        wait = Duration::from_millis(100);
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(env) = serde_json::from_str::<Envelope>(&payload) else {
                continue;
            };
            if env.from != instance {
                counters.received.fetch_add(1, Ordering::Relaxed);
                log.inject(env.row);
            }
        }
        // The connection ended: subscribe again.
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances' logs on one Redis: each tail shows both instances' rows, once, in each
    /// instance's order.
    #[tokio::test]
    async fn each_instance_tails_every_instance() {
        let Some(url) = std::env::var("GATEWAY_TEST_REDIS_URL")
            .ok()
            .filter(|v| !v.is_empty())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but GATEWAY_TEST_REDIS_URL is not"
            );
            eprintln!("notice: tail fan-in test skipped (no Redis URL)");
            return;
        };
        let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{e}"));
        let ch = channel(&format!("t{}:", uuid::Uuid::new_v4().simple()));
        let a = Arc::new(RequestLog::new(None, 16));
        let b = Arc::new(RequestLog::new(None, 16));
        let (_ta, ca) = spawn(a.clone(), client.clone(), ch.clone());
        let (_tb, cb) = spawn(b.clone(), client, ch);
        // Both subscribers are listening before anything is published.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..5 {
            drop(a.start(format!("req_a{i}"), "default", "/v1/models"));
            drop(b.start(format!("req_b{i}"), "default", "/v1/models"));
        }
        let ids = |log: &RequestLog| -> Vec<String> {
            log.subscribe()
                .0
                .iter()
                .map(|r| r.request_id.clone())
                .collect()
        };
        for _ in 0..100 {
            if ids(&a).len() == 10 && ids(&b).len() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (name, log) in [("a", &a), ("b", &b)] {
            let got = ids(log);
            assert_eq!(got.len(), 10, "{name}: {got:?}");
            for prefix in ["req_a", "req_b"] {
                let mine: Vec<&String> = got.iter().filter(|i| i.starts_with(prefix)).collect();
                let want: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
                assert_eq!(
                    mine,
                    want.iter().collect::<Vec<_>>(),
                    "{name}: in order, once"
                );
            }
        }
        assert_eq!(ca.received.load(Ordering::Relaxed), 5);
        assert_eq!(cb.received.load(Ordering::Relaxed), 5);
        assert_eq!(
            ca.lost.load(Ordering::Relaxed) + cb.lost.load(Ordering::Relaxed),
            0
        );
    }
}
