//! The edge over real HTTP: gateway APIs from the path, IP rules before auth, gateway keys from
//! a real SQLite store. Every rejection must happen before any upstream call, so each test
//! checks that the emulator saw nothing.
#![expect(
    clippy::panic,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use access::api::{Api, AuthMode, DEFAULT_API};
use access::ip::IpRules;
use access::keys::{self, DEFAULT_PREFIX};
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Route, Target};
use serde_json::{Value, json};
use store::{ConsumerInput, KeyInput, Store};
use testkit::Emulator;
use wire::secret::Secret;

struct Env {
    emu: Emulator,
    store: Store,
    gw: Arc<Gateway>,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Every data-plane route: method, path under an API's `/v1`, and a body that would succeed.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
        ),
        (
            "POST",
            "/v1/messages",
            Some(json!({"model": "gpt-4o", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hi"}]})),
        ),
        (
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "text-embedding-3-small", "input": "hi"})),
        ),
        ("GET", "/v1/models", None),
    ]
}

/// `/v1/...` for the default API, `/{api}/v1/...` for the others.
fn under(api: &str, path: &str) -> String {
    if api == DEFAULT_API {
        path.to_string()
    } else {
        format!("/{api}{path}")
    }
}

async fn store_in(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let (cipher, _) = store::Cipher::generate();
    let store = Store::connect(&url, cipher)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    store
}

fn snapshot(emu: &Emulator, apis: Vec<Api>, trusted: &str) -> Snapshot {
    let http = providers::http::client(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = ProviderSpec::build(
        "openai",
        "openai",
        Some(&format!("{}/v1", emu.url())),
        Some(Secret::new("test-key")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    spec.timeout = Duration::from_secs(5);
    let routes = vec![
        Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")]),
        Route::new(
            "text-embedding-3-small",
            vec![Target::new("openai", "text-embedding-3-small")],
        ),
    ];
    let mut snap = Snapshot::build(vec![spec], routes, &http);
    for a in apis {
        snap.publish(a);
    }
    snap.trusted_proxies = trusted
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect();
    snap
}

async fn serve(gw: Arc<Gateway>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = pipeline::app(gw).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn start(apis: Vec<Api>, trusted: &str) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = store_in(&dir).await;
    let gw = Gateway::with_store(Limits::default(), store.clone());
    gw.swap(snapshot(&emu, apis, trusted));
    let url = serve(gw.clone()).await;
    Env {
        emu,
        store,
        gw,
        url,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

fn api(slug: &str, auth: AuthMode) -> Api {
    Api::new(slug, auth)
}

fn with_ip(mut a: Api, allow: &[&str], block: &[&str]) -> Api {
    let parse = |v: &[&str]| {
        v.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    };
    a.settings.ip = IpRules {
        allow: parse(allow),
        block: parse(block),
    };
    a
}

impl Env {
    /// Issues a key for a fresh consumer; `edit` adjusts scopes, expiry and so on.
    async fn key(&self, edit: impl FnOnce(&mut KeyInput)) -> (String, String) {
        let name = format!("c{}", uuid::Uuid::new_v4().simple());
        let consumer = self
            .store
            .create_consumer(&ConsumerInput::new(name))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let k = keys::generate(DEFAULT_PREFIX);
        let mut input = KeyInput::new(Some(consumer.id), "test", hex::encode(k.hash), k.display);
        edit(&mut input);
        let rec = self
            .store
            .create_key(&input)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (k.raw, rec.id)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = match method {
            "GET" => self.client.get(format!("{}{path}", self.url)),
            _ => self.client.post(format!("{}{path}", self.url)),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// The OpenAI-style error code, or for the Anthropic route (whose errors carry only a type) the
/// code that type stands for here.
fn error_code<'a>(path: &str, v: &'a Value) -> &'a str {
    if path == "/v1/messages" {
        assert_eq!(v["type"], "error", "{v}");
        return match v["error"]["type"].as_str() {
            Some("authentication_error") => "invalid_api_key",
            Some("permission_error") => match v["error"]["message"].as_str() {
                Some(m) if m.contains("address") => "ip_not_allowed",
                _ => "key_scope",
            },
            _ => "?",
        };
    }
    v["error"]["code"].as_str().unwrap_or("?")
}

/// What is presented, the headers, the status and error code expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn every_route_refuses_bad_credentials_and_addresses_before_any_upstream_call() {
    let env = start(
        vec![
            api(DEFAULT_API, AuthMode::Keys),
            api("team", AuthMode::Keys),
            api("other", AuthMode::Keys),
            with_ip(
                api("locked", AuthMode::Keys),
                &[],
                &["127.0.0.0/8", "::1/128"],
            ),
            with_ip(api("office", AuthMode::Keys), &["10.0.0.0/8"], &[]),
        ],
        "",
    )
    .await;
    let (good, _) = env.key(|_| {}).await;
    let (revoked, revoked_id) = env.key(|_| {}).await;
    env.store
        .revoke_key(&revoked_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (expired, _) = env.key(|k| k.expires_at = Some(1_000)).await;
    let (scoped, _) = env.key(|k| k.scopes = json!({"apis": ["other"]})).await;

    let good_h = bearer(&good);
    let revoked_h = bearer(&revoked);
    let expired_h = bearer(&expired);
    let scoped_h = bearer(&scoped);
    let mut cases = 0;
    for (method, path, body) in routes() {
        for slug in [DEFAULT_API, "team"] {
            let p = under(slug, path);
            let matrix: [Case; 6] = [
                ("no key", vec![], 401, "invalid_api_key"),
                (
                    "revoked key",
                    vec![("authorization", &revoked_h)],
                    401,
                    "invalid_api_key",
                ),
                (
                    "expired key",
                    vec![("authorization", &expired_h)],
                    401,
                    "invalid_api_key",
                ),
                (
                    "key scoped to another API",
                    vec![("authorization", &scoped_h)],
                    403,
                    "key_scope",
                ),
                (
                    "garbage",
                    vec![("authorization", "Bearer ' OR 1=1 --")],
                    401,
                    "invalid_api_key",
                ),
                (
                    "x-api-key revoked",
                    vec![("x-api-key", &revoked)],
                    401,
                    "invalid_api_key",
                ),
            ];
            for (what, headers, status, code) in matrix {
                let (st, v) = env.call(method, &p, body.as_ref(), &headers).await;
                assert_eq!(st, status, "{what} on {method} {p}: {v}");
                assert_eq!(error_code(path, &v), code, "{what} on {method} {p}: {v}");
                let text = v.to_string();
                for secret in [&good, &revoked, &expired, &scoped] {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{what}: error echoes a key"
                    );
                }
                cases += 1;
            }
        }
        // The IP rules come before auth: a valid key does not help.
        let (st, v) = env
            .call(
                method,
                &under("locked", path),
                body.as_ref(),
                &[("authorization", &good_h)],
            )
            .await;
        assert_eq!((st, error_code(path, &v)), (403, "ip_not_allowed"), "{v}");
        // No trusted proxy is configured: a forwarded address is not believed.
        let (st, v) = env
            .call(
                method,
                &under("office", path),
                body.as_ref(),
                &[("authorization", &good_h), ("x-forwarded-for", "10.1.2.3")],
            )
            .await;
        assert_eq!((st, error_code(path, &v)), (403, "ip_not_allowed"), "{v}");
        cases += 2;
    }
    assert_eq!(cases, routes().len() * 14);
    assert!(
        env.emu.requests().is_empty(),
        "a rejected request reached the upstream: {:?}",
        env.emu
            .requests()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );

    // The positive control: the same routes with the good key do reach the upstream.
    for (method, path, body) in routes() {
        for slug in [DEFAULT_API, "team"] {
            let p = under(slug, path);
            let (st, v) = env
                .call(method, &p, body.as_ref(), &[("authorization", &good_h)])
                .await;
            assert_eq!(st, 200, "{method} {p}: {v}");
        }
    }
    assert_eq!(
        env.emu.requests().len(),
        6,
        "3 upstream routes under 2 APIs"
    );
}

#[tokio::test]
async fn an_unknown_api_is_a_404_and_a_public_api_needs_no_key() {
    let env = start(vec![api("open", AuthMode::Public)], "").await;
    // No `default` API published: the implicit one requires keys.
    let (st, v) = env.call("GET", "/v1/models", None, &[]).await;
    assert_eq!(st, 401, "{v}");
    let (st, v) = env.call("GET", "/nope/v1/models", None, &[]).await;
    assert_eq!(st, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nope"),
        "{v}"
    );
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let (st, v) = env
        .call("POST", "/open/v1/chat/completions", Some(&body), &[])
        .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn the_missing_and_invalid_key_messages_explain_the_prefix() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    let (st, v) = env.call("GET", "/v1/models", None, &[]).await;
    assert_eq!(st, 401);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let presented = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    let (st, v) = env
        .call(
            "GET",
            "/v1/models",
            None,
            &[("authorization", &bearer(presented))],
        )
        .await;
    assert_eq!(st, 401);
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("gw_"), "{msg}");
    assert!(
        !v.to_string().contains("abcdefghij"),
        "the presented key is echoed: {v}"
    );
}

#[tokio::test]
async fn authorization_garbage_gets_one_uniform_401() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    let (good, _) = env.key(|_| {}).await;
    let long = format!("Bearer gw_live_{}", "A".repeat(16 * 1024));
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("authorization", "Bearer ' OR '1'='1".into())],
        vec![(
            "authorization",
            "Bearer gw_live_'; DROP TABLE gateway_keys; --".into(),
        )],
        vec![("authorization", "Bearer gw_live_%00%00".into())],
        vec![("authorization", long)],
        vec![("authorization", "Basic Z3c6Z3c=".into())],
        vec![("authorization", "Bearer".into())],
        vec![("authorization", format!("Bearer {good}x"))],
        vec![(
            "authorization",
            format!("Bearer {}", &good[..good.len() - 1]),
        )],
        vec![("authorization", format!("Bearer {}", good.to_uppercase()))],
        // Two credentials are ambiguous even when one of them is good.
        vec![
            ("authorization", bearer(&good)),
            ("authorization", "Bearer gw_live_other".into()),
        ],
        vec![("x-api-key", good.clone()), ("x-api-key", "x".into())],
    ];
    let mut messages = std::collections::BTreeSet::new();
    for headers in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, v) = env.call("GET", "/v1/models", None, &h).await;
        assert_eq!(st, 401, "{headers:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        messages.insert(v["error"]["message"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(messages.len(), 1, "garbage is told apart: {messages:?}");

    // A NUL byte never gets past the HTTP parser; the answer is still a refusal.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer gw_\0x\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 401"),
        "{head}"
    );
    assert!(env.emu.requests().is_empty());
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let env = start(
        vec![with_ip(
            api(DEFAULT_API, AuthMode::Public),
            &["10.0.0.0/8"],
            &["10.9.0.0/16"],
        )],
        "127.0.0.1/32",
    )
    .await;
    for (xff, status) in [
        (Some("10.1.2.3"), 200),
        // The rightmost untrusted hop is the client; what the client wrote to its left is not.
        (Some("10.1.2.3, 203.0.113.9"), 403),
        (Some("203.0.113.9, 10.1.2.3"), 200),
        (Some("10.9.1.1"), 403),
        // Malformed: the socket peer (127.0.0.1, not allowed) is the client.
        (Some("10.1.2.3, banana"), 403),
        (Some("10.1.2.3:443"), 200), // ip:port, as some load balancers write it
        (Some("999.1.2.3"), 403),
        (Some("10.1.2.3,"), 403),
        (None, 403),
    ] {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let (st, v) = env.call("GET", "/v1/models", None, &headers).await;
        assert_eq!(st, status, "x-forwarded-for {xff:?}: {v}");
    }
}

#[tokio::test]
async fn a_revocation_reaches_every_instance_within_a_second() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    // A second instance on the same store.
    let gw2 = Gateway::with_store(Limits::default(), env.store.clone());
    gw2.swap(snapshot(
        &env.emu,
        vec![api(DEFAULT_API, AuthMode::Keys)],
        "",
    ));
    let url2 = serve(gw2.clone()).await;
    let _w1 = env.gw.keys.watch();
    let _w2 = gw2.keys.watch();

    let (key, id) = env.key(|_| {}).await;
    let h = bearer(&key);
    let models = |url: String, h: String| {
        let c = env.client.clone();
        async move {
            c.get(format!("{url}/v1/models"))
                .header("authorization", h)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    // Both instances have the key cached.
    assert_eq!(models(env.url.clone(), h.clone()).await, 200);
    assert_eq!(models(url2.clone(), h.clone()).await, 200);

    let revoked_at = Instant::now();
    env.store
        .revoke_key(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut pending = vec![env.url.clone(), url2.clone()];
    while !pending.is_empty() {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s by {pending:?}"
        );
        let mut still = Vec::new();
        for u in pending {
            if models(u.clone(), h.clone()).await != 401 {
                still.push(u);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotated_key_keeps_the_old_one_for_the_grace_period() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    let _w = env.gw.keys.watch();
    let (old, id) = env.key(|_| {}).await;
    assert_eq!(
        env.call(
            "GET",
            "/v1/models",
            None,
            &[("authorization", &bearer(&old))]
        )
        .await
        .0,
        200
    );
    let old_rec = env
        .store
        .get_key(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("key gone"));
    let k = keys::generate(DEFAULT_PREFIX);
    let input = KeyInput::rotated_from(&old_rec, hex::encode(k.hash), k.display);
    env.store
        .rotate_key(&id, &input, 1_500)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    for key in [&old, &k.raw] {
        let (st, v) = env
            .call(
                "GET",
                "/v1/models",
                None,
                &[("authorization", &bearer(key))],
            )
            .await;
        assert_eq!(st, 200, "within the grace period: {v}");
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (st, v) = env
        .call(
            "GET",
            "/v1/models",
            None,
            &[("authorization", &bearer(&old))],
        )
        .await;
    assert_eq!(
        (st, v["error"]["message"].as_str()),
        (401, Some("This gateway key has expired."))
    );
    let (st, _) = env
        .call(
            "GET",
            "/v1/models",
            None,
            &[("authorization", &bearer(&k.raw))],
        )
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn keys_in_use_keep_working_while_the_store_is_down_and_unknown_ones_get_503() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    let (key, _) = env.key(|_| {}).await;
    let (unseen, _) = env.key(|_| {}).await;
    let h = bearer(&key);
    assert_eq!(
        env.call("GET", "/v1/models", None, &[("authorization", &h)])
            .await
            .0,
        200
    );
    // A key seen in the last minute is answered from memory, not from the database.
    env.store.close().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let (st, v) = env
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&body),
            &[("authorization", &h)],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // A key never seen cannot be checked: that is the gateway's problem, not a bad key.
    let (st, v) = env
        .call(
            "GET",
            "/v1/models",
            None,
            &[("authorization", &bearer(&unseen))],
        )
        .await;
    assert_eq!(st, 503, "{v}");
}

#[tokio::test]
async fn a_key_scoped_to_models_lists_and_calls_only_those() {
    let env = start(vec![api(DEFAULT_API, AuthMode::Keys)], "").await;
    let (key, _) = env.key(|k| k.scopes = json!({"models": ["gpt-4o"]})).await;
    let h = bearer(&key);
    let (st, v) = env
        .call("GET", "/v1/models", None, &[("authorization", &h)])
        .await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec!["gpt-4o"], "{v}");
    let body = json!({"model": "text-embedding-3-small", "input": "hi"});
    let (st, v) = env
        .call(
            "POST",
            "/v1/embeddings",
            Some(&body),
            &[("authorization", &h)],
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("model_not_allowed")),
        "{v}"
    );
    assert!(env.emu.requests().is_empty());
}
