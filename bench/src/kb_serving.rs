//! `kb-serving`: does the gateway keep serving while it indexes a large document?
//!
//! Starts the release emulator (core 1) and a release gateway (both cores, as it runs in
//! production) with MiniLM installed from `GATEWAY_TEST_MINILM_DIR` and a knowledge base. A few
//! clients send non-streaming chat through the gateway back to back, first with the gateway
//! idle, then while it indexes a document of `--doc-bytes` (5 MB by default, the largest upload
//! it accepts) uploaded through the admin API. It prints throughput, p50/p99/max and errors for
//! both windows, and with `--wait-ready` how long the document took to be ready.
//!
//! Serving holds when every request during indexing succeeds and its p99 stays within
//! `--p99-budget-ms` (100 ms by default: a few percent of what an LLM call takes, so a client
//! cannot tell). The load generator runs in this process, unpinned.

#[path = "allocator.rs"]
mod allocator;

#[path = "load.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary needs a subset"
)]
mod load;

#[path = "servers.rs"]
#[allow(
    dead_code,
    reason = "shared with the load harness; this binary needs a subset"
)]
mod servers;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::{Rng, SeedableRng};

use crate::load::{LoadResult, Mode, Target, Window, percentile_ms};
use crate::servers::{GATEWAY_MODEL, Server, admin};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "GATEWAY_TEST_MINILM_DIR")]
    minilm: PathBuf,
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    #[arg(long, default_value = "target/release/emulator")]
    emulator: PathBuf,
    /// Size of the indexed document in bytes (5 MiB is the default upload limit).
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    doc_bytes: usize,
    /// Concurrent chat clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds measured in each window.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 100.0)]
    p99_budget_ms: f64,
    /// Also wait until the document is ready and report the indexing time.
    #[arg(long)]
    wait_ready: bool,
}

const KB_YAML: &str = "knowledge_bases:\n  - {name: docs}\n\
                       apis:\n  - {slug: docs, auth: public, rag: {knowledge_base: docs}}\n";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Prose with headings: sentences from a fixed vocabulary, a heading every twenty paragraphs.
fn document(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "gateway",
        "routes",
        "each",
        "request",
        "to",
        "a",
        "provider",
        "and",
        "records",
        "its",
        "usage",
        "operators",
        "configure",
        "plans",
        "limits",
        "wallets",
        "for",
        "their",
        "consumers",
        "who",
        "call",
        "models",
        "through",
        "one",
        "endpoint",
        "with",
        "keys",
        "tokens",
        "budgets",
        "invoices",
        "latency",
        "retries",
        "fallback",
        "chains",
        "when",
        "upstream",
        "fails",
        "knowledge",
        "base",
        "documents",
        "are",
        "chunked",
        "embedded",
        "searched",
        "by",
        "meaning",
        "text",
        "answers",
        "cite",
        "sources",
        "in",
        "every",
        "reply",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = String::with_capacity(bytes + 200);
    let mut paragraph = 0;
    while out.len() < bytes {
        if paragraph % 20 == 0 {
            out.push_str(&format!("# Section {}\n\n", paragraph / 20 + 1));
        }
        for _ in 0..rng.gen_range(3..7) {
            let n = rng.gen_range(8..20);
            for i in 0..n {
                let w = WORDS[rng.gen_range(0..WORDS.len())];
                if i == 0 {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        out.extend(f.to_uppercase());
                        out.push_str(c.as_str());
                    }
                } else {
                    out.push(' ');
                    out.push_str(w);
                }
            }
            out.push_str(". ");
        }
        out.push_str("\n\n");
        paragraph += 1;
    }
    out.truncate(bytes);
    out
}

fn line(name: &str, r: &LoadResult) -> String {
    let ms = |p| percentile_ms(&r.total, p).map_or("-".into(), |v| format!("{v:.2}"));
    format!(
        "| {name} | {:.0} | {} | {} | {} | {} |",
        r.per_second(),
        ms(50.0),
        ms(99.0),
        ms(100.0),
        r.errors
    )
}

async fn document_status(admin_port: u16) -> anyhow::Result<(String, i64)> {
    let (st, v) = admin(
        admin_port,
        "GET",
        "/admin/knowledge-bases/docs/documents/big.txt",
        b"",
    )
    .await?;
    if st != 200 {
        bail!("document status: {st} {v}");
    }
    if v["status"] == "error" {
        bail!("indexing failed: {}", v["error"]);
    }
    Ok((
        v["status"].as_str().unwrap_or_default().to_string(),
        v["chunks"].as_i64().unwrap_or(0),
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let emu = Server::emulator(&args.emulator, 1, 60)?;
    let minilm = args.minilm.clone();
    let gateway_bin = args.gateway.clone();
    let gw = Server::gateway_with(&args.gateway, "0,1", emu.addr, KB_YAML, |data| {
        let out = Command::new(&gateway_bin)
            .args(["models", "pull", "minilm", "--from"])
            .arg(&minilm)
            .env("GATEWAY_DATA_DIR", data)
            .output()
            .context("cannot run gateway models pull")?;
        if !out.status.success() {
            bail!(
                "installing MiniLM failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })?;
    let admin_port = gw.admin_port.context("the gateway has no admin port")?;
    load::wait_ready(gw.addr, "/readyz", Duration::from_secs(30))
        .await
        .with_context(|| gw.log_tail())?;
    let key = Server::issue_key(admin_port).await?;
    let target = Target::chat(
        gw.addr,
        GATEWAY_MODEL,
        Some(format!("Bearer {key}")),
        Mode::Complete,
    );
    let window = Window {
        warmup: Duration::from_secs(2),
        measure: Duration::from_secs(args.seconds),
    };
    let idle = load::run(&target, args.clients, Instant::now(), window).await?;

    let doc = document(args.doc_bytes);
    let uploaded = Instant::now();
    let (st, v) = admin(
        admin_port,
        "PUT",
        "/admin/knowledge-bases/docs/documents/big.txt",
        doc.as_bytes(),
    )
    .await?;
    if !(200..300).contains(&st) {
        bail!("upload refused: {st} {v}");
    }
    // The window starts once the embedder is at work, not while the upload is still queued.
    loop {
        let (status, _) = document_status(admin_port).await?;
        if status == "indexing" {
            break;
        }
        if status == "ready" {
            bail!("the document was ready before the window began: make it larger");
        }
        if uploaded.elapsed() > Duration::from_secs(60) {
            bail!("the document never started indexing ({status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = load::run(&target, args.clients, Instant::now(), window).await?;
    let (status, chunks) = document_status(admin_port).await?;
    if status != "indexing" {
        bail!(
            "indexing ended during the window ({status}, {chunks} chunks): make the document larger"
        );
    }
    let mut ready_after = None;
    if args.wait_ready {
        loop {
            let (status, chunks) = document_status(admin_port).await?;
            if status == "ready" {
                ready_after = Some((uploaded.elapsed(), chunks));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    println!(
        "# Serving while indexing ({} bytes, {} clients, {} s windows)\n",
        args.doc_bytes, args.clients, args.seconds
    );
    println!("| gateway | req/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", line("idle", &idle));
    println!("{}", line("indexing", &busy));
    if let Some((t, chunks)) = ready_after {
        println!(
            "\n- indexed in {:.1} s ({chunks} chunks, {:.0} KB/s)",
            t.as_secs_f64(),
            args.doc_bytes as f64 / 1e3 / t.as_secs_f64()
        );
    }
    let p99 = percentile_ms(&busy.total, 99.0).unwrap_or(f64::INFINITY);
    let verdict = if busy.errors == 0 && busy.ok > 0 && p99 <= args.p99_budget_ms {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "- {verdict} serving while indexing: {} errors, p99 {p99:.2} ms (budget {:.0} ms), {:.0} % of idle throughput",
        busy.errors,
        args.p99_budget_ms,
        100.0 * busy.per_second() / idle.per_second().max(1.0)
    );
    drop(gw);
    drop(emu);
    Ok(())
}
