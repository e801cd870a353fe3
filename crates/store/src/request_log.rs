//! The request log and its hourly rollups.
//!
//! Rows arrive in batches from the data plane's log writer; each batch is one transaction that
//! inserts the rows (multi-row statements) and adds them to `request_rollup` with additive
//! upserts, so rollups always equal a recomputation from the rows they counted and several
//! instances can add to the same hour at once. Retention deletes whole hours, one short
//! statement each, so a prune never holds a long lock. Post-hook metadata is read from the rows
//! at query time ([`metadata`]): filters and grouping by a metadata key cost the writer nothing.

pub mod metadata;
pub(crate) mod sqlite_writer;

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::batch::placeholders;
use crate::columns::bool_column;
use crate::{Backend, Store, StoreError};
use metadata::MetaMatch;

/// Upper bounds (ms, inclusive) of the rollups' latency buckets; the last bucket is unbounded.
pub const BUCKETS_MS: [i64; 11] = [
    50, 100, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000,
];
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WIDTH: usize = 26;

/// The bucket a latency falls in.
pub fn bucket(latency_ms: i64) -> usize {
    BUCKETS_MS
        .iter()
        .position(|b| latency_ms <= *b)
        .unwrap_or(BUCKETS_MS.len())
}

/// One request as the log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub request_id: String,
    /// Unix milliseconds at arrival.
    pub created_at: i64,
    pub api: String,
    /// The path the consumer called, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub consumer_id: Option<String>,
    pub key_id: Option<String>,
    pub model_requested: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Every upstream attempt (status, latency, fallback reason), as JSON.
    pub attempts: serde_json::Value,
    pub stream: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    /// Token counts are the tokenizer's estimate, not the provider's report.
    pub estimated: bool,
    pub cost_picos: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub status: i64,
    /// The error code the consumer got, or how a stream ended early (`client_disconnected`,
    /// `stream_cut`).
    pub error: Option<String>,
    pub moderation: Option<String>,
    pub rag_sources: Option<String>,
    pub hooks: Option<String>,
    pub cache_hit: bool,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// What the consumer was charged (from the usage record; filled by queries, not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_micros: Option<i64>,
}

impl LogRow {
    pub fn is_error(&self) -> bool {
        self.status >= 400
    }
}

/// Which rows a query looks at. `None` fields do not filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    pub consumer: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub api: Option<String>,
    /// An exact status, or a class: `2xx`, `4xx`, `5xx`, `error` (any ≥ 400).
    pub status: Option<String>,
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    /// Only rows at least this slow (ms).
    pub slower_than_ms: Option<i64>,
    /// Only rows whose post-hook returned every one of these metadata values (at most
    /// [`metadata::MAX_MATCHES`]). They are looked for in the newest rows the other conditions
    /// select, at most `meta_scan_rows` of them.
    #[serde(default)]
    pub meta: Vec<MetaMatch>,
    /// How many rows a metadata search reads; [`metadata::MAX_SCAN_ROWS`] when `None`, and
    /// never more.
    #[serde(default)]
    pub meta_scan_rows: Option<i64>,
}

/// Derived numbers over the rows a filter selects.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogStats {
    pub requests: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_picos: i64,
    pub avg_latency_ms: f64,
    pub p95_latency_ms: i64,
    /// With metadata conditions: whether the other conditions selected more rows than one
    /// search reads, so that the figures cover only the newest of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

/// What rollups are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollupBy {
    Consumer,
    Model,
}

/// One group's usage over a window, from the rollups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRollup {
    /// The consumer id (`""` for anonymous), or `model`.
    pub key: String,
    /// With [`RollupBy::Model`]: the provider that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_picos: i64,
    pub avg_latency_ms: f64,
    /// Upper bound of the bucket holding the 95th percentile (the last bucket reports the
    /// largest bound).
    pub p95_latency_ms: i64,
    /// Requests per latency bucket ([`BUCKETS_MS`], then the unbounded one).
    pub histogram: Vec<i64>,
}

/// Which rollup a group goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Consumer,
    Model,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Consumer => "rollup_consumer",
            Table::Model => "rollup_model",
        }
    }

    /// The key columns after (span, at).
    fn keys(self) -> &'static str {
        match self {
            Table::Consumer => "consumer_id",
            Table::Model => "model, provider",
        }
    }
}

/// The rollup key of a group: (table, span `h`/`d`, period start, key 1, key 2).
type RollupKey<'a> = (Table, char, i64, &'a str, &'a str);

#[derive(Default)]
struct RollupAdd {
    requests: i64,
    errors: i64,
    prompt: i64,
    completion: i64,
    cached: i64,
    cost: i64,
    latency: i64,
    buckets: [i64; 12],
}

impl RollupAdd {
    /// The values a rollup row binds after its keys: seven sums, then the twelve buckets.
    fn values(&self) -> [i64; 19] {
        let mut v = [0; 19];
        v[..7].copy_from_slice(&[
            self.requests,
            self.errors,
            self.prompt,
            self.completion,
            self.cached,
            self.cost,
            self.latency,
        ]);
        v[7..].copy_from_slice(&self.buckets);
        v
    }

    fn add(&mut self, r: &LogRow) {
        self.requests += 1;
        self.errors += i64::from(r.is_error());
        self.prompt += r.prompt_tokens;
        self.completion += r.completion_tokens;
        self.cached += r.cached_tokens;
        self.cost += r.cost_picos;
        self.latency += r.latency_ms;
        self.buckets[bucket(r.latency_ms)] += 1;
    }
}

/// A row's hour, consumer (`""` for none), model (the one that answered, else the one asked
/// for) and provider.
fn rollup_dims(r: &LogRow) -> (i64, &str, &str, &str) {
    (
        r.created_at.div_euclid(HOUR_MS) * HOUR_MS,
        r.consumer_id.as_deref().unwrap_or_default(),
        r.model
            .as_deref()
            .or(r.model_requested.as_deref())
            .unwrap_or_default(),
        r.provider.as_deref().unwrap_or_default(),
    )
}

/// What a batch adds to each rollup group: every row counts in its hour and its day, by
/// consumer and by model-provider.
fn rollup_adds<'a>(
    rows: impl IntoIterator<Item = &'a LogRow>,
) -> std::collections::BTreeMap<RollupKey<'a>, RollupAdd> {
    let mut adds: std::collections::BTreeMap<RollupKey<'a>, RollupAdd> = Default::default();
    for r in rows {
        let (hour, consumer, model, provider) = rollup_dims(r);
        let day = hour.div_euclid(DAY_MS) * DAY_MS;
        for key in [
            (Table::Consumer, 'h', hour, consumer, ""),
            (Table::Consumer, 'd', day, consumer, ""),
            (Table::Model, 'h', hour, model, provider),
            (Table::Model, 'd', day, model, provider),
        ] {
            adds.entry(key).or_default().add(r);
        }
    }
    adds
}

/// The additive upsert of `values` (placeholder tuples) into a rollup table.
fn rollup_upsert_sql(table: Table, values: &str) -> String {
    let (name, keys) = (table.name(), table.keys());
    let buckets: String = (0..12).map(|i| format!(", b{i}")).collect();
    let updates: String = (0..12)
        .map(|i| format!(", b{i} = {name}.b{i} + excluded.b{i}"))
        .collect();
    format!(
        "INSERT INTO {name} (span, at, {keys}, requests, errors, prompt_tokens, completion_tokens, \
         cached_tokens, cost_picos, latency_ms_sum{buckets}) VALUES {values} \
         ON CONFLICT (span, at, {keys}) DO UPDATE SET \
         requests = {name}.requests + excluded.requests, errors = {name}.errors + excluded.errors, \
         prompt_tokens = {name}.prompt_tokens + excluded.prompt_tokens, \
         completion_tokens = {name}.completion_tokens + excluded.completion_tokens, \
         cached_tokens = {name}.cached_tokens + excluded.cached_tokens, \
         cost_picos = {name}.cost_picos + excluded.cost_picos, \
         latency_ms_sum = {name}.latency_ms_sum + excluded.latency_ms_sum{updates}"
    )
}

/// Placeholders per rollup row: span, at, the keys, seven sums and twelve buckets.
fn rollup_width(table: Table) -> usize {
    match table {
        Table::Consumer => 22,
        Table::Model => 23,
    }
}

/// Adds groups to one rollup table in one statement.
async fn upsert_rollups(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    table: Table,
    chunk: &[&(RollupKey<'_>, RollupAdd)],
) -> Result<(), StoreError> {
    let sql = rollup_upsert_sql(
        table,
        &placeholders(backend, chunk.len(), rollup_width(table)),
    );
    // Only table and column names (constants) and placeholders are interpolated.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for entry in chunk {
        let ((_, span, at, k1, k2), a) = (&entry.0, &entry.1);
        q = q.bind(span.to_string()).bind(*at).bind(k1.to_string());
        if table == Table::Model {
            q = q.bind(k2.to_string());
        }
        for v in a.values() {
            q = q.bind(v);
        }
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// The 95th percentile's bucket bound from a histogram.
pub fn p95(histogram: &[i64]) -> i64 {
    let total: i64 = histogram.iter().sum();
    if total == 0 {
        return 0;
    }
    // The smallest bucket whose cumulative count reaches 95 % (rounded up).
    let need = (total * 95 + 99) / 100;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= need {
            return BUCKETS_MS
                .get(i)
                .copied()
                .unwrap_or(BUCKETS_MS[BUCKETS_MS.len() - 1]);
        }
    }
    BUCKETS_MS[BUCKETS_MS.len() - 1]
}

const COLUMNS: &str = "request_id, created_at, api, endpoint, consumer_id, key_id, model_requested, \
    model, provider, attempts, stream, prompt_tokens, completion_tokens, cached_tokens, estimated, \
    cost_picos, latency_ms, ttft_ms, status, error, moderation, rag_sources, hooks, cache_hit, \
    request_body, response_body";

fn log_row(r: &AnyRow) -> Result<LogRow, StoreError> {
    let attempts: String = r.try_get("attempts")?;
    Ok(LogRow {
        request_id: r.try_get("request_id")?,
        created_at: r.try_get("created_at")?,
        api: r.try_get("api")?,
        endpoint: r.try_get("endpoint")?,
        consumer_id: r.try_get("consumer_id")?,
        key_id: r.try_get("key_id")?,
        model_requested: r.try_get("model_requested")?,
        model: r.try_get("model")?,
        provider: r.try_get("provider")?,
        attempts: serde_json::from_str(&attempts).unwrap_or(serde_json::Value::Null),
        stream: bool_column(r, "stream")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        estimated: bool_column(r, "estimated")?,
        cost_picos: r.try_get("cost_picos")?,
        latency_ms: r.try_get("latency_ms")?,
        ttft_ms: r.try_get("ttft_ms")?,
        status: r.try_get("status")?,
        error: r.try_get("error")?,
        moderation: r.try_get("moderation")?,
        rag_sources: r.try_get("rag_sources")?,
        hooks: r.try_get("hooks")?,
        cache_hit: bool_column(r, "cache_hit")?,
        request_body: r.try_get("request_body")?,
        response_body: r.try_get("response_body")?,
        charge_micros: r.try_get("charge_micros").ok().flatten(),
    })
}

/// A `status` filter as a half-open range: an exact status, or `2xx`, `3xx`, `4xx`, `5xx`,
/// `error` (any ≥ 400).
fn status_range(s: &str) -> Result<(i64, i64), StoreError> {
    Ok(match s {
        "2xx" => (200, 300),
        "3xx" => (300, 400),
        "4xx" => (400, 500),
        "5xx" => (500, 600),
        "error" => (400, 1000),
        exact => {
            let v: i64 = exact.parse().map_err(|_| {
                StoreError::Invalid("status: an HTTP status, or one of 2xx, 4xx, 5xx, error".into())
            })?;
            (v, v + 1)
        }
    })
}

impl LogFilter {
    /// How many rows a metadata search reads.
    fn scan_rows(&self) -> i64 {
        self.meta_scan_rows
            .unwrap_or(metadata::MAX_SCAN_ROWS)
            .clamp(1, metadata::MAX_SCAN_ROWS)
    }

    /// Whether a row passes the filter, as the queries decide it (the live tail uses this).
    pub fn matches(&self, r: &LogRow) -> Result<bool, StoreError> {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let status = match &self.status {
            Some(s) => {
                let (lo, hi) = status_range(s)?;
                (lo..hi).contains(&r.status)
            }
            None => true,
        };
        metadata::check(&self.meta)?;
        let meta = self.meta.iter().all(|m| {
            metadata::metadata_value(r.hooks.as_deref(), &m.key).as_deref() == Some(&m.value)
        });
        Ok(eq(&self.consumer, r.consumer_id.as_deref())
            && eq(&self.model, r.model.as_deref())
            && eq(&self.provider, r.provider.as_deref())
            && eq(&self.api, Some(&r.api))
            && status
            && self.from.is_none_or(|t| r.created_at >= t)
            && self.to.is_none_or(|t| r.created_at < t)
            && self.slower_than_ms.is_none_or(|t| r.latency_ms >= t)
            && meta)
    }
}

/// One bound value of a `WHERE`.
enum Arg {
    Text(String),
    Int(i64),
}

/// `WHERE` conditions for a filter, with `?`/`$n` placeholders, and their values in order.
struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    fn build(backend: Backend, f: &LogFilter, prefix: &str) -> Result<Where, StoreError> {
        let mut w = Where {
            sql: String::from(" WHERE 1 = 1"),
            args: Vec::new(),
        };
        let cond = |w: &mut Where, cond: &str, arg: Arg| {
            let ph = w.next_placeholder(backend, 1);
            w.sql.push_str(&format!(" AND {prefix}{cond} {ph}"));
            w.args.push(arg);
        };
        for (col, v) in [
            ("consumer_id", &f.consumer),
            ("model", &f.model),
            ("provider", &f.provider),
            ("api", &f.api),
        ] {
            if let Some(v) = v {
                cond(&mut w, &format!("{col} ="), Arg::Text(v.clone()));
            }
        }
        if let Some(s) = &f.status {
            let (lo, hi) = status_range(s)?;
            cond(&mut w, "status >=", Arg::Int(lo));
            cond(&mut w, "status <", Arg::Int(hi));
        }
        for (c, v) in [
            ("created_at >=", f.from),
            ("created_at <", f.to),
            ("latency_ms >=", f.slower_than_ms),
        ] {
            if let Some(v) = v {
                cond(&mut w, c, Arg::Int(v));
            }
        }
        Ok(w)
    }

    /// The rows a filter reads, as `FROM {source}{where}` with the log aliased `l`: the log
    /// itself, or, with metadata conditions, the newest rows the other conditions select (at
    /// most [`LogFilter::meta_scan_rows`]), so that a metadata search reads a bounded number of
    /// rows however long the log is.
    fn selection(backend: Backend, f: &LogFilter) -> Result<(String, Where), StoreError> {
        if f.meta.is_empty() {
            return Ok(("request_log l".into(), Where::build(backend, f, "l.")?));
        }
        metadata::check(&f.meta)?;
        let mut w = Where::build(backend, f, "")?;
        let cap = w.next_placeholder(backend, 1);
        let source = format!(
            "(SELECT * FROM request_log{} ORDER BY created_at DESC LIMIT {cap}) l",
            w.sql
        );
        w.args.push(Arg::Int(f.scan_rows()));
        w.sql = String::from(" WHERE l.hooks IS NOT NULL");
        for m in &f.meta {
            let (key, value) = (
                w.next_placeholder(backend, 1),
                w.next_placeholder(backend, 2),
            );
            let found = metadata::value_sql(backend, "l.hooks", &key);
            w.sql.push_str(&format!(" AND {found} = {value}"));
            w.args.push(Arg::Text(m.key.clone()));
            w.args.push(Arg::Text(m.value.clone()));
        }
        Ok((source, w))
    }

    fn bind<'q>(
        &self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        for a in &self.args {
            q = match a {
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Int(v) => q.bind(*v),
            };
        }
        q
    }

    /// The placeholder of the `k`-th value bound after the filter's own.
    fn next_placeholder(&self, backend: Backend, k: usize) -> String {
        match backend {
            Backend::Sqlite => "?".into(),
            Backend::Postgres => format!("${}", self.args.len() + k),
        }
    }
}

impl Store {
    /// Writes a batch of rows and their rollups in one transaction. A row whose request id is
    /// already logged is skipped (and not counted twice).
    pub async fn insert_logs<R: Borrow<LogRow> + Clone + Send + Sync + 'static>(
        &self,
        rows: &[R],
    ) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if let Some(writer) = &self.log_writer {
            let (writer, rows) = (writer.clone(), rows.to_vec());
            return tokio::task::spawn_blocking(move || writer.insert(&rows))
                .await
                .map_err(|_| StoreError::Invalid("the request log writer stopped".into()))?;
        }
        let all: Vec<&LogRow> = rows.iter().map(Borrow::borrow).collect();
        // Nearly always every row is new: insert without asking. Only a batch retried after
        // an ambiguous failure holds rows already logged; it is rolled back and written again
        // without them (asking for every row's id back cost a channel message per row).
        if let Some(n) = self.insert_new_logs(&all).await? {
            return Ok(n);
        }
        for _ in 0..3 {
            let mut logged = self.logged_ids(&all).await?;
            // `insert` also drops a request id repeated within the batch.
            let fresh: Vec<&LogRow> = all
                .iter()
                .copied()
                .filter(|r| logged.insert(r.request_id.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(0);
            }
            if let Some(n) = self.insert_new_logs(&fresh).await? {
                return Ok(n);
            }
        }
        Err(StoreError::Invalid(
            "request log rows kept being written concurrently".into(),
        ))
    }

    /// Which of `rows` are already logged.
    async fn logged_ids(
        &self,
        rows: &[&LogRow],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let backend = self.backend();
        let mut logged = std::collections::HashSet::new();
        for chunk in crate::batch::chunks(rows) {
            let sql = format!(
                "SELECT request_id FROM request_log WHERE request_id IN ({})",
                crate::batch::list(backend, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q.bind(r.request_id.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                logged.insert(row.try_get::<String, _>("request_id")?);
            }
        }
        Ok(logged)
    }

    /// Inserts `rows` and their rollups in one transaction if none of them is logged yet;
    /// `None` (and nothing written) if one was.
    async fn insert_new_logs(&self, rows: &[&LogRow]) -> Result<Option<usize>, StoreError> {
        let backend = self.backend();
        let mut tx = self.begin_write().await?;
        for chunk in crate::batch::chunks(rows) {
            let sql = format!(
                "INSERT INTO request_log ({COLUMNS}) VALUES {} ON CONFLICT (request_id) DO NOTHING",
                placeholders(backend, chunk.len(), WIDTH)
            );
            // Only placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.request_id.clone())
                    .bind(r.created_at)
                    .bind(r.api.clone())
                    .bind(r.endpoint.clone())
                    .bind(r.consumer_id.clone())
                    .bind(r.key_id.clone())
                    .bind(r.model_requested.clone())
                    .bind(r.model.clone())
                    .bind(r.provider.clone())
                    .bind(r.attempts.to_string())
                    .bind(r.stream)
                    .bind(r.prompt_tokens)
                    .bind(r.completion_tokens)
                    .bind(r.cached_tokens)
                    .bind(r.estimated)
                    .bind(r.cost_picos)
                    .bind(r.latency_ms)
                    .bind(r.ttft_ms)
                    .bind(r.status)
                    .bind(r.error.clone())
                    .bind(r.moderation.clone())
                    .bind(r.rag_sources.clone())
                    .bind(r.hooks.clone())
                    .bind(r.cache_hit)
                    .bind(r.request_body.clone())
                    .bind(r.response_body.clone());
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if usize::try_from(n).ok() != Some(chunk.len()) {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let adds = rollup_adds(rows.iter().copied());
        let adds: Vec<_> = adds.into_iter().collect();
        for table in [Table::Consumer, Table::Model] {
            let mine: Vec<_> = adds.iter().filter(|(k, _)| k.0 == table).collect();
            for chunk in crate::batch::chunks(&mine) {
                upsert_rollups(&mut tx, backend, table, chunk).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(rows.len()))
    }

    /// Rows a filter selects, newest first, with the consumer's charge from the usage record.
    pub async fn query_logs(
        &self,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<LogRow>, StoreError> {
        let backend = self.backend();
        let (source, w) = Where::selection(backend, filter)?;
        let cols: String = COLUMNS
            .split(", ")
            .map(|c| format!("l.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, u.charge_micros AS charge_micros FROM {source} \
             LEFT JOIN usage_records u ON u.request_id = l.request_id{} \
             ORDER BY l.created_at DESC, l.request_id DESC LIMIT {}",
            w.sql,
            w.next_placeholder(backend, 1)
        );
        let q = w.bind(sqlx::query(sqlx::AssertSqlSafe(sql)));
        let rows = q.bind(limit.clamp(1, 10_000)).fetch_all(&self.pool).await?;
        rows.iter().map(log_row).collect()
    }

    /// One logged request.
    pub async fn get_log(&self, request_id: &str) -> Result<Option<LogRow>, StoreError> {
        let cols: String = COLUMNS
            .split(", ")
            .map(|c| format!("l.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, u.charge_micros AS charge_micros FROM request_log l \
             LEFT JOIN usage_records u ON u.request_id = l.request_id WHERE l.request_id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(log_row).transpose()
    }

    /// Count, error rate, tokens, cost, average and P95 latency over the rows a filter selects.
    pub async fn log_stats(&self, filter: &LogFilter) -> Result<LogStats, StoreError> {
        let backend = self.backend();
        let (source, w) = Where::selection(backend, filter)?;
        let sql = format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS pt, CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS ct, \
             CAST(COALESCE(SUM(cost_picos), 0) AS BIGINT) AS cost, CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT) AS lat \
             FROM {source}{}",
            w.sql
        );
        let r = w
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = r.try_get("n")?;
        let mut s = LogStats {
            requests: n,
            errors: r.try_get("errors")?,
            prompt_tokens: r.try_get("pt")?,
            completion_tokens: r.try_get("ct")?,
            cost_picos: r.try_get("cost")?,
            ..LogStats::default()
        };
        s.total_tokens = s.prompt_tokens + s.completion_tokens;
        if n > 0 {
            let lat: i64 = r.try_get("lat")?;
            s.error_rate = s.errors as f64 / n as f64;
            s.avg_latency_ms = lat as f64 / n as f64;
            // Nearest-rank P95: the ceil(0.95 n)-th smallest latency.
            let offset = (n * 95 + 99) / 100 - 1;
            let sql = format!(
                "SELECT latency_ms FROM {source}{} ORDER BY latency_ms LIMIT 1 OFFSET {}",
                w.sql,
                w.next_placeholder(backend, 1)
            );
            let p: Option<i64> = w
                .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .bind(offset)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("latency_ms"))
                .transpose()?;
            s.p95_latency_ms = p.unwrap_or(0);
        }
        if !filter.meta.is_empty() {
            // Did the other conditions select more rows than the search read?
            let base = Where::build(backend, filter, "")?;
            let sql = format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM request_log{} LIMIT {}) c",
                base.sql,
                base.next_placeholder(backend, 1)
            );
            let read: i64 = base
                .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .bind(filter.scan_rows() + 1)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
            s.truncated = Some(read > filter.scan_rows());
        }
        Ok(s)
    }

    /// Usage per consumer or per model-provider in `[from, to)`, from the hourly rollups (hours
    /// that start inside the window).
    pub async fn usage_rollups(
        &self,
        by: RollupBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<UsageRollup>, StoreError> {
        let buckets: String = (0..12)
            .map(|i| format!(", CAST(SUM(b{i}) AS BIGINT) AS b{i}"))
            .collect();
        let (select, group, table) = match by {
            RollupBy::Consumer => (
                "consumer_id AS k, '' AS p",
                "consumer_id",
                "rollup_consumer",
            ),
            RollupBy::Model => (
                "model AS k, provider AS p",
                "model, provider",
                "rollup_model",
            ),
        };
        // Whole days from the daily rollup, the hours before and after them from the hourly one.
        let from_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let first_day = (from_hour + DAY_MS - 1).div_euclid(DAY_MS) * DAY_MS;
        let end_day = to_ms.div_euclid(DAY_MS) * DAY_MS;
        let (first_day, end_day) = if first_day < end_day {
            (first_day, end_day)
        } else {
            (to_ms, to_ms)
        };
        let sql = format!(
            "SELECT {select}, CAST(SUM(requests) AS BIGINT) AS requests, CAST(SUM(errors) AS BIGINT) AS errors, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS pt, CAST(SUM(completion_tokens) AS BIGINT) AS ct, \
             CAST(SUM(cached_tokens) AS BIGINT) AS cached, CAST(SUM(cost_picos) AS BIGINT) AS cost, \
             CAST(SUM(latency_ms_sum) AS BIGINT) AS lat{buckets} FROM {table} \
             WHERE (span = 'd' AND at >= $1 AND at < $2) \
             OR (span = 'h' AND ((at >= $3 AND at < $4) OR (at >= $5 AND at < $6))) \
             GROUP BY {group} ORDER BY {group}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(first_day)
            .bind(end_day)
            .bind(from_hour)
            .bind(first_day.min(to_ms))
            .bind(end_day)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut histogram = Vec::with_capacity(12);
            for i in 0..12 {
                histogram.push(r.try_get::<i64, _>(format!("b{i}").as_str())?);
            }
            let requests: i64 = r.try_get("requests")?;
            let lat: i64 = r.try_get("lat")?;
            let provider: String = r.try_get("p")?;
            out.push(UsageRollup {
                key: r.try_get("k")?,
                provider: (by == RollupBy::Model).then_some(provider),
                requests,
                errors: r.try_get("errors")?,
                prompt_tokens: r.try_get("pt")?,
                completion_tokens: r.try_get("ct")?,
                cached_tokens: r.try_get("cached")?,
                cost_picos: r.try_get("cost")?,
                avg_latency_ms: if requests > 0 {
                    lat as f64 / requests as f64
                } else {
                    0.0
                },
                p95_latency_ms: p95(&histogram),
                histogram,
            });
        }
        Ok(out)
    }

    /// Deletes rows older than `cutoff_ms`, one hour of rows per statement so no delete holds
    /// the table for long; returns how many went.
    pub async fn prune_logs(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let oldest: Option<i64> = sqlx::query("SELECT MIN(created_at) AS m FROM request_log")
                .fetch_one(&self.pool)
                .await?
                .try_get("m")?;
            let Some(start) = oldest.filter(|s| *s < cutoff_ms) else {
                break;
            };
            let end = ((start.div_euclid(HOUR_MS) + 1) * HOUR_MS).min(cutoff_ms);
            deleted +=
                sqlx::query("DELETE FROM request_log WHERE created_at >= $1 AND created_at < $2")
                    .bind(start)
                    .bind(end)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
        }
        Ok(deleted)
    }

    /// Deletes rollup hours older than `cutoff_ms`.
    pub async fn prune_rollups(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        for sql in [
            "DELETE FROM rollup_consumer WHERE at < $1",
            "DELETE FROM rollup_model WHERE at < $1",
        ] {
            n += sqlx::query(sql)
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}
