//! `billing-overhead`: the CPU that plan limits and a prepaid wallet add to one request on the
//! embedded default (SQLite, in-process limiter).
//!
//! One thread runs, per request, what the data plane runs around the LLM call: the account
//! stage's admission (subscription from memory, RPM + TPM decision, the token count of the
//! prompt, the period total, the wallet hold) and settlement (TPM correction, cost from the
//! price table, the usage record queued and group-committed with its period total, plan
//! charge and wallet settlement). It is compared with the same request to an API without plans
//! or limits (admission and settlement still run: the usage record is written either way).
//! 64 requests are in flight at once (a loaded gateway), so holds and records are
//! group-committed as they are in production; one request at a time would measure a
//! transaction per request. CPU time comes from `/proc/self/stat` and includes the writer
//! tasks and SQLite's own thread.

#[path = "allocator.rs"]
mod allocator;

#[path = "procfs.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary reads CPU time only"
)]
mod procfs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use access::api::{Api, AuthMode};
use anyhow::{Context, bail};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::http::request::Parts;
use pipeline::account::{self, Outcome, Wants};
use pipeline::edge::auth::admit;
use pipeline::{Gateway, Limits, Snapshot};
use wire::openai::Usage;

const BUDGET_NS: f64 = 15_000.0;
/// Requests in flight at once.
const LANES: u64 = 64;

fn cpu() -> anyhow::Result<Duration> {
    procfs::cpu_time(std::process::id(), procfs::clock_ticks())
}

fn parts(path: &str, key: &str) -> anyhow::Result<Parts> {
    let (mut parts, ()) = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(())?
        .into_parts();
    parts
        .extensions
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
    Ok(parts)
}

fn main() -> anyhow::Result<()> {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("the argument is the number of iterations")?
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("ai-gateway-billing-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = rt.block_on(run(iterations, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(iterations: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let store = store::Store::connect(&url, store::Cipher::generate().0).await?;
    store.migrate().await?;
    let consumer = store
        .create_consumer(&store::ConsumerInput::new("bench"))
        .await?;
    let key = access::keys::generate(access::keys::DEFAULT_PREFIX);
    let mut input = store::KeyInput::new(
        Some(consumer.id.clone()),
        "bench",
        hex::encode(key.hash),
        key.display.clone(),
    );
    input.rpm = Some(10_000_000);
    store.create_key(&input).await?;
    let plan: billing::Plan = serde_json::from_value(serde_json::json!({
        "kind": "metered", "overage_per_1k_micros": 1000, "wallet": "usd",
        "rpm": 10_000_000u64, "tpm": 60_000_000u64}))?;
    let limits_only: billing::Plan = serde_json::from_value(serde_json::json!({
        "kind": "metered", "overage_per_1k_micros": 1000,
        "rpm": 10_000_000u64, "tpm": 60_000_000u64}))?;
    let p = store.create_plan("paid", "bench", &plan).await?;
    let l = store.create_plan("limited", "bench", &limits_only).await?;
    store.subscribe(&consumer.id, &p.id).await?;
    store.subscribe(&consumer.id, &l.id).await?;
    store
        .top_up(
            &consumer.id,
            billing::WalletUnit::Usd,
            1_000_000_000_000,
            None,
            None,
        )
        .await?;

    let gw = Gateway::with_store(Limits::default(), store.clone());
    let mut snap = Snapshot::default();
    for slug in ["paid", "limited", "plain"] {
        snap.publish(Api::new(slug, AuthMode::Keys));
    }
    snap.plan_apis.insert("paid".into());
    snap.plan_apis.insert("limited".into());
    gw.swap(snap);
    let snap = gw.snapshot();
    let chat: wire::openai::ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "gpt-4o", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Write one sentence about the sea."}]}))?;

    let measure = |path: &'static str, n: u64| {
        let (gw, snap, chat) = (&gw, &snap, &chat);
        let key = key.raw.clone();
        async move {
            let p = parts(path, &key)?;
            let caller = match admit(gw, snap, &p).await {
                Ok(c) => c,
                Err(e) => bail!("refused: {e}"),
            };
            let count = || account::chat_prompt_tokens(chat);
            let wants = Wants {
                model: &chat.model,
                prompt_tokens: &count,
                max_output: Some(64),
                stream: false,
                free: false,
            };
            let usage = Usage::new(14, 30, None);
            let (c0, w0) = (cpu()?, Instant::now());
            let chain = |_lane: u64| {
                let (caller, wants) = (&caller, &wants);
                async move {
                    for i in 0..n / LANES {
                        let id = pipeline::edge::next_request_id();
                        let acct = match account::admit(gw, snap, caller, &id, wants).await {
                            Ok(a) => a,
                            Err(e) => bail!("admission refused: {e}"),
                        };
                        acct.settle(
                            gw,
                            &snap.prices,
                            Outcome {
                                status: 200,
                                provider: Some("openai"),
                                model: Some("gpt-4o"),
                                usage: Some(usage),
                                delivered_chunks: 0,
                                attempts: &[],
                            },
                        );
                        if i % 64 == 63 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Ok(())
                }
            };
            for r in futures::future::join_all((0..LANES).map(chain)).await {
                r?;
            }
            gw.accounts.flush().await;
            Ok::<_, anyhow::Error>((cpu()? - c0, w0.elapsed()))
        }
    };
    for path in [
        "/plain/v1/chat/completions",
        "/limited/v1/chat/completions",
        "/paid/v1/chat/completions",
    ] {
        measure(path, iterations / 10).await?;
    }
    let (b_cpu, b_wall) = measure("/plain/v1/chat/completions", iterations).await?;
    let (l_cpu, l_wall) = measure("/limited/v1/chat/completions", iterations).await?;
    let (w_cpu, w_wall) = measure("/paid/v1/chat/completions", iterations).await?;
    let per = |d: Duration| d.as_nanos() as f64 / iterations as f64;
    println!(
        "# Plan limits and wallet overhead ({iterations} requests, {LANES} in flight, one thread, SQLite)\n"
    );
    println!("| path | CPU µs/request | wall µs/request | added CPU µs |");
    println!("|---|---:|---:|---:|");
    for (name, c, w) in [
        ("no plan (usage record only)", b_cpu, b_wall),
        ("plan: key RPM + plan RPM/TPM", l_cpu, l_wall),
        ("plan: limits + USD wallet hold/settle", w_cpu, w_wall),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            per(c) / 1e3,
            per(w) / 1e3,
            (per(c) - per(b_cpu)) / 1e3
        );
    }
    let added = per(w_cpu) - per(b_cpu);
    let verdict = if added <= BUDGET_NS { "PASS" } else { "MISS" };
    println!(
        "\n- {verdict} limits + wallet CPU per request ≤ {:.0} µs: {:.2} µs",
        BUDGET_NS / 1e3,
        added / 1e3
    );
    // Every request's record must be written, or the figures above would flatter the writer.
    let sent = 3 * LANES * (iterations / 10 / LANES + iterations / LANES);
    let written: i64 = store
        .usage_lines(&consumer.id, 0, i64::MAX)
        .await?
        .iter()
        .map(|l| l.requests)
        .sum();
    let reserved = store
        .wallet(&consumer.id, billing::WalletUnit::Usd)
        .await?
        .reserved;
    println!(
        "- usage records written: {written} of {sent}; wallet reserved after the run: {reserved}"
    );
    if u64::try_from(written).ok() != Some(sent) || reserved != 0 {
        bail!("records lost or holds left over");
    }
    Ok(())
}
