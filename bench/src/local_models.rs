//! `local-models`: the built-in CPU models on this machine.
//!
//! - MiniLM embedding throughput: 512 English passages of about 200 tokens, embedded as the
//!   ingestor does (batches of 32), tokens per second of wall time.
//! - Query embedding latency: one 10-word question at a time, p50/p99.
//! - SmolLM2 decode speed: greedy generations of 128 tokens, tokens per second after the first
//!   token (prefill reported apart).
//! - Indexing a 1 MB text document end to end: extraction, chunking (200 tokens, 40 overlap),
//!   MiniLM embeddings and the SQLite writes, through the real ingestor.
//!
//! The model files: `--minilm DIR` / `--gguf FILE`, defaulting to GATEWAY_TEST_MINILM_DIR and
//! GATEWAY_TEST_SMOLLM2_GGUF (`eval "$(scripts/test-models.sh)"`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use knowledge::ingest::{InProcess, Ingestor};
use knowledge::retrieve::Retriever;
use minilm::Source;
use models::chat::{ChatModel, GenerateParams};
use models::embed::BertEmbedder;
use store::knowledge::KbInput;

mod minilm;

#[path = "allocator.rs"]
mod allocator;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "GATEWAY_TEST_MINILM_DIR")]
    minilm: PathBuf,
    #[arg(long, env = "GATEWAY_TEST_SMOLLM2_GGUF")]
    gguf: PathBuf,
    /// Passages for the throughput run.
    #[arg(long, default_value_t = 512)]
    passages: usize,
    /// Generations for the decode run.
    #[arg(long, default_value_t = 5)]
    generations: usize,
    /// Size of the indexed document in bytes (0 skips the indexing run).
    #[arg(long, default_value_t = 1_000_000)]
    doc_bytes: usize,
}

/// Sentences to build passages from: ordinary documentation prose.
const SENTENCES: &[&str] = &[
    "The gateway forwards each request to the provider that serves the requested model.",
    "When a provider fails, the router moves on to the next target of the fallback chain.",
    "Operators define plans with monthly allowances, rate limits and a price per thousand tokens.",
    "Every document in the knowledge base is split into chunks of a few hundred tokens.",
    "A consumer who runs out of balance receives a clear error with status code 402.",
    "Streaming responses are billed for the tokens that were actually delivered to the client.",
    "The request log keeps one row per request, with its latency, tokens and cost.",
    "Keys are shown once at creation; only a hash of each key is stored on the server.",
    "Retrieval combines vector similarity with full-text search and fuses the two rankings.",
    "Uploads are parsed with strict limits so that a hostile file cannot exhaust memory.",
    "Each employee may take up to twenty weeks of paid leave within the first year.",
    "The espresso machine heats up in ninety seconds and has a large removable water tank.",
    "Run the descaling programme once a month in areas where the water is hard.",
    "Invoices are computed from the ledger for every consumer and billing period.",
    "The live tail streams the most recent requests to every connected subscriber.",
    "Health checks report whether the store is reachable and the configuration is loaded.",
];

fn passage(i: usize, tokens_goal: usize, m: &BertEmbedder) -> String {
    let mut s = String::new();
    let mut j = i;
    while m.count_tokens(&s).unwrap_or(0) < tokens_goal {
        s.push_str(SENTENCES[j % SENTENCES.len()]);
        s.push(' ');
        j = j.wrapping_mul(7).wrapping_add(3);
    }
    s
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bert = Arc::new(
        BertEmbedder::load(&args.minilm, None)
            .with_context(|| format!("loading MiniLM from {}", args.minilm.display()))?,
    );

    // Embedding throughput.
    let texts: Vec<String> = (0..args.passages).map(|i| passage(i, 200, &bert)).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| bert.count_tokens(t).unwrap_or(0).min(bert.max_tokens()))
        .sum();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    bert.embed(&refs[..32.min(refs.len())])?; // warm-up
    let started = Instant::now();
    for batch in refs.chunks(32) {
        bert.embed(batch)?;
    }
    let took = started.elapsed();
    println!(
        "minilm embedding: {} passages, {tokens} tokens in {:.2} s = {:.0} tokens/s",
        texts.len(),
        took.as_secs_f64(),
        tokens as f64 / took.as_secs_f64()
    );

    // Query latency.
    let mut lat = Vec::new();
    for i in 0..200 {
        let q = format!(
            "how many days of paid leave do parents get in year {}",
            i % 7
        );
        let t = Instant::now();
        bert.embed(&[q.as_str()])?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "minilm query embedding (10 words): p50 {} p99 {} max {}",
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(pct(&lat, 100.0))
    );

    // Decode speed.
    let chat = ChatModel::load(&args.gguf)
        .with_context(|| format!("loading SmolLM2 from {}", args.gguf.display()))?;
    let params = GenerateParams {
        max_tokens: 128,
        ..GenerateParams::default()
    };
    let mut rates = Vec::new();
    let mut prefill = Vec::new();
    for i in 0..args.generations.max(1) {
        let prompt = format!(
            "Write a long, detailed story about a lighthouse keeper number {i} and the ships she guides."
        );
        let messages = [("user", prompt.as_str())];
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        let mut n = 0usize;
        let g = chat.generate(&messages, &params, &mut |_| {
            n += 1;
            first.get_or_insert_with(Instant::now);
            true
        })?;
        let end = Instant::now();
        let first = first.unwrap_or(end);
        prefill.push(first - started);
        let decoded = g.completion_tokens.saturating_sub(1);
        if decoded > 0 {
            rates.push(decoded as f64 / (end - first).as_secs_f64());
        }
        eprintln!(
            "  generation {i}: prompt {} tokens, {} completion tokens, first token {}",
            g.prompt_tokens,
            g.completion_tokens,
            ms(first - started)
        );
    }
    rates.sort_by(f64::total_cmp);
    prefill.sort();
    println!(
        "smollm2 decode: median {:.1} tokens/s (min {:.1}, max {:.1}) over {} generations; first token p50 {}",
        rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        rates.first().copied().unwrap_or(0.0),
        rates.last().copied().unwrap_or(0.0),
        rates.len(),
        ms(pct(&prefill, 50.0))
    );

    if args.doc_bytes > 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(index_document(bert, args.doc_bytes))?;
    }
    Ok(())
}

async fn index_document(bert: Arc<BertEmbedder>, bytes: usize) -> anyhow::Result<()> {
    let mut doc = String::with_capacity(bytes + 200);
    let mut i = 0usize;
    while doc.len() < bytes {
        if i.is_multiple_of(40) {
            doc.push_str(&format!("\n\n# Section {}\n\n", i / 40));
        } else if i.is_multiple_of(5) {
            doc.push_str("\n\n");
        }
        doc.push_str(SENTENCES[(i * 7 + 3) % SENTENCES.len()]);
        doc.push(' ');
        i += 1;
    }
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kb.db").display());
    let store = store::Store::connect(&url, store::Cipher::generate().0).await?;
    store.migrate().await?;
    let retriever = Arc::new(Retriever::new(store.clone()));
    let ingestor = Ingestor::new(
        store.clone(),
        Arc::new(Source(bert)),
        Arc::new(InProcess),
        knowledge::extract::Limits::default(),
        retriever,
    );
    let kb = store
        .create_kb(&KbInput {
            name: "bench".into(),
            embedding_model: "local/minilm".into(),
            chunk_tokens: 200,
            overlap_tokens: 40,
        })
        .await?;
    store
        .put_document(&kb.id, "big.md", doc.as_bytes(), "x")
        .await?;
    let started = Instant::now();
    while ingestor.step().await? {}
    let took = started.elapsed();
    let d = store
        .get_document(&kb.id, "big.md")
        .await?
        .context("the document vanished")?;
    println!(
        "indexing a {:.2} MB markdown document: {} in {:.1} s ({} chunks)",
        doc.len() as f64 / 1e6,
        d.status,
        took.as_secs_f64(),
        d.chunks
    );
    Ok(())
}
