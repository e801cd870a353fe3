//! The request log, its live tail, analytics and metrics on the admin plane.
//!
//! - `GET /admin/logs` and `/admin/logs/stats`: rows and derived stats for a filter
//!   (consumer, model, provider, api, status, from, to, slow, and `meta.KEY=VALUE`: what the
//!   post-hook returned).
//! - `GET /admin/logs/{request_id}`: one row.
//! - `GET /admin/logs/tail`: Server-Sent Events — the last rows this instance kept, then every
//!   new one as it finishes, in order, with the same filters.
//! - `GET /admin/analytics/usage?by=consumer|model|meta:KEY&window=24h|7d|30d[&format=csv]`:
//!   from the hourly rollups; by a post-hook metadata key from the newest raw rows of the
//!   window (at most [`store::request_log::metadata::MAX_SCAN_ROWS`]).
//! - `GET /metrics`: Prometheus text (no consumer-identifying labels).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use store::request_log::metadata::MAX_SCAN_ROWS;
use store::{LogFilter, LogRow, MetaMatch, RollupBy, UsageRollup};

use crate::api::Shared;
use crate::billing::{consumer, csv_field, time_param};
use crate::error::AdminError;

/// Requests at least this slow are `slow` unless the query names a threshold.
pub const DEFAULT_SLOW_MS: i64 = 2_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    consumer: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    api: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `true`: only requests over the slow threshold.
    slow: Option<bool>,
    /// The slow threshold (ms); default [`DEFAULT_SLOW_MS`].
    slow_ms: Option<i64>,
    limit: Option<i64>,
    /// The `meta.KEY=VALUE` parameters (read apart from the others by [`LogQuery::parse`]).
    #[serde(skip)]
    meta: Vec<MetaMatch>,
}

/// A query string read as `T`, from a (percent-encoded) query string.
fn query_as<T: DeserializeOwned>(raw: &str) -> Result<T, AdminError> {
    let uri: Uri = format!("/?{raw}")
        .parse()
        .map_err(|_| AdminError::BadBody("the query string is not valid".into()))?;
    Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| AdminError::BadBody(e.body_text()))
}

impl LogQuery {
    /// The named filters, and every `meta.KEY=VALUE` pair as a metadata condition (several
    /// must all hold); any other unknown parameter is refused.
    fn parse(raw: Option<&str>) -> Result<LogQuery, AdminError> {
        let (meta, rest): (Vec<&str>, Vec<&str>) = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .partition(|p| p.starts_with("meta."));
        let mut q: LogQuery = query_as(&rest.join("&"))?;
        let pairs: Vec<(String, String)> = query_as(&meta.join("&"))?;
        q.meta = pairs
            .into_iter()
            .map(|(k, v)| MetaMatch::new(k.strip_prefix("meta.").unwrap_or(&k), v))
            .collect();
        Ok(q)
    }

    async fn filter(&self, s: &Shared) -> Result<LogFilter, AdminError> {
        let consumer_id = match self.consumer.as_deref() {
            Some(c) => Some(consumer(s, c).await?.id),
            None => None,
        };
        Ok(LogFilter {
            consumer: consumer_id,
            model: self.model.clone(),
            provider: self.provider.clone(),
            api: self.api.clone(),
            status: self.status.clone(),
            from: self
                .from
                .as_deref()
                .map(|v| time_param("from", Some(v), 0))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|v| time_param("to", Some(v), 0))
                .transpose()?,
            slower_than_ms: self.slow_threshold(),
            meta: self.meta.clone(),
            meta_scan_rows: None,
        })
    }

    fn slow_threshold(&self) -> Option<i64> {
        match (self.slow, self.slow_ms) {
            (Some(false), _) => None,
            (_, Some(ms)) => Some(ms.max(0)),
            (Some(true), None) => Some(DEFAULT_SLOW_MS),
            (None, None) => None,
        }
    }
}

/// The row as the admin API shows it: costs in USD next to the exact units.
fn view(r: &LogRow) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "cost_usd".into(),
            json!(billing::Picos(u128::try_from(r.cost_picos).unwrap_or(0)).to_string()),
        );
        if let Some(c) = r.charge_micros {
            o.insert("charge_usd".into(), json!(billing::money::format_micros(c)));
        }
    }
    v
}

pub async fn list_logs(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Value>>, AdminError> {
    let q = LogQuery::parse(raw.as_deref())?;
    let f = q.filter(&s).await?;
    let rows = s.store.query_logs(&f, q.limit.unwrap_or(100)).await?;
    Ok(Json(rows.iter().map(view).collect()))
}

pub async fn log_stats(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, AdminError> {
    let f = LogQuery::parse(raw.as_deref())?.filter(&s).await?;
    let st = s.store.log_stats(&f).await?;
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "cost_usd".into(),
            json!(billing::Picos(u128::try_from(st.cost_picos).unwrap_or(0)).to_string()),
        );
    }
    Ok(Json(v))
}

pub async fn get_log(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let row = s
        .store
        .get_log(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("request '{id}'")))?;
    Ok(Json(view(&row)))
}

/// The list's filter, except that `model` also matches the model a consumer asked for (a
/// tail is watched while requests are still being routed).
fn tail_matches(r: &LogRow, f: &LogFilter) -> bool {
    let model_ok = f
        .model
        .as_ref()
        .is_none_or(|m| r.model.as_ref() == Some(m) || r.model_requested.as_ref() == Some(m));
    let rest = LogFilter {
        model: None,
        ..f.clone()
    };
    model_ok && rest.matches(r).unwrap_or(false)
}

fn event(r: &LogRow) -> Event {
    Event::default()
        .event("request")
        .id(r.request_id.clone())
        .data(view(r).to_string())
}

/// `GET /admin/logs/tail`: the kept rows, then live ones; a subscriber that falls behind is
/// told how many rows it missed (`lagged` event) rather than slowing the data plane.
pub async fn tail(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AdminError> {
    let f = Arc::new(LogQuery::parse(raw.as_deref())?.filter(&s).await?);
    // A bad `status` is refused now rather than silently matching nothing.
    f.matches(&LogRow::default())?;
    let (kept, rx) = s.gateway.log.subscribe();
    let f2 = f.clone();
    let first = futures::stream::iter(
        kept.into_iter()
            .filter(move |r| tail_matches(r, &f2))
            .map(|r| Ok::<_, Infallible>(event(&r)))
            .collect::<Vec<_>>(),
    );
    let live = futures::stream::unfold(rx, move |mut rx| {
        let f = f.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(r) if tail_matches(&r, &f) => return Some((Ok(event(&r)), rx)),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let e = Event::default()
                            .event("lagged")
                            .data(json!({"missed": n}).to_string());
                        return Some((Ok(e), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(first.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// `consumer` (default), `model`, or `meta:KEY` (a post-hook metadata key).
    by: Option<String>,
    /// `24h`, `7d` or `30d` (default `24h`).
    window: Option<String>,
    format: Option<String>,
}

/// What usage is grouped by.
enum By {
    Rollup(RollupBy),
    Meta(String),
}

impl By {
    fn parse(by: Option<&str>) -> Result<By, AdminError> {
        Ok(match by.unwrap_or("consumer") {
            "consumer" => By::Rollup(RollupBy::Consumer),
            "model" => By::Rollup(RollupBy::Model),
            other => match other.strip_prefix("meta:") {
                Some(key) => {
                    store::request_log::metadata::check_key(key)?;
                    By::Meta(key.to_string())
                }
                None => {
                    return Err(AdminError::BadBody(
                        "by: consumer, model or meta:KEY".into(),
                    ));
                }
            },
        })
    }

    /// The columns naming a group.
    fn columns(&self) -> &'static [&'static str] {
        match self {
            By::Rollup(RollupBy::Consumer) => &["consumer"],
            By::Rollup(RollupBy::Model) => &["model", "provider"],
            By::Meta(_) => &["value"],
        }
    }
}

fn window_ms(w: Option<&str>) -> Result<i64, AdminError> {
    const HOUR: i64 = 3_600_000;
    Ok(match w.unwrap_or("24h") {
        "24h" => 24 * HOUR,
        "7d" => 7 * 24 * HOUR,
        "30d" => 30 * 24 * HOUR,
        _ => return Err(AdminError::BadBody("window: one of 24h, 7d, 30d".into())),
    })
}

/// One group as the API shows it, named by `columns`.
fn usage_item(r: &UsageRollup, by: &By) -> Value {
    let mut v = json!({
        "requests": r.requests, "errors": r.errors,
        "error_rate": if r.requests > 0 { r.errors as f64 / r.requests as f64 } else { 0.0 },
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "cost_usd": billing::Picos(u128::try_from(r.cost_picos).unwrap_or(0)).to_string(),
        "avg_latency_ms": r.avg_latency_ms, "p95_latency_ms": r.p95_latency_ms,
    });
    if let Some(o) = v.as_object_mut() {
        let first = by.columns()[0];
        o.insert(first.into(), json!(r.key));
        if matches!(by, By::Rollup(RollupBy::Model)) {
            o.insert("provider".into(), json!(r.provider));
        }
    }
    v
}

pub async fn usage(
    State(s): State<Shared>,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Response, AdminError> {
    let by = By::parse(q.by.as_deref())?;
    let span = window_ms(q.window.as_deref())?;
    let now = jiff::Timestamp::now().as_millisecond();
    let mut head = json!({"by": q.by.as_deref().unwrap_or("consumer"),
                          "window": q.window.as_deref().unwrap_or("24h")});
    let rows = match &by {
        // Whole hours: the current one is included (rollups are maintained as requests settle).
        By::Rollup(r) => s.store.usage_rollups(*r, now - span, now + 1).await?,
        By::Meta(key) => {
            let m = s
                .store
                .usage_by_metadata(key, now - span, now + 1, MAX_SCAN_ROWS)
                .await?;
            if let Some(o) = head.as_object_mut() {
                o.insert("scanned".into(), json!(m.scanned));
                o.insert("matched".into(), json!(m.matched));
                o.insert("values".into(), json!(m.values));
                o.insert("truncated".into(), json!(m.truncated));
            }
            m.groups
        }
    };
    let items: Vec<Value> = rows.iter().map(|r| usage_item(r, &by)).collect();
    if q.format.as_deref() == Some("csv") {
        let rest = [
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "total_tokens",
            "cost_usd",
            "avg_latency_ms",
            "p95_latency_ms",
        ];
        let mut out = String::new();
        let all: Vec<&str> = by.columns().iter().copied().chain(rest).collect();
        out.push_str(&all.join(","));
        out.push('\n');
        for it in &items {
            let line: Vec<String> = all
                .iter()
                .map(|c| csv_field(it.get(*c).unwrap_or(&Value::Null)))
                .collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    if let Some(o) = head.as_object_mut() {
        o.insert("data".into(), Value::Array(items));
    }
    Ok(Json(head).into_response())
}

/// `GET /metrics`
pub async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.gateway.metrics.render(&s.gateway),
    )
        .into_response()
}
