//! `log-overhead`: the CPU the request log costs per request on the embedded default (SQLite),
//! and how big a row is.
//!
//! One thread makes, per request, what the data plane makes: a trace at the edge, the fields the
//! stages fill in (consumer, key, model, provider, one attempt, tokens, cost, TTFT), and its
//! finish (metrics, the in-memory tail, the writer's queue); the writer inserts the rows and
//! their hourly rollups in batches on the same runtime. Requests are paced at a target rate
//! (default 15,000/s) so batching is what a gateway at that rate gets, not what a flood gets.
//! CPU time comes from `/proc/self/stat` (this thread, the writer task and SQLite).
//!
//! The full-path figure (the gateway under load with `GATEWAY_REQUEST_LOG=on` vs `off`) comes
//! from `bench/run.sh`; this isolates the log from the noise of the HTTP path.

#[path = "allocator.rs"]
mod allocator;

#[path = "procfs.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary reads CPU time only"
)]
mod procfs;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use pipeline::log::RequestLog;

const BUDGET_NS: f64 = 5_000.0;
const ROW_BUDGET_BYTES: f64 = 1024.0;

fn cpu() -> anyhow::Result<Duration> {
    procfs::cpu_time(std::process::id(), procfs::clock_ticks())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("analytics") {
        args.next();
        let rows: u64 = args
            .next()
            .map(|a| a.parse())
            .transpose()
            .context("analytics ROWS")?
            .unwrap_or(10_000_000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dir =
            std::env::temp_dir().join(format!("ai-gateway-analytics-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let result = rt.block_on(analytics(rows, &dir));
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("the first argument is the number of requests")?
        .unwrap_or(150_000);
    let rate: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("the second argument is the rate (requests/s)")?
        .unwrap_or(15_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("ai-gateway-log-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = rt.block_on(run(n, rate, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(n: u64, rate: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("bench.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = store::Store::connect(&url, store::Cipher::generate().0).await?;
    store.migrate().await?;
    let log = Arc::new(RequestLog::new(Some(store.clone()), 65_536));
    let metrics = Arc::new(pipeline::metrics::Metrics::default());
    let m = metrics.clone();
    log.observe(move |row| m.observe(row));
    let attempts = serde_json::json!([{"provider": "openai", "model": "gpt-4o-mini",
        "route": "smart", "why": "primary", "latency_ms": 182.4}]);
    let consumers: Vec<String> = (0..50)
        .map(|i| format!("0193b2c4-7d1e-7c3a-9f00-{i:012}"))
        .collect();
    let size0 = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let one = |i: u64| {
        let t = log.start(
            format!("req_5f0c2a9e41d3b7aa{i:012x}"),
            "default",
            "/v1/chat/completions",
        );
        t.set(|r| {
            r.consumer_id = Some(consumers[(i % 50) as usize].clone());
            r.key_id = Some("0193b2c4-7d1e-7c3a-9f00-00000000beef".into());
            r.model_requested = Some("gpt-4o-mini".into());
            r.stream = i.is_multiple_of(3);
        });
        t.first_token();
        t.set(|r| {
            r.status = 200;
            r.provider = Some("openai".into());
            r.model = Some("gpt-4o-mini".into());
            r.prompt_tokens = 412;
            r.completion_tokens = 96;
            r.cost_picos = 119_400_000;
            r.attempts = attempts.clone();
        });
        drop(t);
    };
    // Warm-up: the writer, SQLite's caches, the metrics maps.
    for i in 0..2_000 {
        one(u64::MAX - i);
    }
    log.flush().await;

    let (c0, w0) = (cpu()?, Instant::now());
    let tick = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0;
    while i < n {
        interval.tick().await;
        for _ in 0..per_tick.min(n - i) {
            one(i);
            i += 1;
        }
    }
    log.flush().await;
    let (cpu_used, wall) = (cpu()? - c0, w0.elapsed());
    let written = log.counters.written.load(Ordering::Relaxed);
    let dropped = log.counters.dropped.load(Ordering::Relaxed);

    let rows = store.query_logs(&store::LogFilter::default(), 1000).await?;
    let payload: usize = rows
        .iter()
        .map(|r| serde_json::to_string(r).map(|s| s.len()).unwrap_or(0))
        .sum::<usize>()
        / rows.len().max(1);
    store.close().await;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.join("bench.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let on_disk = (size.saturating_sub(size0)) as f64 / (n + 2_000) as f64;

    let per = cpu_used.as_nanos() as f64 / n as f64;
    println!("# Request log overhead ({n} requests paced at {rate}/s, one thread, SQLite)\n");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| achieved rate | {:.0} requests/s |",
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "| CPU per request (trace, metrics, tail, queue, batched insert + rollups) | {:.2} µs |",
        per / 1e3
    );
    println!("| rows written / dropped | {written} / {dropped} |");
    println!("| row as JSON (no bodies) | {payload} bytes |");
    println!("| on disk per row (table, 3 indexes, rollups, WAL) | {on_disk:.0} bytes |");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "\n- {} logging CPU per request ≤ {:.0} µs at {rate}/s: {:.2} µs",
        verdict(per <= BUDGET_NS),
        BUDGET_NS / 1e3,
        per / 1e3
    );
    println!(
        "- {} a row averages ≤ 1 KB without bodies: {payload} bytes as JSON, {on_disk:.0} bytes on disk",
        verdict((payload as f64) <= ROW_BUDGET_BYTES)
    );
    Ok(())
}

/// `log-overhead analytics [ROWS]`: fills the log with ROWS rows over 30 days (1,000 consumers,
/// 12 model-provider pairs, 3 % errors) through the same batched insert the writer uses, then
/// times the analytics and log queries an operator runs (median of 5).
async fn analytics(n: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    const HOUR: i64 = 3_600_000;
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let store = store::Store::connect(&url, store::Cipher::generate().0).await?;
    store.migrate().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let span = 30 * 24 * HOUR;
    let models = [
        ("gpt-4o", "openai"),
        ("gpt-4o-mini", "openai"),
        ("o3-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("claude-haiku-4-5", "anthropic"),
        ("gemini-2.5-pro", "gemini"),
        ("gemini-2.5-flash", "gemini"),
        ("llama-3.3-70b", "groq"),
        ("mistral-large", "mistral"),
        ("deepseek-chat", "deepseek"),
        ("gpt-4o", "azure"),
        ("command-r-plus", "cohere"),
    ];
    let attempts = serde_json::json!([{"provider": "openai", "model": "gpt-4o", "route": "gpt-4o", "why": "primary", "latency_ms": 210.5}]);
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let (model, provider) = models[(i % 12) as usize];
        let status = if i % 33 == 0 { 502 } else { 200 };
        batch.push(store::LogRow {
            request_id: format!("req_{i:016x}"),
            created_at: now - span + (i as i64 * 7919) % span,
            api: if i % 5 == 0 {
                "support".into()
            } else {
                "default".into()
            },
            endpoint: "/v1/chat/completions".into(),
            consumer_id: Some(format!(
                "0193b2c4-7d1e-7c3a-9f00-{:012}",
                (i * 2_654_435_761) % 1000
            )),
            key_id: Some(format!("0193b2c4-7d1e-7c3a-9f01-{:012}", i % 1500)),
            model_requested: Some(model.into()),
            model: Some(model.into()),
            provider: Some(provider.into()),
            attempts: attempts.clone(),
            stream: i % 2 == 0,
            prompt_tokens: 100 + (i % 900) as i64,
            completion_tokens: 20 + (i % 300) as i64,
            cost_picos: 1_000_000 * (1 + (i % 50) as i64),
            latency_ms: 80 + ((i * 37) % 3_000) as i64,
            ttft_ms: Some(40 + (i % 400) as i64),
            status,
            ..Default::default()
        });
        if batch.len() == 1000 {
            store.insert_logs(&batch).await?;
            batch.clear();
        }
        if i > 0 && i % 1_000_000 == 0 {
            eprintln!("{i} rows in {:.0} s", t0.elapsed().as_secs_f64());
        }
    }
    store.insert_logs(&batch).await?;
    let fill = t0.elapsed();

    let mut lines = Vec::new();
    macro_rules! timed {
        ($label:expr, $e:expr) => {{
            let mut ds = Vec::new();
            let mut out = 0usize;
            for _ in 0..5 {
                let t = Instant::now();
                out = $e;
                ds.push(t.elapsed());
            }
            ds.sort();
            lines.push(($label, ds[2], out));
        }};
    }
    let consumer = "0193b2c4-7d1e-7c3a-9f00-000000000042".to_string();
    timed!(
        "usage by consumer, 30 d (rollups)",
        store
            .usage_rollups(store::RollupBy::Consumer, now - span, now + 1)
            .await?
            .len()
    );
    timed!(
        "usage by model-provider, 30 d (rollups)",
        store
            .usage_rollups(store::RollupBy::Model, now - span, now + 1)
            .await?
            .len()
    );
    timed!(
        "usage by model-provider, 7 d (rollups)",
        store
            .usage_rollups(store::RollupBy::Model, now - 7 * 24 * HOUR, now + 1)
            .await?
            .len()
    );
    timed!(
        "usage by consumer, 24 h (rollups)",
        store
            .usage_rollups(store::RollupBy::Consumer, now - 24 * HOUR, now + 1)
            .await?
            .len()
    );
    let f = store::LogFilter {
        consumer: Some(consumer.clone()),
        from: Some(now - 24 * HOUR),
        ..Default::default()
    };
    timed!(
        "log stats: one consumer, 24 h (raw rows)",
        store.log_stats(&f).await?.requests as usize
    );
    let f = store::LogFilter {
        consumer: Some(consumer.clone()),
        ..Default::default()
    };
    timed!(
        "log list: one consumer, newest 100 (raw rows)",
        store.query_logs(&f, 100).await?.len()
    );
    let f = store::LogFilter {
        from: Some(now - HOUR),
        ..Default::default()
    };
    timed!(
        "log stats: everyone, last hour (raw rows)",
        store.log_stats(&f).await?.requests as usize
    );
    let f = store::LogFilter {
        model: Some("gpt-4o".into()),
        status: Some("error".into()),
        from: Some(now - 24 * HOUR),
        ..Default::default()
    };
    timed!(
        "log list: model + errors, 24 h (raw rows)",
        store.query_logs(&f, 100).await?.len()
    );
    println!("# Analytics over {n} request-log rows (SQLite, 30 days, 1,000 consumers)\n");
    println!(
        "Filled in {:.0} s ({:.1} µs per row through the batched insert with rollups).\n",
        fill.as_secs_f64(),
        fill.as_secs_f64() * 1e6 / n as f64
    );
    println!("| query | median of 5 | rows returned |\n|---|---:|---:|");
    let mut worst = Duration::ZERO;
    for (label, d, out) in &lines {
        println!("| {label} | {:.1} ms | {out} |", d.as_secs_f64() * 1e3);
        if label.contains("rollups") {
            worst = worst.max(*d);
        }
    }
    let verdict = if worst <= Duration::from_millis(300) {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "\n- {verdict} analytics queries over {n} rows ≤ 300 ms: slowest {:.1} ms",
        worst.as_secs_f64() * 1e3
    );
    store.close().await;
    Ok(())
}
