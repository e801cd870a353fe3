//! `auth-overhead`: the CPU that gateway-key auth adds to one request when the key is cached.
//!
//! It runs the edge (`pipeline::edge::auth::admit`: API from the path, client address, IP rules,
//! credential, shape check, SHA-256, cache lookup, revocation/expiry/scope checks, `last_used`
//! mark) in one thread, for a request to a key-gated API with a key seen before, and for the same
//! request to a public API (everything but the key). The difference, per request, is what key
//! auth costs. The key lives in a real SQLite store and is looked up once; after that every
//! request must be served from memory. CPU time comes from `/proc/self/stat`.

#[path = "allocator.rs"]
mod allocator;

#[path = "procfs.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary reads CPU time only"
)]
mod procfs;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use access::api::{Api, AuthMode};
use anyhow::{Context, bail};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::http::request::Parts;
use pipeline::edge::auth::admit;
use pipeline::{Gateway, Limits, Snapshot};

const BUDGET_NS: f64 = 3_000.0;

fn cpu() -> anyhow::Result<Duration> {
    procfs::cpu_time(std::process::id(), procfs::clock_ticks())
}

fn parts(path: &str, key: &str) -> anyhow::Result<Parts> {
    let (mut parts, ()) = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("user-agent", "OpenAI/Python 1.99.0")
        .header("accept", "application/json")
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
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("ai-gateway-auth-bench-{}", std::process::id()));
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
        Some(consumer.id),
        "bench",
        hex::encode(key.hash),
        key.display.clone(),
    );
    input.scopes = serde_json::json!({"apis": ["default", "team"], "models": []});
    input.expires_at = Some(i64::MAX / 2);
    store.create_key(&input).await?;

    let gw = Gateway::with_store(Limits::default(), store.clone());
    let mut snap = Snapshot::default();
    snap.publish(Api::new("default", AuthMode::Keys));
    snap.publish(Api::new("open", AuthMode::Public));
    gw.swap(snap);
    let snap = gw.snapshot();
    let keyed = parts("/v1/chat/completions", &key.raw)?;
    let public = parts("/open/v1/chat/completions", &key.raw)?;
    // The first request reads the store; every later one must come from the cache.
    if admit(&gw, &snap, &keyed).await.is_err() {
        bail!("the key was refused");
    }
    store.close().await;

    let measure = |p: &Parts, n: u64| {
        let (gw, snap) = (&gw, &snap);
        let p = p.clone();
        async move {
            let (c0, w0) = (cpu()?, Instant::now());
            for _ in 0..n {
                let caller = admit(gw, snap, black_box(&p)).await;
                if caller.is_err() {
                    bail!("refused during the run: the cache was not used");
                }
                black_box(caller.ok());
            }
            Ok::<_, anyhow::Error>((cpu()? - c0, w0.elapsed()))
        }
    };
    measure(&public, iterations / 10).await?;
    measure(&keyed, iterations / 10).await?;
    let (p_cpu, p_wall) = measure(&public, iterations).await?;
    let (k_cpu, k_wall) = measure(&keyed, iterations).await?;
    let per = |d: Duration| d.as_nanos() as f64 / iterations as f64;
    let added = per(k_cpu) - per(p_cpu);
    println!("# Key auth overhead ({iterations} requests, one thread, cache hit)\n");
    println!("| path | CPU ns/request | wall ns/request |");
    println!("|---|---:|---:|");
    println!(
        "| edge, public API | {:.0} | {:.0} |",
        per(p_cpu),
        per(p_wall)
    );
    println!(
        "| edge, gateway key (cached) | {:.0} | {:.0} |",
        per(k_cpu),
        per(k_wall)
    );
    println!(
        "| **added by key auth** | **{added:.0}** | **{:.0}** |\n",
        per(k_wall) - per(p_wall)
    );
    let verdict = if added <= BUDGET_NS { "PASS" } else { "MISS" };
    println!(
        "- {verdict} key auth CPU per request on a cache hit ≤ {:.1} µs: {:.2} µs",
        BUDGET_NS / 1e3,
        added / 1e3
    );
    println!(
        "- the store was closed after the first lookup: every measured request was served from memory"
    );
    Ok(())
}
