//! A gateway over real HTTP on loopback with the OpenAI emulator and APIs whose stages the
//! tests set, for the moderation and function suites.
#![allow(dead_code, reason = "each suite uses part of the harness")]

use std::sync::Arc;
use std::time::Duration;

use access::api::{Api, AuthMode};
use pipeline::{Gateway, Limits, Snapshot};
use providers::ProviderSpec;
use router::{Route, Target};
use serde_json::{Value, json};
use testkit::Emulator;
use wire::secret::Secret;

pub struct Env {
    pub emu: Emulator,
    pub url: String,
    pub client: reqwest::Client,
    pub gw: Arc<Gateway>,
}

pub fn loopback_http() -> providers::http::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    providers::http::client(
        providers::egress::EgressPolicy::parse_allow("127.0.0.0/8")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn spec(name: &str, base: String, key: &str) -> ProviderSpec {
    let mut s = ProviderSpec::build(name, "openai", Some(&base), Some(Secret::new(key)))
        .unwrap_or_else(|e| panic!("{e}"));
    s.timeout = Duration::from_secs(5);
    s
}

/// An API with `settings` (JSON of `ApiSettings`), public.
pub fn api(slug: &str, settings: Value) -> Api {
    let mut a = Api::new(slug, AuthMode::Public);
    a.settings = serde_json::from_value(settings).unwrap_or_else(|e| panic!("{slug}: {e}"));
    a.validate().unwrap_or_else(|e| panic!("{slug}: {e}"));
    a
}

/// A gateway writing its request log to a real SQLite store in a temporary directory (kept
/// alive by the returned guard).
pub async fn with_sqlite() -> (Arc<Gateway>, store::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = store::Store::connect(&url, store::Cipher::generate().0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::with_store(Limits::default(), store.clone());
    (gw, store, dir)
}

/// Starts the gateway with `apis` and `functions` (built with [`loopback_http`] unless given).
pub async fn start(apis: Vec<Api>, functions: Vec<pipeline::functions::Function>) -> Env {
    start_on(Gateway::new(Limits::default()), apis, functions).await
}

/// As [`start`], on a gateway the caller built (with a store, say).
pub async fn start_on(
    gw: Arc<Gateway>,
    apis: Vec<Api>,
    functions: Vec<pipeline::functions::Function>,
) -> Env {
    let emu = Emulator::start().await.unwrap_or_else(|e| panic!("{e}"));
    let e = emu.url();
    let specs = vec![
        spec("openai", format!("{e}/v1"), "test-key"),
        spec("badkey", format!("{e}/v1"), "sk-wrong-secret-123"),
        // Nothing listens on port 9 of loopback: connection refused.
        spec("down", "http://127.0.0.1:9/v1".into(), "test-key"),
    ];
    let routes = vec![Route::new("gpt-4o", vec![Target::new("openai", "gpt-4o")])];
    let http = loopback_http();
    let mut snap = Snapshot::build(specs, routes, &http);
    for a in apis {
        snap.publish(a);
    }
    for f in functions {
        snap.functions.insert(f.name.clone(), Arc::new(f));
    }
    gw.swap(snap);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = pipeline::app(gw.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    Env {
        emu,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        gw,
    }
}

impl Env {
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The prompts the emulator received for chat completions, in order.
    pub fn chat_prompts(&self) -> Vec<String> {
        self.emu
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .map(|r| {
                r.body["messages"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .filter_map(|m| m["content"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// A request's row as the store has it: waits for the row to be finished (a stream's when it
/// ends, a post-hook's request when the hook answers) and written.
pub async fn stored_row(gw: &Gateway, store: &store::Store, request_id: &str) -> store::LogRow {
    for _ in 0..150 {
        gw.log.flush().await;
        if let Some(r) = store
            .get_log(request_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no log row for {request_id}")
}

/// The row's `hooks` column, parsed: one entry per hook or function call.
pub fn hooks_of(row: &store::LogRow) -> Vec<Value> {
    row.hooks
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default()
}

pub fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
}

pub fn chat_stream(text: &str) -> Value {
    json!({"model": "gpt-4o", "stream": true,
           "messages": [{"role": "user", "content": text}]})
}

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
