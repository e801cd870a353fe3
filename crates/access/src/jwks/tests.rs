//! The cache with a fake fetcher that counts calls; timing under Tokio's paused clock.

use super::*;
use crate::test_tokens::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone)]
enum Mode {
    Body(Vec<u8>),
    Fail,
    Hang,
}

struct Fake {
    calls: AtomicUsize,
    mode: Mutex<Mode>,
    delay: Duration,
}

impl Fake {
    fn new(mode: Mode) -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            mode: Mutex::new(mode),
            delay: Duration::from_millis(200),
        })
    }
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Fetch for Fake {
    fn fetch(&self, url: &str) -> FetchFuture {
        assert_eq!(url, JWKS_URL);
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match mode {
                Mode::Body(b) => Ok(b),
                Mode::Fail => Err("connection refused".to_string()),
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Err("never".to_string())
                }
            }
        })
    }
}

/// `rsa-a` and `p256`.
fn set_a() -> Mode {
    let k = &*KEYS;
    Mode::Body(
        json!({"keys": [jwk_rsa(&k.rsa_a, "rsa-a"), jwk_ec(&k.p256, "p256")]})
            .to_string()
            .into_bytes(),
    )
}

/// `p256` and `ed`: `rsa-a` rotated out, `ed` in.
fn set_b() -> Mode {
    let k = &*KEYS;
    Mode::Body(
        json!({"keys": [jwk_ec(&k.p256, "p256"), jwk_ed(&k.ed, "ed")]})
            .to_string()
            .into_bytes(),
    )
}

fn cache(fake: &Arc<Fake>) -> Arc<JwksCache> {
    Arc::new(JwksCache::new(fake.clone(), CacheOptions::default()))
}

fn unknown_kid_token(kid: &str) -> String {
    sign(
        &json!({"alg": "ES256", "kid": kid}),
        &claims(),
        &signer_for("ES256"),
    )
}

async fn verify_all(c: &Arc<JwksCache>, token: &str, n: usize) -> Vec<Result<Verified, JwtError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        let t = token.to_string();
        set.spawn(async move { c.verify(&cfg(), &t, NOW).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn first_use_fetches_once_for_concurrent_callers() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    let results = verify_all(&c, &token("RS256", &claims()), 100).await;
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(fake.calls(), 1);
    assert_eq!(c.cached(JWKS_URL).unwrap().kids(), vec!["rsa-a", "p256"]);
}

#[tokio::test(start_paused = true)]
async fn unknown_kid_refresh_is_single_flight_and_rate_limited() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    assert!(
        c.verify(&cfg(), &token("RS256", &claims()), NOW)
            .await
            .is_ok()
    );
    assert_eq!(fake.calls(), 1);

    // Rotation: `ed` appears. 100 concurrent tokens with the new kid: one fetch, all verify.
    tokio::time::advance(Duration::from_secs(31)).await;
    fake.set(set_b());
    let results = verify_all(&c, &token("EdDSA", &claims()), 100).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fake.calls(), 2);
    // The rotated-out key no longer verifies (the set is replaced, not merged).
    assert_eq!(
        c.verify(&cfg(), &token("RS256", &claims()), NOW).await,
        Err(JwtError::UnknownKid)
    );
    assert_eq!(fake.calls(), 2, "within min_refresh: no fetch");

    // Another unknown kid within 30 s: no fetch.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(
        c.verify(&cfg(), &unknown_kid_token("nope"), NOW).await,
        Err(JwtError::UnknownKid)
    );
    assert_eq!(fake.calls(), 2);
    // After 30 s: one fetch.
    tokio::time::advance(Duration::from_secs(11)).await;
    let results = verify_all(&c, &unknown_kid_token("nope"), 50).await;
    assert!(results.iter().all(|r| *r == Err(JwtError::UnknownKid)));
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn tokens_refused_on_their_own_never_fetch() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    for t in [
        "garbage".to_string(),
        format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"{}")),
        sign(
            &json!({"alg": "RS256", "kid": "x", "jku": "https://evil"}),
            &claims(),
            &signer_for("RS256"),
        ),
    ] {
        assert!(c.verify(&cfg(), &t, NOW).await.is_err());
    }
    assert_eq!(fake.calls(), 0);
}

async fn failure_keeps_old_set(failure: Mode) {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    let good = token("RS256", &claims());
    assert!(c.verify(&cfg(), &good, NOW).await.is_ok());
    fake.set(failure);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        c.verify(&cfg(), &token("EdDSA", &claims()), NOW).await,
        Err(JwtError::UnknownKid)
    );
    assert_eq!(fake.calls(), 2);
    assert!(c.verify(&cfg(), &good, NOW).await.is_ok());
    assert_eq!(c.cached(JWKS_URL).unwrap().kids(), vec!["rsa-a", "p256"]);
    // A failed attempt also counts against the rate limit.
    assert_eq!(
        c.verify(&cfg(), &token("EdDSA", &claims()), NOW).await,
        Err(JwtError::UnknownKid)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn fetch_error_keeps_old_set() {
    failure_keeps_old_set(Mode::Fail).await;
}

#[tokio::test(start_paused = true)]
async fn fetch_timeout_keeps_old_set() {
    let before = Instant::now();
    failure_keeps_old_set(Mode::Hang).await;
    // 31 s advanced + the 5 s timeout, not the hour the fetch would take.
    assert!(Instant::now() - before < Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn oversize_document_keeps_old_set() {
    let k = &*KEYS;
    let mut doc = json!({"keys": [jwk_ed(&k.ed, "ed")], "pad": ""});
    doc["pad"] = json!("x".repeat(1024 * 1024));
    failure_keeps_old_set(Mode::Body(doc.to_string().into_bytes())).await;
}

#[tokio::test(start_paused = true)]
async fn unparsable_or_empty_document_keeps_old_set() {
    failure_keeps_old_set(Mode::Body(b"<html>oops</html>".to_vec())).await;
    failure_keeps_old_set(Mode::Body(br#"{"keys": []}"#.to_vec())).await;
    failure_keeps_old_set(Mode::Body(
        br#"{"keys": [{"kty": "oct", "kid": "ed", "k": "AAAA"}]}"#.to_vec(),
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_good_set_and_failure_is_unavailable() {
    let fake = Fake::new(Mode::Fail);
    let c = cache(&fake);
    let t = token("RS256", &claims());
    let results = verify_all(&c, &t, 20).await;
    assert!(results.iter().all(|r| *r == Err(JwtError::JwksUnavailable)));
    assert_eq!(fake.calls(), 1);
    assert!(c.cached(JWKS_URL).is_none());
    // The issuer recovers; the next attempt waits for min_refresh.
    fake.set(set_a());
    assert_eq!(
        c.verify(&cfg(), &t, NOW).await,
        Err(JwtError::JwksUnavailable)
    );
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(c.verify(&cfg(), &t, NOW).await.is_ok());
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_sets_are_refetched_in_the_background() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    let rs = token("RS256", &claims());
    assert!(c.verify(&cfg(), &rs, NOW).await.is_ok());

    // Past the TTL with a failing issuer: the stale set keeps serving.
    tokio::time::advance(Duration::from_secs(601)).await;
    fake.set(Mode::Fail);
    assert!(c.verify(&cfg(), &rs, NOW).await.is_ok());
    assert!(c.verify(&cfg(), &rs, NOW).await.is_ok());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.calls(), 2, "one background attempt");
    assert!(c.verify(&cfg(), &rs, NOW).await.is_ok());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.calls(), 2, "rate-limited");

    // Issuer back and rotated: the next background refresh picks it up.
    tokio::time::advance(Duration::from_secs(30)).await;
    fake.set(set_b());
    assert!(
        c.verify(&cfg(), &rs, NOW).await.is_ok(),
        "served from the stale set"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.calls(), 3);
    assert!(
        c.verify(&cfg(), &token("EdDSA", &claims()), NOW)
            .await
            .is_ok()
    );
    assert_eq!(fake.calls(), 3);
    assert_eq!(c.verify(&cfg(), &rs, NOW).await, Err(JwtError::UnknownKid));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_fetch_does_not_block_the_next_caller() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    let t = token("RS256", &claims());
    let cut = tokio::time::timeout(Duration::from_millis(50), c.verify(&cfg(), &t, NOW)).await;
    assert!(cut.is_err());
    assert_eq!(fake.calls(), 1);
    assert!(c.verify(&cfg(), &t, NOW).await.is_ok());
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn urls_are_cached_separately() {
    let fake = Fake::new(set_a());
    let c = cache(&fake);
    assert!(
        c.verify(&cfg(), &token("RS256", &claims()), NOW)
            .await
            .is_ok()
    );
    assert!(c.cached("https://other.example/jwks").is_none());
    let dbg = format!("{c:?}");
    assert!(dbg.contains("urls: 1"), "{dbg}");
}
