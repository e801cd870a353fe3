//! `gateway logs …` and `gateway analytics …`: the request log and usage analytics of a running
//! gateway, through its admin API.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::AdminClient;

/// Filters shared by the log commands (they map to the admin API's query parameters).
#[derive(Args, Debug, Default, Clone)]
pub struct Filters {
    /// Consumer id or name.
    #[arg(long)]
    consumer: Option<String>,
    /// The model that answered.
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    /// Gateway API slug.
    #[arg(long)]
    api: Option<String>,
    /// Only requests slower than the threshold (`--slow-ms`, default 2000).
    #[arg(long)]
    slow: bool,
    #[arg(long)]
    slow_ms: Option<i64>,
    /// `KEY=VALUE`: only requests whose post-hook returned this metadata (repeatable; all
    /// must hold).
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

#[derive(Subcommand)]
pub enum LogsCmd {
    /// Follow requests as they finish (the last ones first).
    Tail {
        #[command(flatten)]
        filters: Filters,
        /// One JSON object per line instead of a table row.
        #[arg(long)]
        json: bool,
    },
    /// Logged requests, newest first.
    List {
        #[command(flatten)]
        filters: Filters,
        /// An HTTP status or a class: 2xx, 4xx, 5xx, error.
        #[arg(long)]
        status: Option<String>,
        /// Unix ms or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Count, error rate, tokens, cost, average and P95 latency.
    Stats {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// One request by id, in full.
    Show { request_id: String },
}

#[derive(Subcommand)]
pub enum AnalyticsCmd {
    /// Usage by consumer or by model and provider, from the hourly rollups; or by the values
    /// of one post-hook metadata key, from the newest raw rows of the window.
    Usage {
        /// `consumer`, `model` or `meta:KEY`.
        #[arg(long, default_value = "consumer")]
        by: String,
        /// `24h`, `7d` or `30d`.
        #[arg(long, default_value = "24h")]
        window: String,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
}

/// `path?k=v&…` with the values percent-encoded.
fn with_query<K: AsRef<str>>(path: &str, pairs: &[(K, Option<String>)]) -> String {
    let mut url = match reqwest::Url::parse("http://admin.invalid") {
        Ok(u) => u,
        Err(_) => return path.to_string(),
    };
    url.set_path(path);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k.as_ref(), v);
            }
        }
    }
    match url.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

fn filter_pairs(f: &Filters) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut pairs: Vec<(String, Option<String>)> = [
        ("consumer", f.consumer.clone()),
        ("model", f.model.clone()),
        ("provider", f.provider.clone()),
        ("api", f.api.clone()),
        ("slow", f.slow.then(|| "true".to_string())),
        ("slow_ms", f.slow_ms.map(|v| v.to_string())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for m in &f.meta {
        let (k, v) = m
            .split_once('=')
            .with_context(|| format!("--meta {m}: expected KEY=VALUE"))?;
        pairs.push((format!("meta.{k}"), Some(v.to_string())));
    }
    Ok(pairs)
}

fn pairs<const N: usize>(p: [(&str, Option<String>); N]) -> Vec<(String, Option<String>)> {
    p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// One row as a table line: time, status, latency, api, model@provider, tokens, cost, who, id.
fn line(r: &Value) -> String {
    let at = r
        .get("created_at")
        .and_then(Value::as_i64)
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".into(), |t| t.strftime("%H:%M:%S%.3f").to_string());
    let model = match (
        r.get("model").and_then(Value::as_str),
        r.get("model_requested").and_then(Value::as_str),
    ) {
        (Some(m), _) | (None, Some(m)) => m.to_string(),
        _ => "-".into(),
    };
    let tokens = format!(
        "{}+{}{}",
        text(r, "prompt_tokens"),
        text(r, "completion_tokens"),
        if r.get("estimated").and_then(Value::as_bool) == Some(true) {
            "~"
        } else {
            ""
        }
    );
    let mut out = format!(
        "{at} {:>3} {:>6}ms {:<10} {:<28} {:>12} ${:<12} {:<12} {}",
        text(r, "status"),
        text(r, "latency_ms"),
        text(r, "api"),
        format!("{model}@{}", text(r, "provider")),
        tokens,
        text(r, "cost_usd"),
        text(r, "consumer_id"),
        text(r, "request_id"),
    );
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        out.push_str(&format!(" [{e}]"));
    }
    out
}

pub async fn logs(c: &AdminClient, cmd: LogsCmd) -> anyhow::Result<()> {
    match cmd {
        LogsCmd::Tail { filters, json } => {
            let path = with_query("/admin/logs/tail", &filter_pairs(&filters)?);
            let mut resp = c.open_stream(&path).await?;
            let mut buf = String::new();
            while let Some(chunk) = resp.chunk().await.context("the tail was interrupted")? {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                // SSE events end with a blank line; `data:` carries the row.
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    if event.contains("event: lagged") {
                        eprintln!(
                            "(missed {} rows: the terminal fell behind)",
                            text(&v, "missed")
                        );
                    } else if json {
                        println!("{data}");
                    } else {
                        println!("{}", line(&v));
                    }
                }
            }
        }
        LogsCmd::List {
            filters,
            status,
            from,
            to,
            limit,
            json,
        } => {
            let mut q = filter_pairs(&filters)?;
            q.extend(pairs([
                ("status", status),
                ("from", from),
                ("to", to),
                ("limit", Some(limit.to_string())),
            ]));
            let v = c.get(&with_query("/admin/logs", &q)).await?;
            for r in v.as_array().into_iter().flatten() {
                if json {
                    println!("{r}");
                } else {
                    println!("{}", line(r));
                }
            }
        }
        LogsCmd::Stats {
            filters,
            status,
            from,
            to,
        } => {
            let mut q = filter_pairs(&filters)?;
            q.extend(pairs([("status", status), ("from", from), ("to", to)]));
            let v = c.get(&with_query("/admin/logs/stats", &q)).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        LogsCmd::Show { request_id } => {
            let v = c
                .get(&with_query::<&str>(
                    &format!("/admin/logs/{request_id}"),
                    &[],
                ))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

pub async fn analytics(c: &AdminClient, cmd: AnalyticsCmd) -> anyhow::Result<()> {
    match cmd {
        AnalyticsCmd::Usage { by, window, csv } => {
            let mut q = vec![("by", Some(by.clone())), ("window", Some(window))];
            if csv {
                q.push(("format", Some("csv".into())));
                print!(
                    "{}",
                    c.get_text(&with_query("/admin/analytics/usage", &q))
                        .await?
                );
                return Ok(());
            }
            let v = c.get(&with_query("/admin/analytics/usage", &q)).await?;
            let by_meta = by.starts_with("meta:");
            if by_meta && v.get("truncated").and_then(Value::as_bool) == Some(true) {
                eprintln!(
                    "(the window holds more rows than one grouping reads: these figures cover its newest {})",
                    text(&v, "scanned")
                );
            }
            println!(
                "{:<40} {:>9} {:>7} {:>12} {:>14} {:>9}",
                if by == "model" {
                    "model@provider"
                } else if by_meta {
                    by.as_str()
                } else {
                    "consumer"
                },
                "requests",
                "errors",
                "tokens",
                "cost_usd",
                "p95_ms"
            );
            for g in v
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = if by == "model" {
                    format!("{}@{}", text(g, "model"), text(g, "provider"))
                } else if by_meta {
                    text(g, "value")
                } else {
                    text(g, "consumer")
                };
                println!(
                    "{key:<40} {:>9} {:>7} {:>12} {:>14} {:>9}",
                    text(g, "requests"),
                    text(g, "errors"),
                    text(g, "total_tokens"),
                    text(g, "cost_usd"),
                    text(g, "p95_latency_ms"),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query(
                "/admin/logs",
                &[("consumer", Some("a b&c".into())), ("model", None)]
            ),
            "/admin/logs?consumer=a+b%26c"
        );
        assert_eq!(with_query::<&str>("/admin/logs", &[]), "/admin/logs");
        let f = Filters {
            meta: vec!["tier=gold plus".into(), "a=b=c".into()],
            ..Default::default()
        };
        assert_eq!(
            with_query("/admin/logs", &filter_pairs(&f).unwrap_or_default()),
            "/admin/logs?meta.tier=gold+plus&meta.a=b%3Dc"
        );
        let bad = Filters {
            meta: vec!["novalue".into()],
            ..Default::default()
        };
        assert!(filter_pairs(&bad).is_err());
    }
}
