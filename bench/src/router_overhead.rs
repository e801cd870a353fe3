//! `router-overhead`: the CPU the router adds to one request on the happy path.
//!
//! It runs, in one thread, what the data plane runs per chat request before and after the
//! upstream call — `Ask::chat` (token estimate, fallback and metadata headers), the routing-rule
//! context, and `router::execute` (rules, target ordering by latency, health admission and
//! recording, the attempt record) — against an upstream call that answers at once, and the same
//! call without the router. The difference, per request, is the router's cost. CPU time comes
//! from `/proc/self/stat`, so other processes on the machine do not inflate it.
//!
//! The configuration is the expensive kind: the model has three targets under the `latency`
//! strategy, fallbacks for every class, and four routing rules (metadata, tokens, a time window
//! in a time zone, spend) none of which matches, so every rule is evaluated.

#[path = "allocator.rs"]
mod allocator;

#[path = "procfs.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary reads CPU time only"
)]
mod procfs;

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderValue};
use pipeline::Snapshot;
use pipeline::llm::Ask;
use providers::{ErrorClass, ProviderKind};
use router::{Fallbacks, Health, ProviderEntry, Route, RoutingTable, Strategy, Target};
use wire::openai::ChatRequest;

const BUDGET_NS: f64 = 5_000.0;

fn table() -> anyhow::Result<RoutingTable> {
    let providers = (0..5)
        .map(|i| ProviderEntry {
            name: format!("p{i}"),
            kind: ProviderKind::OpenAi,
            models: vec![],
            priority: 0,
        })
        .collect();
    let mut smart = Route::new(
        "smart",
        vec![
            Target::new("p0", "gpt-4o"),
            Target::new("p1", "gpt-4o"),
            Target::new("p2", "gpt-4o"),
        ],
    );
    smart.strategy = Strategy::Latency;
    smart.fallbacks = Fallbacks {
        any: vec!["m1".into()],
        rate_limited: vec!["m2".into()],
        server_error: vec!["m3".into()],
        timeout: vec!["m4".into()],
        context_length: vec!["m5".into()],
        content_filter: vec![],
    };
    smart.rules = serde_json::from_value(serde_json::json!([
        {"name": "batch", "when": {"metadata": {"tier": "batch"}}, "then": {"model": "m1"}},
        {"name": "long", "when": {"input_tokens": {"gte": 100000}}, "then": {"model": "m2"}},
        {"name": "night", "when": {"time": {"from": "03:00", "to": "03:01", "tz": "Asia/Tokyo"}}, "then": {"model": "m3"}},
        {"name": "saver", "when": {"monthly_spend_pct": {"gte": 99}}, "then": {"model": "m4"}}
    ]))
    .context("rules")?;
    let mut routes = vec![smart];
    for i in 1..20 {
        routes.push(Route::new(
            format!("m{i}"),
            vec![Target::new(format!("p{}", i % 5), format!("model-{i}"))],
        ));
    }
    Ok(RoutingTable::new(providers, routes))
}

fn request() -> anyhow::Result<(ChatRequest, HeaderMap)> {
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"smart","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark in one short sentence."}],"max_tokens":64}"#,
    )?;
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-consumer-key"),
        ("user-agent", "OpenAI/Python 1.99.0"),
        ("accept", "application/json"),
        ("x-gateway-meta-team", "search"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    Ok((req, h))
}

/// The upstream call: answers at once with something the optimiser cannot drop.
async fn upstream(t: &Target, req: &ChatRequest) -> Result<usize, providers::ProviderError> {
    Ok(black_box(t.model.len() + req.messages.len()))
}

fn cpu() -> anyhow::Result<Duration> {
    procfs::cpu_time(std::process::id(), procfs::clock_ticks())
}

fn main() -> anyhow::Result<()> {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("the argument is the number of iterations")?
        .unwrap_or(1_000_000);
    let snap = Snapshot {
        table: table()?,
        monthly_spend_pct: Some(40.0),
        ..Default::default()
    };
    let health = Health::default();
    let now = tokio::time::Instant::now;
    // A warm window, as in production: every target has latency data.
    for (i, p) in ["p0", "p1", "p2"].iter().enumerate() {
        for _ in 0..50 {
            health.record(
                &Target::new(*p, "gpt-4o"),
                Duration::from_millis(200 + 50 * i as u64),
                None,
                now(),
            );
        }
        health.record(
            &Target::new(*p, "gpt-4o"),
            Duration::from_millis(300),
            Some(ErrorClass::RateLimited),
            now(),
        );
    }
    let (req, headers) = request()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    let direct = |n: u64| -> anyhow::Result<(Duration, Duration)> {
        let (c0, w0) = (cpu()?, Instant::now());
        rt.block_on(async {
            let t = Target::new("p0", "gpt-4o");
            for _ in 0..n {
                let _ = black_box(upstream(black_box(&t), &req).await);
            }
        });
        Ok((cpu()? - c0, w0.elapsed()))
    };
    let routed = |n: u64| -> anyhow::Result<(Duration, Duration)> {
        let (c0, w0) = (cpu()?, Instant::now());
        rt.block_on(async {
            for _ in 0..n {
                let Ok(ask) = Ask::chat(black_box(&req), &headers) else {
                    continue;
                };
                let ctx = ask.context(&snap);
                let out = router::execute(&snap.table, &health, &ask.plan(&ctx), |t, _, _| {
                    let req = &req;
                    async move { upstream(&t, req).await }
                })
                .await;
                let _ = black_box(out.map(|o| o.value));
            }
        });
        Ok((cpu()? - c0, w0.elapsed()))
    };
    // Warm caches and the allocator, then measure.
    direct(iterations / 10)?;
    routed(iterations / 10)?;
    let (d_cpu, d_wall) = direct(iterations)?;
    let (r_cpu, r_wall) = routed(iterations)?;
    let per = |d: Duration| d.as_nanos() as f64 / iterations as f64;
    let added_cpu = per(r_cpu) - per(d_cpu);
    let added_wall = per(r_wall) - per(d_wall);
    println!("# Router overhead ({iterations} requests, one thread)\n");
    println!("| path | CPU ns/request | wall ns/request |");
    println!("|---|---:|---:|");
    println!(
        "| upstream call only | {:.0} | {:.0} |",
        per(d_cpu),
        per(d_wall)
    );
    println!(
        "| Ask + rules + router::execute + call | {:.0} | {:.0} |",
        per(r_cpu),
        per(r_wall)
    );
    println!("| **added by the router** | **{added_cpu:.0}** | **{added_wall:.0}** |\n");
    let verdict = if added_cpu <= BUDGET_NS {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "- {verdict} router CPU per request ≤ {:.1} µs: {:.2} µs",
        BUDGET_NS / 1e3,
        added_cpu / 1e3
    );
    Ok(())
}
