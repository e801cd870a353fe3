//! Delivers billing events to the operator's webhook: signed, retried with backoff, at least
//! once. Each request carries `x-gateway-event-id` (also `idempotency-key`: receivers
//! deduplicate on it) and `x-gateway-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, so a receiver can check the sender and reject replays older than five
//! minutes. Fetches go through the egress guard and follow no redirects.

use std::time::Duration;

use bytes::Bytes;
use store::Store;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 64 * 1024;
/// After this many failed attempts (about a day of backoff) an event is marked failed.
const MAX_ATTEMPTS: i64 = 16;
/// How long a claimed event is reserved for this deliverer.
const LEASE_MS: i64 = 60_000;

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Seconds until the next attempt after `attempts` failures: 1, 2, 4, … capped at an hour.
fn backoff(attempts: i64) -> i64 {
    2_i64
        .saturating_pow(u32::try_from(attempts.clamp(0, 12)).unwrap_or(12))
        .min(3600)
}

/// Delivers what is due once; returns how many events were delivered.
pub async fn deliver_due(store: &Store, http: &providers::http::Client) -> usize {
    let hook = match store.billing_webhook().await {
        Ok(Some(h)) => h,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!(error = %e, "billing webhook unreadable");
            return 0;
        }
    };
    let due = match store.claim_events(100, LEASE_MS).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "billing events unreadable");
            return 0;
        }
    };
    let mut delivered = 0;
    for e in due {
        let body = serde_json::json!({"id": e.id, "type": e.kind, "created_at": e.created_at,
                                      "data": e.payload});
        let body = Bytes::from(body.to_string());
        let t = jiff::Timestamp::now().as_second();
        let headers = [
            ("x-gateway-event-id", e.id.clone()),
            ("idempotency-key", e.id.clone()),
            ("x-gateway-signature", signature(hook.1.expose(), t, &body)),
        ];
        let outcome = http
            .post_limited(&hook.0, &headers, body, TIMEOUT, MAX_ANSWER)
            .await;
        let recorded = match outcome {
            Ok(_) => {
                delivered += 1;
                store.event_delivered(&e.id).await
            }
            Err(err) => {
                let attempts = e.attempts + 1;
                let retry = (attempts < MAX_ATTEMPTS)
                    .then(|| jiff::Timestamp::now().as_millisecond() + backoff(attempts) * 1000);
                tracing::warn!(event = %e.id, attempts, error = %err, "billing event not delivered");
                store.event_failed(&e.id, &err.to_string(), retry).await
            }
        };
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "billing event state not saved; it will be sent again");
        }
    }
    delivered
}

/// Delivers due events every second until the task is aborted.
pub async fn deliver_loop(store: Store, http: providers::http::Client) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        deliver_due(&store, &http).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_scheme() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently (Python hmac).
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!((backoff(0), backoff(1), backoff(3)), (1, 2, 8));
        assert_eq!(backoff(40), 3600);
    }
}
