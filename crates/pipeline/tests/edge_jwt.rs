//! Bring-your-own JWT over real HTTP: an identity provider on loopback publishes its JWKS, the
//! gateway fetches it through the egress-guarded client, and every forged token is refused
//! before any upstream call.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::api::{Api, AuthMode};
use access::jwks::CacheOptions;
use access::jwt::{Alg, JwtConfig};
use access::keys::{self, DEFAULT_PREFIX};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use providers::egress::EgressPolicy;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use router::{Route, Target};
use serde_json::{Value, json};
use store::{ConsumerInput, KeyInput, Store};
use testkit::Emulator;
use wire::secret::Secret;

const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "gateway";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap_or_else(|e| panic!("{e}"));
        let pair =
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap_or_else(|e| panic!("{e}"));
        SigningKey {
            kid: kid.into(),
            pair,
        }
    }

    fn jwk(&self) -> Value {
        // Uncompressed point: 0x04 ‖ x ‖ y.
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
               "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// A well-formed token for `sub`, valid for ten minutes.
    fn token(&self, sub: &str) -> String {
        self.sign(&self.header(), &claims(sub))
    }

    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": self.kid})
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

fn claims(sub: &str) -> Value {
    let t = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": t, "nbf": t, "exp": t + 600})
}

/// What the identity provider answers at `/jwks.json`, and how often it was asked.
struct Idp {
    url: String,
    reply: Mutex<(u16, String)>,
    hits: AtomicUsize,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Arc<Idp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let idp = Arc::new(Idp {
            url: format!("http://{addr}"),
            reply: Mutex::new((200, String::new())),
            hits: AtomicUsize::new(0),
        });
        idp.publish(keys);
        let state = idp.clone();
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(move || {
                    let state = state.clone();
                    async move {
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = state
                            .reply
                            .lock()
                            .map(|r| r.clone())
                            .unwrap_or((500, String::new()));
                        (
                            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                            [("content-type", "application/json")],
                            body,
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/moved.json",
                axum::routing::get(|| async {
                    (StatusCode::FOUND, [("location", "/jwks.json")]).into_response()
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    fn publish(&self, keys: &[&SigningKey]) {
        let body = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string();
        self.set(200, body);
    }

    fn set(&self, status: u16, body: String) {
        if let Ok(mut r) = self.reply.lock() {
            *r = (status, body);
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwt_config(jwks_url: String) -> JwtConfig {
    JwtConfig {
        jwks_url,
        issuer: ISSUER.into(),
        audience: vec![AUDIENCE.into()],
        algorithms: Alg::ALL.to_vec(),
        leeway_secs: 30,
        consumer_claim: "sub".into(),
    }
}

fn jwt_api(slug: &str, auth: AuthMode, jwks_url: String) -> Api {
    let mut a = Api::new(slug, auth);
    a.settings.jwt = Some(jwt_config(jwks_url));
    a.validate().unwrap_or_else(|e| panic!("{e}"));
    a
}

struct Env {
    emu: Emulator,
    store: Store,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn loopback_client() -> providers::http::Client {
    providers::http::client(
        EgressPolicy::parse_allow("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A gateway serving `apis`, fetching JWKS with `jwks_client` and the given cache options.
async fn start_with(
    apis: Vec<Api>,
    jwks_client: providers::http::Client,
    options: CacheOptions,
) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let (cipher, _) = store::Cipher::generate();
    let store = Store::connect(&url, cipher)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));

    let limits = Limits {
        jwks: options,
        ..Limits::default()
    };
    let gw = Gateway::with_store(limits, store.clone());
    gw.jwt.set_http(jwks_client);
    let mut spec = ProviderSpec::build(
        "openai",
        "openai",
        Some(&format!("{}/v1", emu.url())),
        Some(Secret::new("test-key")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    spec.timeout = Duration::from_secs(5);
    let mut snap = Snapshot::build(
        vec![spec],
        vec![Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")])],
        &loopback_client(),
    );
    for a in apis {
        snap.publish(a);
    }
    gw.swap(snap);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = pipeline::app(gw).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Env {
        emu,
        store,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn start(apis: Vec<Api>) -> Env {
    start_with(apis, loopback_client(), CacheOptions::default()).await
}

impl Env {
    async fn chat(&self, api: &str, token: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/{api}/v1/chat/completions", self.url))
            .bearer_auth(token)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn consumers_named(&self, external_id: &str) -> usize {
        self.store
            .list_consumers()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|c| c.external_id.as_deref() == Some(external_id))
            .count()
    }
}

#[tokio::test]
async fn a_valid_token_admits_and_finds_or_creates_its_consumer_once() {
    let key = SigningKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let env = start(vec![jwt_api(
        "id",
        AuthMode::Jwt,
        format!("{}/jwks.json", idp.url),
    )])
    .await;

    let (st, v) = env.chat("id", &key.token("user-1")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(env.consumers_named("user-1").await, 1);
    // A second token for the same subject: same consumer, no new JWKS fetch.
    let (st, _) = env.chat("id", &key.token("user-1")).await;
    assert_eq!(st, 200);
    let (st, _) = env.chat("id", &key.token("user-2")).await;
    assert_eq!(st, 200);
    assert_eq!(env.consumers_named("user-1").await, 1);
    assert_eq!(env.consumers_named("user-2").await, 1);
    assert_eq!(idp.hits(), 1, "the JWKS is cached");
    assert_eq!(env.emu.requests().len(), 3);
}

#[tokio::test]
async fn forged_and_unfit_tokens_are_refused_before_the_upstream() {
    let key = SigningKey::new("k1");
    let other = SigningKey::new("k1"); // same kid, different key: a forger's guess
    let idp = Idp::start(&[&key]).await;
    let env = start(vec![jwt_api(
        "id",
        AuthMode::Jwt,
        format!("{}/jwks.json", idp.url),
    )])
    .await;
    // Warm the cache so every case below is judged against the real key set.
    assert_eq!(env.chat("id", &key.token("warm")).await.0, 200);
    let before = env.emu.requests().len();

    let t = now();
    let patch = |p: Value| {
        let mut c = claims("user-1");
        for (k, v) in p.as_object().into_iter().flatten() {
            if v.is_null() {
                c.as_object_mut().map(|o| o.remove(k));
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let good = key.token("user-1");
    let (h, p, _) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    // An HMAC over the token with the issuer's public key as the secret: the classic confusion.
    let hs256 = {
        let header = b64(json!({"alg": "HS256", "kid": "k1"}).to_string().as_bytes());
        let input = format!("{header}.{p}");
        let secret = key.jwk().to_string();
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&k, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{p}.",
                b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes())
            ),
            "algorithm",
        ),
        ("HS256 with the public key", hs256, "algorithm"),
        (
            "RS256 header on an EC key",
            key.sign(&json!({"alg": "RS256", "kid": "k1"}), &claims("user-1")),
            "key",
        ),
        (
            "wrong issuer",
            key.sign(
                &key.header(),
                &patch(json!({"iss": "https://evil.example"})),
            ),
            "issuer",
        ),
        (
            "wrong audience",
            key.sign(&key.header(), &patch(json!({"aud": "someone-else"}))),
            "audience",
        ),
        (
            "expired beyond the leeway",
            key.sign(&key.header(), &patch(json!({"exp": t - 120}))),
            "expired",
        ),
        (
            "not yet valid",
            key.sign(&key.header(), &patch(json!({"nbf": t + 600}))),
            "not yet valid",
        ),
        (
            "no subject",
            key.sign(&key.header(), &patch(json!({"sub": null}))),
            "claim",
        ),
        (
            "unknown kid",
            key.sign(
                &json!({"alg": "ES256", "kid": "nobody-has-this"}),
                &claims("user-1"),
            ),
            "unknown signing key",
        ),
        (
            "jku header",
            key.sign(
                &json!({"alg": "ES256", "kid": "k1", "jku": "http://127.0.0.1:1/keys"}),
                &claims("user-1"),
            ),
            "header",
        ),
        (
            "x5u header",
            key.sign(
                &json!({"alg": "ES256", "kid": "k1", "x5u": "http://127.0.0.1:1/cert"}),
                &claims("user-1"),
            ),
            "header",
        ),
        (
            "embedded jwk header",
            other.sign(
                &json!({"alg": "ES256", "kid": "k1", "jwk": other.jwk()}),
                &claims("user-1"),
            ),
            "header",
        ),
        (
            "signed by another key under the same kid",
            other.token("user-1"),
            "signature",
        ),
        (
            "payload swapped after signing",
            format!(
                "{h}.{}.{}",
                b64(patch(json!({"sub": "admin"})).to_string().as_bytes()),
                good.rsplit('.').next().unwrap_or_default()
            ),
            "signature",
        ),
        ("signature stripped", format!("{h}.{p}."), "malformed"),
        ("not base64", "a.b.c".to_string(), "malformed"),
    ];
    for (name, token, reason) in &cases {
        let (st, v) = env.chat("id", token).await;
        assert_eq!(st, 401, "{name}: {v}");
        assert_eq!(v["error"]["code"], "invalid_api_key", "{name}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("Invalid JWT") && msg.contains(reason),
            "{name}: {msg}"
        );
        assert!(!msg.contains(token.as_str()), "{name}: token echoed");
    }
    assert_eq!(
        env.emu.requests().len(),
        before,
        "a refused token reached the upstream"
    );
    assert_eq!(env.consumers_named("user-1").await, 0);
    assert_eq!(env.consumers_named("admin").await, 0);
    // A gateway key means nothing to a JWT-only API.
    let k = keys::generate(DEFAULT_PREFIX);
    assert_eq!(env.chat("id", &k.raw).await.0, 401);
}

#[tokio::test]
async fn keys_or_jwt_accepts_either_credential() {
    let key = SigningKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let env = start(vec![jwt_api(
        "both",
        AuthMode::KeysOrJwt,
        format!("{}/jwks.json", idp.url),
    )])
    .await;
    let consumer = env
        .store
        .create_consumer(&ConsumerInput::new("keyed"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let k = keys::generate(DEFAULT_PREFIX);
    env.store
        .create_key(&KeyInput::new(
            Some(consumer.id),
            "test",
            hex::encode(k.hash),
            k.display,
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(env.chat("both", &k.raw).await.0, 200);
    assert_eq!(env.chat("both", &key.token("user-9")).await.0, 200);
    let (st, v) = env.chat("both", "neither-a-key-nor-a-token").await;
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gw_"),
        "{v}"
    );
    assert_eq!(env.emu.requests().len(), 2);
}

#[tokio::test]
async fn a_suspended_consumer_is_refused() {
    let key = SigningKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let env = start(vec![jwt_api(
        "id",
        AuthMode::Jwt,
        format!("{}/jwks.json", idp.url),
    )])
    .await;
    let mut input = ConsumerInput::new("banned");
    input.external_id = Some("user-x".into());
    input.status = "suspended".into();
    env.store
        .create_consumer(&input)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (st, v) = env.chat("id", &key.token("user-x")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("consumer_suspended")),
        "{v}"
    );
    assert!(env.emu.requests().is_empty());
}

#[tokio::test]
async fn unknown_kids_refresh_at_most_once_per_interval_and_the_last_good_set_outlives_an_outage() {
    let a = SigningKey::new("a");
    let b = SigningKey::new("b");
    let idp = Idp::start(&[&a]).await;
    let options = CacheOptions {
        min_refresh: Duration::from_millis(800),
        ..CacheOptions::default()
    };
    let env = start_with(
        vec![jwt_api(
            "id",
            AuthMode::Jwt,
            format!("{}/jwks.json", idp.url),
        )],
        loopback_client(),
        options,
    )
    .await;
    assert_eq!(env.chat("id", &a.token("u")).await.0, 200);
    assert_eq!(idp.hits(), 1);

    // The issuer rotates in key b. Within the interval, a burst of b-tokens costs no fetch.
    idp.publish(&[&a, &b]);
    let burst = (0..20).map(|_| {
        let token = b.token("u");
        let env = &env;
        async move { env.chat("id", &token).await.0 }
    });
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(idp.hits(), 1, "refreshes are rate-limited");

    // After the interval, one burst triggers exactly one (single-flight) fetch and b works.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let burst = (0..20).map(|_| {
        let token = b.token("u");
        let env = &env;
        async move { env.chat("id", &token).await.0 }
    });
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(idp.hits(), 2, "one fetch for the whole burst");

    // The endpoint goes down: fresh tokens under known kids still verify.
    idp.set(500, "down".into());
    tokio::time::sleep(Duration::from_millis(900)).await;
    let unknown = a.sign(&json!({"alg": "ES256", "kid": "c"}), &claims("u"));
    assert_eq!(env.chat("id", &unknown).await.0, 401);
    assert_eq!(idp.hits(), 3, "the unknown kid tried the endpoint");
    assert_eq!(env.chat("id", &a.token("u2")).await.0, 200);
    assert_eq!(env.chat("id", &b.token("u3")).await.0, 200);
    // Garbage from the endpoint does not replace the good set either.
    idp.set(200, "{\"keys\": 7}".into());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(env.chat("id", &unknown).await.0, 401);
    assert_eq!(env.chat("id", &a.token("u4")).await.0, 200);
}

#[tokio::test]
async fn the_jwks_fetch_goes_through_the_egress_guard() {
    let key = SigningKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    // No allow list: a JWKS URL on loopback is refused before any connection.
    let guarded =
        providers::http::client(EgressPolicy::default()).unwrap_or_else(|e| panic!("{e}"));
    let env = start_with(
        vec![
            jwt_api("id", AuthMode::Jwt, format!("{}/jwks.json", idp.url)),
            jwt_api("moved", AuthMode::Jwt, format!("{}/moved.json", idp.url)),
        ],
        guarded,
        CacheOptions::default(),
    )
    .await;
    let (st, v) = env.chat("id", &key.token("u")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (503, Some("auth_unavailable")),
        "{v}"
    );
    assert_eq!(idp.hits(), 0, "the guard refused before connecting");

    // Allowed, but the JWKS URL redirects: redirects are not followed.
    let env = start_with(
        vec![jwt_api(
            "moved",
            AuthMode::Jwt,
            format!("{}/moved.json", idp.url),
        )],
        loopback_client(),
        CacheOptions::default(),
    )
    .await;
    assert_eq!(env.chat("moved", &key.token("u")).await.0, 503);
    assert_eq!(idp.hits(), 0, "the redirect was not followed");

    // A document past the size cap is refused.
    idp.set(
        200,
        format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(64 * 1024)),
    );
    let env = start_with(
        vec![jwt_api(
            "id",
            AuthMode::Jwt,
            format!("{}/jwks.json", idp.url),
        )],
        loopback_client(),
        CacheOptions {
            max_bytes: 16 * 1024,
            ..CacheOptions::default()
        },
    )
    .await;
    assert_eq!(env.chat("id", &key.token("u")).await.0, 503);
    assert!(env.emu.requests().is_empty());
}
