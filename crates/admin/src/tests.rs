use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

const TOKEN: &str = "gwa_test";

async fn state() -> (Arc<AdminState>, tempfile::TempDir) {
    state_with(false).await
}

/// With `key_file`, the encryption key lives in the temporary directory's `encryption.key`.
async fn state_with(key_file: bool) -> (Arc<AdminState>, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let cipher = if key_file {
        let keys = store::load_or_create_key_file(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        store::Cipher::from_hex(&keys[0]).unwrap_or_else(|e| panic!("{e}"))
    } else {
        store::Cipher::generate().0
    };
    let store = store::Store::connect(&url, cipher)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let s = Arc::new(AdminState {
        store,
        gateway: pipeline::Gateway::new(pipeline::Limits::default()),
        http: providers::http::client(
            providers::egress::EgressPolicy::parse_allow("127.0.0.0/8")
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}")),
        token_hash: auth::hash(TOKEN),
        key_prefix: access::keys::DEFAULT_PREFIX.into(),
        key_file_dir: key_file.then(|| dir.path().to_path_buf()),
        edge: crate::catalog::EdgeSettings::default(),
    });
    (s, dir)
}

async fn call(
    s: &Arc<AdminState>,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app(s.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test]
async fn every_admin_route_needs_the_token() {
    let (s, _d) = state().await;
    for path in [
        "/admin/providers",
        "/admin/models",
        "/admin/audit",
        "/admin/health/providers",
        "/admin/health/targets",
        "/admin/router",
    ] {
        assert_eq!(
            call(&s, "GET", path, None, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(&s, "GET", path, None, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        call(&s, "GET", "/admin/openapi.json", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_provider_key_goes_in_and_never_comes_out() {
    let (s, _d) = state().await;
    let body = json!({"name": "openai", "kind": "openai", "api_key": "sk-very-secret-1"});
    let (st, v, text) = call(&s, "POST", "/admin/providers", Some(body), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(v["has_api_key"], true);
    for path in [
        "/admin/providers",
        "/admin/providers/openai",
        "/admin/audit",
    ] {
        let (_, _, text) = call(&s, "GET", path, None, Some(TOKEN)).await;
        assert!(!text.contains("sk-very-secret"), "{path}: {text}");
    }
    // The data plane now knows it.
    assert!(s.gateway.snapshot().providers.contains_key("openai"));
    // A replace without a key keeps the key.
    let (st, v, _) = call(
        &s,
        "PUT",
        "/admin/providers/openai",
        Some(json!({"kind": "openai", "priority": 3})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (v["has_api_key"].clone(), v["priority"].clone()),
        (json!(true), json!(3))
    );
    // Creating it again conflicts.
    let again = json!({"name": "openai", "kind": "openai"});
    assert_eq!(
        call(&s, "POST", "/admin/providers", Some(again), Some(TOKEN))
            .await
            .0,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn invalid_definitions_name_the_field() {
    let (s, _d) = state().await;
    let (st, v, _) = call(
        &s,
        "POST",
        "/admin/providers",
        Some(json!({"name": "x", "kind": "openia"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "provider.kind");
    let (st, v, _) = call(
        &s,
        "POST",
        "/admin/providers",
        Some(json!({"name": "x", "kind": "vllm"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (st, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("provider.base_url"))
    );
    let (st, _, _) = call(
        &s,
        "POST",
        "/admin/providers",
        Some(json!({"name": "x", "kind": "openai", "colour": 1})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let model = json!({"name": "smart", "targets": [{"provider": "ghost", "model": "m"}]});
    let (st, v, _) = call(&s, "POST", "/admin/models", Some(model), Some(TOKEN)).await;
    assert_eq!(
        (st, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("model.targets[0].provider"))
    );
}

#[tokio::test]
async fn a_model_is_routable_at_once_and_guards_its_provider() {
    let (s, _d) = state().await;
    call(
        &s,
        "POST",
        "/admin/providers",
        Some(json!({"name": "claude", "kind": "anthropic", "api_key": "k"})),
        Some(TOKEN),
    )
    .await;
    let model = json!({"name": "smart", "targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}], "fallbacks": {"any": ["gpt-4o"]}});
    let (st, _, text) = call(&s, "POST", "/admin/models", Some(model), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let snap = s.gateway.snapshot();
    let r = snap
        .table
        .resolve("smart")
        .map(|r| r.targets[0].model.clone());
    assert_eq!(r.ok().as_deref(), Some("claude-sonnet-4-5"));
    let (st, _, _) = call(&s, "DELETE", "/admin/providers/claude", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        call(&s, "DELETE", "/admin/models/smart", None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&s, "DELETE", "/admin/providers/claude", None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(s.gateway.snapshot().table.resolve("smart").is_err());
    let (_, audit, _) = call(&s, "GET", "/admin/audit", None, Some(TOKEN)).await;
    let actions: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "provider.delete",
            "model.delete",
            "model.create",
            "provider.create"
        ]
    );
}

#[test]
fn the_openapi_document_describes_every_route() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    let paths = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    // Every routed path is documented, and every documented path is routed.
    let src = include_str!("lib.rs");
    let routed: Vec<&str> = src
        .split('"')
        .filter(|s| s.starts_with("/admin/"))
        .collect();
    assert!(routed.contains(&"/admin/prices/{*model}"));
    assert!(routed.len() > 10, "{routed:?}");
    for p in routed {
        assert!(
            paths.iter().any(|x| x == p),
            "{p} missing from openapi.json"
        );
    }
    for p in &paths {
        assert!(
            src.contains(&format!("\"{p}\"")),
            "{p} documented but not routed"
        );
    }
}

async fn with_provider(s: &Arc<AdminState>) {
    let p = json!({"name": "oai", "kind": "openai", "api_key": "sk-test-123"});
    let (st, _, text) = call(s, "POST", "/admin/providers", Some(p), Some(TOKEN)).await;
    assert!(st.is_success(), "{text}");
}

#[tokio::test]
async fn a_model_keeps_its_strategy_rules_and_resilience_settings() {
    let (s, _d) = state().await;
    with_provider(&s).await;
    let m = json!({
        "name": "smart",
        "targets": [{"provider": "oai", "model": "gpt-4o"}, {"provider": "oai", "model": "gpt-4.1", "weight": 3}],
        "fallbacks": {"429": ["cheap"], "5xx": ["cheap"]},
        "strategy": "latency",
        "capabilities": {"tools": true, "prefill": false, "context_window": 128000},
        "retry": {"attempts": 3, "backoff_ms": 100, "max_backoff_ms": 1000, "max_retry_after_ms": 3000},
        "max_hops": 3,
        "timeouts": {"first_token_ms": 5000},
        "rules": [{"name": "night", "when": {"time": {"from": "22:00", "to": "06:00", "tz": "Europe/Berlin"}}, "then": {"model": "cheap"}}]
    });
    let (st, _, text) = call(&s, "POST", "/admin/models", Some(m), Some(TOKEN)).await;
    assert!(st.is_success(), "{text}");
    let (_, got, _) = call(&s, "GET", "/admin/models/smart", None, Some(TOKEN)).await;
    assert_eq!(got["strategy"], "latency");
    assert_eq!(got["fallbacks"]["rate_limited"][0], "cheap");
    assert_eq!(got["retry"]["attempts"], 3);
    assert_eq!(got["timeouts"]["first_token_ms"], 5000);
    assert_eq!(got["timeouts"]["total_ms"], 600000);
    assert_eq!(got["rules"][0]["when"]["time"]["tz"], "Europe/Berlin");
    let snap = s.gateway.snapshot();
    let route = snap
        .table
        .route("smart")
        .unwrap_or_else(|| panic!("no route"));
    assert_eq!(route.strategy, router::Strategy::Latency);
    assert_eq!(route.policy.max_hops, 3);
    assert_eq!(route.caps.context_window, Some(128000));
    assert_eq!(route.rules.len(), 1);
}

#[tokio::test]
async fn invalid_rules_and_policies_are_refused_with_the_field() {
    let (s, _d) = state().await;
    with_provider(&s).await;
    let base = |extra: Value| {
        let mut m = json!({"name": "m", "targets": [{"provider": "oai", "model": "gpt-4o"}]});
        if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        m
    };
    for (extra, field) in [
        (
            json!({"rules": [{"when": {"time": {"from": "22:00", "to": "06:00", "tz": "Mars/Olympus"}}, "then": {"model": "x"}}]}),
            "rules[0].when.time.tz",
        ),
        (json!({"retry": {"attempts": 0}}), "retry"),
        (json!({"max_hops": 99}), "max_hops"),
        (json!({"strategy": "random"}), "strategy"),
    ] {
        let (st, v, text) = call(&s, "POST", "/admin/models", Some(base(extra)), Some(TOKEN)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
        let msg = v["error"]["message"].as_str().unwrap_or(&text).to_string();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let (_, models, _) = call(&s, "GET", "/admin/models", None, Some(TOKEN)).await;
    assert_eq!(
        models.as_array().map(Vec::len),
        Some(0),
        "nothing half-written"
    );
}

#[tokio::test]
async fn router_settings_are_validated_stored_and_applied() {
    let (s, _d) = state().await;
    let (_, v, _) = call(&s, "GET", "/admin/router", None, Some(TOKEN)).await;
    assert_eq!(v["circuit"]["open_for"], "10s");
    let bad = json!({"circuit": {"failure_rate": 2.0}});
    let (st, _, text) = call(&s, "PUT", "/admin/router", Some(bad), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("failure_rate"), "{text}");
    let good = json!({"circuit": {"open_for": "2s", "consecutive_failures": 3}, "monthly_spend_pct": 85.5});
    let (st, _, text) = call(&s, "PUT", "/admin/router", Some(good), Some(TOKEN)).await;
    assert!(st.is_success(), "{text}");
    assert_eq!(s.gateway.health.policy().consecutive_failures, 3);
    assert_eq!(s.gateway.snapshot().monthly_spend_pct, Some(85.5));
    let (_, v, _) = call(&s, "GET", "/admin/router", None, Some(TOKEN)).await;
    assert_eq!(v["circuit"]["open_for"], "2s");
    let (_, targets, _) = call(&s, "GET", "/admin/health/targets", None, Some(TOKEN)).await;
    assert_eq!(targets, json!([]));
}

#[tokio::test]
async fn a_key_is_shown_once_and_never_listed_or_audited() {
    let (s, _d) = state().await;
    let (st, c, text) = call(
        &s,
        "POST",
        "/admin/consumers",
        Some(json!({"name": "acme", "email": "ops@acme.test"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let body = json!({"label": "myapp", "consumer": "acme", "apis": ["default"], "models": ["gpt-4o"],
                      "expires_at": "2030-01-01T00:00:00Z", "rate_limit": 100});
    let (st, k, text) = call(&s, "POST", "/admin/keys", Some(body), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let raw = k["key"].as_str().unwrap_or_default().to_string();
    assert!(
        access::keys::shape_ok(&raw) && raw.starts_with("gw_live_"),
        "{raw}"
    );
    assert_eq!(k["consumer_id"], c["id"]);
    assert_eq!(k["rpm"], 100);
    assert_eq!(k["expires_at"], 1_893_456_000_000_i64);
    assert!(raw.starts_with(k["prefix"].as_str().unwrap_or("?")));
    let id = k["id"].as_str().unwrap_or_default().to_string();

    let (_, list, text) = call(&s, "GET", "/admin/keys?consumer=acme", None, Some(TOKEN)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{text}");
    assert!(
        list[0].get("key").is_none() && list[0].get("hash").is_none(),
        "{text}"
    );
    let digest = hex::encode(access::keys::digest(&raw));
    for (what, t) in [
        ("listing", text),
        (
            "audit",
            call(&s, "GET", "/admin/audit", None, Some(TOKEN)).await.2,
        ),
    ] {
        assert!(
            !t.contains(&raw) && !t.contains(&digest),
            "the key or its digest is in the {what}: {t}"
        );
    }

    let (st, r, _) = call(
        &s,
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        Some(json!({"grace_secs": 60})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let new_raw = r["key"].as_str().unwrap_or_default();
    assert!(access::keys::shape_ok(new_raw) && new_raw != raw);
    assert_eq!(r["scopes"], k["scopes"], "rotation keeps the scopes");
    let (_, list, _) = call(&s, "GET", "/admin/keys", None, Some(TOKEN)).await;
    let old = list
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        old["expires_at"].as_i64().unwrap_or(i64::MAX) < 1_893_456_000_000,
        "the old key ends after the grace: {old}"
    );

    let (st, v, _) = call(
        &s,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["revoked_at"].is_i64());
    let (st, again, _) = call(
        &s,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (st, &again["revoked_at"]),
        (StatusCode::OK, &v["revoked_at"]),
        "revoking twice changes nothing"
    );
    let (st, _, _) = call(&s, "POST", "/admin/keys/nope/revoke", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_key_requests_get_clear_400s_and_write_nothing() {
    let (s, _d) = state().await;
    for (body, needle) in [
        (json!({"label": ""}), "label"),
        (
            json!({"label": "x", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (json!({"label": "x", "rate_limit": 0}), "rate_limit"),
        (json!({"label": "x", "colour": "blue"}), "colour"),
    ] {
        let (st, v, text) = call(&s, "POST", "/admin/keys", Some(body), Some(TOKEN)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{text}"
        );
    }
    let (st, _, text) = call(
        &s,
        "POST",
        "/admin/keys",
        Some(json!({"label": "x", "consumer": "ghost"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{text}");
    let (_, list, _) = call(&s, "GET", "/admin/keys", None, Some(TOKEN)).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn gateway_apis_are_validated_and_reach_the_data_plane() {
    let (s, _d) = state().await;
    let (st, _, text) = call(
        &s,
        "POST",
        "/admin/apis",
        Some(json!({"slug": "support", "auth": "public"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(
        s.gateway.snapshot().apis.get("support").map(|a| a.auth),
        Some(access::api::AuthMode::Public)
    );
    let (st, _, _) = call(
        &s,
        "POST",
        "/admin/apis",
        Some(json!({"slug": "support"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    for (body, needle) in [
        (json!({"slug": "v1"}), "slug"),
        (json!({"slug": "admin"}), "slug"),
        (json!({"slug": "Bad Slug"}), "slug"),
        (json!({"slug": "x", "auth": "maybe"}), "auth"),
        (json!({"slug": "x", "auth": "jwt"}), "jwt"),
        (json!({"slug": "x", "ip": {"allow": ["10.0.0.0/33"]}}), "ip"),
        (
            json!({"slug": "x", "auth": "jwt", "jwt": {"jwks_url": "file:///etc/keys",
                   "issuer": "https://id.example.com", "audience": "gw"}}),
            "jwks_url",
        ),
        (
            json!({"slug": "x", "auth": "jwt", "jwt": {"jwks_url": "https://id.example.com/k",
                   "issuer": "https://id.example.com", "audience": "gw",
                   "algorithms": ["HS256"]}}),
            "HS256",
        ),
        (
            json!({"slug": "x", "auth": "jwt", "jwt": {"jwks_url": "https://id.example.com/k",
                   "issuer": "https://id.example.com", "audience": "gw", "leeway_secs": 3600}}),
            "leeway",
        ),
    ] {
        let (st, v, text) = call(&s, "POST", "/admin/apis", Some(body.clone()), Some(TOKEN)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{body}: {text}"
        );
    }
    // Gating a public API behind keys keeps its URL (the slug) and takes effect at once.
    let (st, v, text) = call(
        &s,
        "PUT",
        "/admin/apis/support",
        Some(json!({"auth": "keys", "ip": {"block": ["192.0.2.0/24"]}})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(v["slug"], "support");
    assert_eq!(
        s.gateway.snapshot().apis.get("support").map(|a| a.auth),
        Some(access::api::AuthMode::Keys)
    );
    // A JWT API: its settings are stored and published as given.
    let jwt = json!({"jwks_url": "https://id.example.com/.well-known/jwks.json",
                     "issuer": "https://id.example.com", "audience": ["gw", "gw2"],
                     "algorithms": ["ES256", "RS256"], "consumer_claim": "org.user_id"});
    let (st, v, text) = call(
        &s,
        "POST",
        "/admin/apis",
        Some(json!({"slug": "partner", "auth": "keys_or_jwt", "jwt": jwt})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(v["jwt"]["consumer_claim"], "org.user_id", "{text}");
    let snap = s.gateway.snapshot();
    let published = snap
        .apis
        .get("partner")
        .and_then(|a| a.settings.jwt.clone())
        .map(|j| (j.audience, j.algorithms.len()));
    assert_eq!(
        published,
        Some((vec!["gw".to_string(), "gw2".to_string()], 2))
    );
    let (st, _, _) = call(&s, "DELETE", "/admin/apis/support", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!s.gateway.snapshot().apis.contains_key("support"));
}

#[tokio::test]
async fn viewer_tokens_only_read_and_revoked_tokens_stop_working() {
    let (s, _d) = state().await;
    let (st, v, text) = call(
        &s,
        "POST",
        "/admin/tokens",
        Some(json!({"name": "dash", "role": "viewer"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let viewer = v["token"].as_str().unwrap_or_default().to_string();
    let viewer_id = v["id"].as_str().unwrap_or_default().to_string();
    let (_, v, _) = call(
        &s,
        "POST",
        "/admin/tokens",
        Some(json!({"name": "ci", "role": "admin"})),
        Some(TOKEN),
    )
    .await;
    let ci = v["token"].as_str().unwrap_or_default().to_string();

    assert_eq!(
        call(&s, "GET", "/admin/keys", None, Some(&viewer)).await.0,
        StatusCode::OK
    );
    let (st, v, _) = call(
        &s,
        "POST",
        "/admin/keys",
        Some(json!({"label": "x"})),
        Some(&viewer),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        call(
            &s,
            "POST",
            "/admin/keys",
            Some(json!({"label": "by-ci"})),
            Some(&ci)
        )
        .await
        .0,
        StatusCode::CREATED
    );

    let (_, audit, text) = call(&s, "GET", "/admin/audit", None, Some(&viewer)).await;
    let by_ci = audit.as_array().map(|a| {
        a.iter()
            .any(|e| e["action"] == "key.create" && e["actor"] == "token:ci")
    });
    assert_eq!(by_ci, Some(true), "the audit log names who: {text}");
    let (_, list, list_text) = call(&s, "GET", "/admin/tokens", None, Some(TOKEN)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    for t in [&viewer, &ci] {
        assert!(
            !text.contains(t.as_str()) && !list_text.contains(t.as_str()),
            "a token is listed or audited"
        );
    }

    assert_eq!(
        call(
            &s,
            "POST",
            &format!("/admin/tokens/{viewer_id}/revoke"),
            None,
            Some(&ci)
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&s, "GET", "/admin/keys", None, Some(&viewer)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rotating_the_encryption_key_writes_a_new_key_and_reseals_provider_keys() {
    let (s, dir) = state_with(true).await;
    let p = json!({"name": "oai", "kind": "openai", "api_key": "sk-canary-rotate-123"});
    assert!(
        call(&s, "POST", "/admin/providers", Some(p), Some(TOKEN))
            .await
            .0
            .is_success()
    );
    let before = store::load_or_create_key_file(dir.path()).unwrap_or_else(|e| panic!("{e}"));

    let (st, v, text) = call(&s, "POST", "/admin/secrets/rotate-key", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        (v["resealed"].as_u64(), v["generated"].as_bool()),
        (Some(1), Some(true)),
        "{text}"
    );
    let after = store::load_or_create_key_file(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.len(), 2);
    assert_eq!(after[1], before[0], "the old key is kept after the new one");
    assert_eq!(
        v["key_id"].as_str(),
        Some(
            store::Cipher::from_hex(&after[0])
                .map(|c| c.id())
                .unwrap_or_default()
                .as_str()
        )
    );

    // The new key alone opens every provider key now.
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let only_new = store::Store::connect(
        &url,
        store::Cipher::from_hex(&after[0]).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rec = only_new
        .get_provider("oai")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!(
        rec.api_key.as_ref().map(wire::secret::Secret::expose),
        Some("sk-canary-rotate-123")
    );
    // This instance keeps serving: its snapshot and new writes use the new key.
    assert_eq!(
        call(&s, "GET", "/admin/providers/oai", None, Some(TOKEN))
            .await
            .0,
        StatusCode::OK
    );

    let (_, _, audit) = call(&s, "GET", "/admin/audit", None, Some(TOKEN)).await;
    assert!(audit.contains("secrets.rotate_key"), "{audit}");
    for k in after.iter().chain(before.iter()) {
        assert!(
            !audit.contains(k.as_str()) && !text.contains(k.as_str()),
            "a key is in the audit or answer"
        );
    }
    // A viewer may not rotate.
    let (_, t, _) = call(
        &s,
        "POST",
        "/admin/tokens",
        Some(json!({"name": "v", "role": "viewer"})),
        Some(TOKEN),
    )
    .await;
    let viewer = t["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        call(&s, "POST", "/admin/secrets/rotate-key", None, Some(&viewer))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

async fn call_h(
    s: &Arc<AdminState>,
    method: &str,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app(s.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test]
async fn plans_subscriptions_wallets_prices_and_invoices() {
    let (s, _d) = state().await;
    let (st, c, text) = call(
        &s,
        "POST",
        "/admin/consumers",
        Some(json!({"name": "acme"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let cid = c["id"].as_str().unwrap_or_default().to_string();

    // Plans: validated with the field named, conflicts on the name, published to the data plane.
    for (plan, needle) in [
        (json!({"kind": "metered"}), "overage"),
        (json!({"kind": "gold"}), "variant"),
        (
            json!({"kind": "free", "allowance_tokens": 5, "rpm": 0}),
            "rpm",
        ),
    ] {
        let (st, v, _) = call(
            &s,
            "POST",
            "/admin/plans",
            Some(json!({"api": "support", "name": "x", "plan": plan})),
            Some(TOKEN),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{v}"
        );
    }
    let metered = json!({"api": "support", "name": "pro", "plan": {"kind": "metered",
        "price_micros": 20_000_000, "overage_per_1k_micros": 2000, "wallet": "usd", "rpm": 60}});
    let (st, p, text) = call(
        &s,
        "POST",
        "/admin/plans",
        Some(metered.clone()),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(p["price_usd"], "20");
    let pid = p["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        call(&s, "POST", "/admin/plans", Some(metered), Some(TOKEN))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert!(s.gateway.snapshot().plan_apis.contains("support"));
    let (_, list, _) = call(&s, "GET", "/admin/plans?api=support", None, Some(TOKEN)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let (st, sub, text) = call(
        &s,
        "POST",
        &format!("/admin/consumers/{cid}/subscriptions"),
        Some(json!({"plan_id": pid})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(sub["api"], "support");
    let (st, _, _) = call(
        &s,
        "DELETE",
        &format!("/admin/plans/{pid}"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "a plan in use stays");

    // Top-ups: the same Idempotency-Key credits once, even when sent twice at once.
    let path = format!("/admin/consumers/{cid}/wallet/top-up");
    let (a, b) = tokio::join!(
        call_h(
            &s,
            "POST",
            &path,
            json!({"amount_usd": "5.00"}),
            &[("idempotency-key", "t-1")]
        ),
        call_h(
            &s,
            "POST",
            &path,
            json!({"amount_usd": "5.00"}),
            &[("idempotency-key", "t-1")]
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CREATED],
        "{} / {}",
        a.2,
        b.2
    );
    let (st, v, _) = call_h(
        &s,
        "POST",
        &path,
        json!({"amount_usd": "5.00"}),
        &[("idempotency-key", "t-1")],
    )
    .await;
    assert_eq!((st, v["replayed"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, _, _) = call_h(
        &s,
        "POST",
        &path,
        json!({"amount_usd": "6"}),
        &[("idempotency-key", "t-1")],
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "same key, different credit");
    for bad in [
        json!({"amount_usd": "-1"}),
        json!({"amount_usd": "1.0000001"}),
        json!({}),
        json!({"amount_usd": 1, "tokens": 5}),
    ] {
        let (st, v, _) = call_h(&s, "POST", &path, bad.clone(), &[]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (st, _, _) = call_h(
        &s,
        "POST",
        &format!("/admin/consumers/{cid}/wallet/refund"),
        json!({"amount_usd": 0.25, "note": "goodwill"}),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, w, _) = call(
        &s,
        "GET",
        &format!("/admin/consumers/{cid}/wallet"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(w["usd"]["balance_usd"], "5.25", "{w}");
    let (_, ledger, _) = call(
        &s,
        "GET",
        &format!("/admin/consumers/{cid}/ledger"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(ledger.as_array().map(Vec::len), Some(2), "{ledger}");

    // Prices: overrides (including provider/model keys) reach the data plane; bounds checked.
    let (st, v, text) = call(
        &s,
        "PUT",
        "/admin/prices/azure/gpt-4o",
        Some(json!({"input": 3, "output": 12})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(v["model"], "azure/gpt-4o");
    assert_eq!(
        s.gateway
            .snapshot()
            .prices
            .lookup("azure", "gpt-4o")
            .map(|p| p.input),
        Some(3_000_000)
    );
    let (st, v, _) = call(
        &s,
        "PUT",
        "/admin/prices/gpt-4o",
        Some(json!({"input": 5000, "output": 1})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("input"),
        "{v}"
    );
    let (_, prices, _) = call(&s, "GET", "/admin/prices", None, Some(TOKEN)).await;
    let rows = prices.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .any(|r| r["model"] == "azure/gpt-4o" && r["source"] == "override")
    );
    assert!(
        rows.iter()
            .any(|r| r["model"] == "gpt-4o" && r["source"] == "builtin")
    );
    assert_eq!(
        call(
            &s,
            "DELETE",
            "/admin/prices/azure/gpt-4o",
            None,
            Some(TOKEN)
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &s,
            "DELETE",
            "/admin/prices/azure/gpt-4o",
            None,
            Some(TOKEN)
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // Invoice: this period's fee for the plan (pro-rated from the subscription's start) and
    // the usage lines; CSV with the same total.
    s.store
        .record_usage(&store::UsageInput {
            request_id: "r1".into(),
            created_at: jiff::Timestamp::now().as_millisecond(),
            consumer_id: Some(cid.clone()),
            api: "support".into(),
            model_requested: "smart, fast".into(),
            status: 200,
            prompt_tokens: 1500,
            attempts: json!([]),
            subscription: Some((
                sub["id"].as_str().unwrap_or_default().to_string(),
                sub["anchor_at"].as_i64().unwrap_or(0),
            )),
            plan: Some(serde_json::from_value(p["plan"].clone()).unwrap_or_else(|e| panic!("{e}"))),
            ..store::UsageInput::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (st, inv, text) = call(
        &s,
        "GET",
        &format!("/admin/consumers/{cid}/invoice"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    let lines = inv["lines"].as_array().cloned().unwrap_or_default();
    assert_eq!(lines.len(), 2, "{inv}");
    assert_eq!(lines[0]["kind"], "plan_fee");
    assert_eq!(
        lines[1]["amount_micros"], 3000,
        "1,500 tokens at $0.002 per 1k"
    );
    let fee = lines[0]["amount_micros"].as_i64().unwrap_or(0);
    assert!(fee > 19_999_000 && fee <= 20_000_000, "{fee}");
    assert_eq!(inv["total_micros"].as_i64(), Some(fee + 3000));
    let req = Request::builder()
        .uri(format!("/admin/consumers/{cid}/invoice?format=csv"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app(s.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let csv = String::from_utf8_lossy(
        &resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
    )
    .to_string();
    assert!(csv.contains("\"smart, fast\""), "{csv}");
    assert!(
        csv.contains(&format!(
            "total,,,,,,,,{}",
            inv["total_usd"].as_str().unwrap_or("?")
        )),
        "{csv}"
    );
    let (st, _, _) = call(
        &s,
        "GET",
        &format!("/admin/consumers/{cid}/invoice?period=someday"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, usage, _) = call(
        &s,
        "GET",
        &format!("/admin/usage?consumer={cid}"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(usage.as_array().map(Vec::len), Some(1));

    // Cancel; every change was audited without amounts' secrets (there are none) or keys.
    let sid = sub["id"].as_str().unwrap_or_default();
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!("/admin/subscriptions/{sid}"),
            None,
            Some(TOKEN)
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (_, audit, _) = call(&s, "GET", "/admin/audit?limit=100", None, Some(TOKEN)).await;
    let actions: Vec<String> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["action"].as_str().map(str::to_string))
        .collect();
    for a in [
        "plan.create",
        "subscription.set",
        "wallet.top_up",
        "wallet.refund",
        "price.set",
        "price.delete",
        "subscription.cancel",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "wallet.top_up").count(),
        1,
        "a replay is not a second credit"
    );
}

#[tokio::test]
async fn the_billing_webhook_secret_is_write_only() {
    let (s, _d) = state().await;
    let secret = "whsec_canary_5b1f0c9e7d";
    let (st, v, text) = call(
        &s,
        "PUT",
        "/admin/billing/webhook",
        Some(json!({"url": "https://billing.example.com/hook", "secret": secret})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(!text.contains(secret));
    assert_eq!(v["secret"], "[REDACTED]");
    assert!(s.gateway.snapshot().billing_events);
    let (_, _, text) = call(&s, "GET", "/admin/billing/webhook", None, Some(TOKEN)).await;
    assert!(
        text.contains("billing.example.com") && !text.contains(secret),
        "{text}"
    );
    let (_, _, audit) = call(&s, "GET", "/admin/audit?limit=10", None, Some(TOKEN)).await;
    assert!(
        audit.contains("billing_webhook.set") && !audit.contains(secret),
        "{audit}"
    );
    let (st, _, _) = call(
        &s,
        "PUT",
        "/admin/billing/webhook",
        Some(json!({"url": "https://x.example", "secret": "short"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&s, "DELETE", "/admin/billing/webhook", None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(!s.gateway.snapshot().billing_events);
}

#[tokio::test]
async fn functions_are_managed_with_secrets_kept_out_of_every_answer() {
    let (s, _d) = state().await;
    let secret = "whsec-very-secret-value";
    let (st, v, text) = call(
        &s,
        "PUT",
        "/admin/functions/pre",
        Some(
            json!({"url": "https://hooks.example.com/pre", "secret": secret,
                    "failure_mode": "fail_closed"}),
        ),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert!(!text.contains(secret));
    assert_eq!(v["has_secret"], true);
    assert_eq!(v["deadline_ms"], 2000);
    assert!(s.gateway.snapshot().functions.contains_key("pre"));
    // An update without the secret keeps it.
    let (st, v, _) = call(
        &s,
        "PUT",
        "/admin/functions/pre",
        Some(json!({"url": "https://hooks.example.com/v2", "deadline_ms": 5000})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["url"], "https://hooks.example.com/v2");
    let (_, _, list) = call(&s, "GET", "/admin/functions", None, Some(TOKEN)).await;
    assert!(list.contains("hooks.example.com/v2") && !list.contains(secret));
    let (_, _, audit) = call(&s, "GET", "/admin/audit?limit=10", None, Some(TOKEN)).await;
    assert!(audit.contains("function.create") && !audit.contains(secret));
    // Bad input is refused with the field named.
    for bad in [
        json!({"url": "https://x.example", "deadline_ms": 60000}),
        json!({"url": "https://x.example", "secret": "short"}),
        json!({"url": "https://x.example", "secret": secret, "retries": 3}),
    ] {
        let (st, _, text) = call(&s, "PUT", "/admin/functions/other", Some(bad), Some(TOKEN)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    }
    // An API may only name functions that exist, and a function in use cannot be deleted.
    let (st, _, text) = call(
        &s,
        "POST",
        "/admin/apis",
        Some(json!({"slug": "hooked", "auth": "public", "post_hook": "missing"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("post_hook"), "{text}");
    let (st, _, text) = call(
        &s,
        "POST",
        "/admin/apis",
        Some(
            json!({"slug": "hooked", "auth": "public", "pre_hook": "pre",
                    "moderation": {"classifier": {"kind": "rules"}, "mode": "flag"},
                    "pii": {"redact": true}}),
        ),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let api = s.gateway.snapshot().apis.get("hooked").cloned();
    assert_eq!(
        api.and_then(|a| a.settings.pre_hook.clone()).as_deref(),
        Some("pre")
    );
    let (st, _, _) = call(&s, "DELETE", "/admin/functions/pre", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    call(&s, "DELETE", "/admin/apis/hooked", None, Some(TOKEN)).await;
    let (st, _, _) = call(&s, "DELETE", "/admin/functions/pre", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = call(&s, "GET", "/admin/functions/pre", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

fn log_row(i: i64, consumer: Option<&str>, status: i64, latency_ms: i64) -> store::LogRow {
    store::LogRow {
        request_id: format!("req_{i:04}"),
        created_at: jiff::Timestamp::now().as_millisecond() - 60_000 + i,
        api: "default".into(),
        endpoint: "/v1/chat/completions".into(),
        consumer_id: consumer.map(str::to_string),
        model_requested: Some("gpt-4o".into()),
        model: Some("gpt-4o".into()),
        provider: Some("openai".into()),
        attempts: json!([]),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost_picos: 1_000_000,
        latency_ms,
        status,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_request_log_filters_stats_analytics_and_metrics() {
    let (s, _dir) = state().await;
    let c = s
        .store
        .create_consumer(&store::ConsumerInput::new("acme"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    for i in 0..10 {
        let status = if i == 3 { 502 } else { 200 };
        rows.push(log_row(
            i,
            Some(&c.id),
            status,
            if i < 2 { 2_500 } else { 100 },
        ));
    }
    rows.push(log_row(10, None, 401, 1));
    s.store
        .insert_logs(&rows)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // By consumer name; `slow` uses the 2 s default threshold.
    let (st, v, _) = call(&s, "GET", "/admin/logs?consumer=acme", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().map(Vec::len), Some(10));
    assert_eq!(v[0]["request_id"], "req_0009", "newest first");
    assert_eq!(v[0]["cost_usd"], "0.000001");
    let (_, v, _) = call(&s, "GET", "/admin/logs?slow=true", None, Some(TOKEN)).await;
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let (_, v, _) = call(&s, "GET", "/admin/logs?status=error", None, Some(TOKEN)).await;
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let (_, v, _) = call(
        &s,
        "GET",
        "/admin/logs/stats?consumer=acme",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(v["requests"], 10);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["total_tokens"], 150);
    assert_eq!(v["p95_latency_ms"], 2_500);
    let (st, _, _) = call(&s, "GET", "/admin/logs/req_0004", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(&s, "GET", "/admin/logs/req_nope", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v, _) = call(&s, "GET", "/admin/logs?status=teapot", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, _) = call(&s, "GET", "/admin/logs?colour=red", None, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "unknown filters are refused");
    let (st, _, _) = call(&s, "GET", "/admin/logs", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Analytics from the rollups, JSON and CSV.
    let (st, v, _) = call(
        &s,
        "GET",
        "/admin/analytics/usage?by=consumer&window=24h",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let acme = v["data"]
        .as_array()
        .and_then(|d| d.iter().find(|g| g["consumer"] == c.id.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(acme["requests"], 10);
    assert_eq!(acme["errors"], 1);
    let (_, v, _) = call(
        &s,
        "GET",
        "/admin/analytics/usage?by=model&window=7d",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(v["data"][0]["model"], "gpt-4o");
    assert_eq!(v["data"][0]["requests"], 11);
    let (_, _, csv) = call(
        &s,
        "GET",
        "/admin/analytics/usage?by=model&format=csv",
        None,
        Some(TOKEN),
    )
    .await;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "model,provider,requests,errors,prompt_tokens,completion_tokens,cached_tokens,total_tokens,cost_usd,avg_latency_ms,p95_latency_ms"
        )
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("gpt-4o,openai,11,2,"))
    );
    let (st, _, _) = call(
        &s,
        "GET",
        "/admin/analytics/usage?window=1y",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Metrics need no token and name no consumer.
    let (st, _, text) = call(&s, "GET", "/metrics", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("# TYPE gateway_requests_total counter"));
    assert!(text.contains("gateway_log_rows_dropped_total 0"));
    assert!(!text.contains(&c.id));
}

/// Post-hook metadata: `meta.KEY=VALUE` filters rows and stats, `by=meta:KEY` groups usage.
#[tokio::test]
async fn post_hook_metadata_filters_logs_and_groups_analytics() {
    let (s, _dir) = state().await;
    let rows: Vec<store::LogRow> = (0..9)
        .map(|i| {
            let mut r = log_row(i, None, if i == 4 { 502 } else { 200 }, 100);
            let tier = ["gold", "silver", "team a&b"][i as usize % 3];
            r.hooks = (i != 8).then(|| {
                json!([{"stage": "post_hook", "function": "f", "outcome": "ok",
                        "latency_ms": 2, "metadata": {"tier": tier, "score": i}}])
                .to_string()
            });
            r
        })
        .collect();
    s.store
        .insert_logs(&rows)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let get = |path: &'static str| call(&s, "GET", path, None, Some(TOKEN));

    let (st, v, _) = get("/admin/logs?meta.tier=gold").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["request_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["req_0006", "req_0003", "req_0000"]);
    // Percent-encoded keys and values; several conditions must all hold.
    let (_, v, _) = get("/admin/logs?meta.tier=team+a%26b&meta.score=5").await;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let (_, v, _) = get("/admin/logs/stats?meta.tier=silver&status=error").await;
    assert_eq!(v["requests"], 1, "{v}");
    assert_eq!(
        v["truncated"], false,
        "stats say whether the search was cut"
    );
    let (st, _, _) = get("/admin/logs?meta.=x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "an empty key is refused");
    let (st, _, _) = get("/admin/logs?metadata=x").await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "unknown filters are still refused"
    );

    let (st, v, _) = get("/admin/analytics/usage?by=meta:tier&window=24h").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["by"], "meta:tier");
    assert_eq!(v["scanned"], 9);
    assert_eq!(v["matched"], 8);
    assert_eq!(v["truncated"], false);
    let groups: Vec<(String, i64, i64)> = v["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|g| {
                    let n = |k: &str| g[k].as_i64().unwrap_or(-1);
                    (
                        g["value"].as_str().unwrap_or("").to_string(),
                        n("requests"),
                        n("errors"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        groups,
        [
            ("gold".to_string(), 3, 0),
            ("silver".to_string(), 3, 1),
            ("team a&b".to_string(), 2, 0)
        ]
    );
    let (_, _, csv) = get("/admin/analytics/usage?by=meta:tier&format=csv").await;
    assert!(csv.starts_with("value,requests,errors,"), "{csv}");
    assert!(csv.contains("\ngold,3,0,"), "{csv}");
    let (st, _, _) = get("/admin/analytics/usage?by=meta:").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = get("/admin/analytics/usage?by=planet").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_tail_replays_kept_rows_then_streams_new_ones() {
    let (s, _dir) = state().await;
    let log = s.gateway.log.clone();
    for i in 0..3 {
        drop(log.start(format!("req_t{i}"), "default", "/v1/models"));
    }
    let req = Request::builder()
        .uri("/admin/logs/tail")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app(s.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    drop(log.start("req_t3".into(), "default", "/v1/models"));
    let mut seen = String::new();
    use futures::StreamExt;
    while !seen.contains("req_t3") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("tail ended"))
            .unwrap_or_else(|e| panic!("{e}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let order: Vec<usize> = (0..4)
        .map(|i| seen.find(&format!("id: req_t{i}")).unwrap_or(usize::MAX))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{seen}");
    // An abandoned trace is recorded as the consumer leaving.
    assert!(seen.contains("\"status\":499"));
}

#[tokio::test]
async fn consumer_limits_are_stored_validated_and_shown() {
    let (s, _dir) = state().await;
    let (st, v, _) = call(
        &s,
        "POST",
        "/admin/consumers",
        Some(json!({"name": "lim", "rpm": 10, "tpm": 5000})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v, _) = call(&s, "GET", "/admin/consumers/lim", None, Some(TOKEN)).await;
    assert_eq!(
        (v["rpm"].clone(), v["tpm"].clone()),
        (json!(10), json!(5000))
    );
    let (st, v, _) = call(
        &s,
        "POST",
        "/admin/consumers",
        Some(json!({"name": "lim2", "rpm": 0})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rpm")),
        "{v}"
    );
}

/// A state whose gateway has the knowledge base running (indexing in process).
async fn state_with_knowledge() -> (Arc<AdminState>, tempfile::TempDir) {
    let (s, dir) = state().await;
    let gateway = pipeline::Gateway::with_store(pipeline::Limits::default(), s.store.clone());
    let limits = ::knowledge::extract::Limits {
        max_bytes: 1024,
        ..Default::default()
    };
    pipeline::rag::start(
        &gateway,
        Arc::new(::knowledge::ingest::InProcess),
        limits,
        1,
    );
    let s = Arc::new(AdminState {
        store: s.store.clone(),
        gateway,
        http: s.http.clone(),
        token_hash: s.token_hash,
        key_prefix: s.key_prefix.clone(),
        key_file_dir: None,
        edge: s.edge.clone(),
    });
    (s, dir)
}

async fn upload(s: &Arc<AdminState>, path: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("PUT")
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app(s.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn knowledge_bases_take_uploads_report_status_and_guard_their_model() {
    let (s, _dir) = state_with_knowledge().await;
    let t = Some(TOKEN);
    let (st, kb, _) = call(
        &s,
        "POST",
        "/admin/knowledge-bases",
        Some(json!({"name": "docs", "embedding_model": "nowhere/embedder"})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{kb}");
    assert_eq!(
        (kb["locked"].as_bool(), kb["documents"]["total"].as_u64()),
        (Some(false), Some(0))
    );
    let (st, _, _) = call(
        &s,
        "POST",
        "/admin/knowledge-bases",
        Some(json!({"name": "docs"})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, body, _) = call(
        &s,
        "POST",
        "/admin/knowledge-bases",
        Some(json!({"name": "x", "chunk_tokens": 8})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("chunk_tokens"),
        "{body}"
    );

    // Refused before anything is stored: the wrong type, too big, empty.
    let (st, body) = upload(&s, "/admin/knowledge-bases/docs/documents/tool.exe", b"MZ").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unsupported")
    );
    let (st, body) = upload(
        &s,
        "/admin/knowledge-bases/docs/documents/big.txt",
        &[b'a'; 2048],
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "file_too_large");
    let (st, _) = upload(&s, "/admin/knowledge-bases/docs/documents/empty.txt", b"").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, docs, _) = call(&s, "GET", "/admin/knowledge-bases/docs/documents", None, t).await;
    assert_eq!(docs.as_array().map(Vec::len), Some(0), "{docs}");

    let (st, doc) = upload(
        &s,
        "/admin/knowledge-bases/docs/documents/notes.txt",
        b"Some notes about zebras.",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{doc}");
    assert_eq!(doc["status"], "queued");
    // The embedding model is now locked.
    let (st, body, _) = call(
        &s,
        "PATCH",
        "/admin/knowledge-bases/docs",
        Some(json!({"embedding_model": "local/minilm"})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    // No provider serves the embedder: the document ends in `error` with the reason.
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, d, _) = call(
            &s,
            "GET",
            "/admin/knowledge-bases/docs/documents/notes.txt",
            None,
            t,
        )
        .await;
        last = d;
        if last["status"] == "error" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert_eq!(last["status"], "error", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("embedding failed"),
        "{last}"
    );

    // A test query says why it cannot answer.
    let (st, body, _) = call(
        &s,
        "POST",
        "/admin/knowledge-bases/docs/query",
        Some(json!({"query": "zebras"})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // An API that uses the base keeps it from being deleted.
    let (st, body, _) = call(
        &s,
        "PUT",
        "/admin/apis/help",
        Some(json!({"auth": "public", "rag": {"knowledge_base": "docs", "top_k": 3}})),
        t,
    )
    .await;
    assert!(st.is_success(), "{body}");
    let (st, _, _) = call(&s, "DELETE", "/admin/knowledge-bases/docs", None, t).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _, _) = call(
        &s,
        "POST",
        "/admin/apis/help/rag/query",
        Some(json!({"query": ""})),
        t,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = call(&s, "DELETE", "/admin/apis/help", None, t).await;
    assert!(st.is_success());
    let (st, _, _) = call(
        &s,
        "DELETE",
        "/admin/knowledge-bases/docs/documents/notes.txt",
        None,
        t,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = call(&s, "DELETE", "/admin/knowledge-bases/docs", None, t).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}
