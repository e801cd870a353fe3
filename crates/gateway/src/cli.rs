//! CLI commands that talk to a running gateway's admin API (`GATEWAY_ADMIN_URL`, default
//! `http://127.0.0.1:4081`, with `GATEWAY_ADMIN_TOKEN`).

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A client for the admin API that, like the data plane's, follows no redirect (the admin token
/// goes only to `GATEWAY_ADMIN_URL`) and consults no proxy.
fn admin_http() -> anyhow::Result<reqwest::Client> {
    crate::serve::install_tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")
}

impl AdminClient {
    pub fn from_env() -> anyhow::Result<AdminClient> {
        let base =
            std::env::var("GATEWAY_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:4081".into());
        let token = std::env::var("GATEWAY_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .context("GATEWAY_ADMIN_TOKEN is not set (it was printed once when the gateway first started)")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: admin_http()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, body, &[]).await
    }

    /// A POST with extra headers (`Idempotency-Key`).
    pub async fn post_with(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        self.call_with(reqwest::Method::POST, path, Some(body), headers)
            .await
    }

    /// A GET whose answer is text (CSV).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("admin API answered {}: {text}", status.as_u16());
        }
        Ok(text)
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.answer(rb).await
    }

    /// A PUT whose body is a file's bytes (knowledge-base uploads).
    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let rb = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.answer(rb).await
    }

    /// Sends and reads the JSON answer; an error status becomes its OpenAI-style message.
    async fn answer(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_string);
            bail!("admin API answered {}: {msg}", status.as_u16());
        }
        Ok(v)
    }

    /// A GET whose answer is read as it arrives (the live tail); no overall timeout.
    pub async fn open_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("admin API answered {}: {text}", status.as_u16());
        }
        Ok(resp)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn call_put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// Reads a provider key without putting it on the command line (where `ps` would show it).
pub fn read_key(from_env: Option<&str>, from_stdin: bool) -> anyhow::Result<Option<String>> {
    if let Some(var) = from_env {
        return std::env::var(var)
            .map(Some)
            .with_context(|| format!("{var} is not set"));
    }
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the key from stdin")?;
        return Ok(Some(line.trim().to_string()));
    }
    Ok(None)
}

pub fn print_providers(v: &Value) {
    println!(
        "{:<20} {:<18} {:<45} {:<4} {:>8}",
        "NAME", "KIND", "BASE URL", "KEY", "PRIORITY"
    );
    for p in v.as_array().into_iter().flatten() {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let key = if p
            .get("has_api_key")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            "yes"
        } else {
            "no"
        };
        let prio = p.get("priority").and_then(Value::as_i64).unwrap_or(0);
        println!(
            "{:<20} {:<18} {:<45} {:<4} {:>8}",
            s("name"),
            s("kind"),
            s("base_url"),
            key,
            prio
        );
    }
}

pub fn print_health(v: &Value) -> bool {
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut all_ok = true;
    for h in rows {
        let ok = h.get("ok").and_then(Value::as_bool).unwrap_or(false);
        all_ok &= ok;
        let name = h.get("provider").and_then(Value::as_str).unwrap_or("?");
        let ms = h.get("latency_ms").and_then(Value::as_u64).unwrap_or(0);
        match h.get("error").and_then(Value::as_str) {
            Some(e) => println!("{name:<20} FAIL {ms:>6} ms  {e}"),
            None => println!("{name:<20} ok   {ms:>6} ms"),
        }
    }
    all_ok
}

/// The router's view of each target over the last minute.
pub fn print_target_health(v: &Value) {
    let rows = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        println!("\nno traffic in the last minute");
        return;
    }
    println!(
        "\n{:<32} {:<10} {:>6} {:>6} {:>6} {:>9} {:>9}",
        "target (last minute)", "circuit", "reqs", "errors", "429s", "p50 ms", "p95 ms"
    );
    for r in rows {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        let ms = |k: &str| {
            r.get(k)
                .and_then(Value::as_f64)
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        println!(
            "{:<32} {:<10} {:>6} {:>6} {:>6} {:>9} {:>9}",
            format!("{}/{}", s("provider"), s("model")),
            s("state"),
            n("requests"),
            n("errors"),
            n("throttled"),
            ms("p50_ms"),
            ms("p95_ms"),
        );
    }
}

pub fn model_body(name: &str, targets: &[String], fallbacks: &[String]) -> anyhow::Result<Value> {
    let targets = targets
        .iter()
        .map(|t| {
            let (p, m) = t
                .split_once('/')
                .with_context(|| format!("target '{t}' must be provider/model"))?;
            Ok(json!({"provider": p, "model": m}))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut fb = serde_json::Map::new();
    for f in fallbacks {
        let (class, models) = f.split_once('=').unwrap_or(("any", f.as_str()));
        let list: Vec<Value> = models
            .split(',')
            .map(|m| Value::String(m.trim().to_string()))
            .collect();
        fb.insert(class.to_string(), Value::Array(list));
    }
    Ok(json!({"name": name, "targets": targets, "fallbacks": fb}))
}
