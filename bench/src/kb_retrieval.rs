//! `kb-retrieval [CHUNKS] [QUERIES]`: hybrid retrieval over a knowledge base of CHUNKS chunks
//! (default 100,000) of 384-dimensional vectors in a real SQLite store with its FTS5 index.
//!
//! The chunks' texts are drawn from a Zipf-like vocabulary of 20,000 words (so full-text
//! postings have realistic lengths) and their vectors are random unit vectors. Each query is
//! 6 words and a precomputed vector: this measures the search side (vector scan + BM25 +
//! fusion + loading the chunk rows). With GATEWAY_TEST_MINILM_DIR set, each query is also
//! embedded by the real MiniLM (its vector then replaces the random one; it runs while the
//! full-text search does, as in the gateway), so the figure is embed + search. Prints
//! p50/p99/max per query and the index load time.

use std::sync::Arc;
use std::time::Instant;

use knowledge::retrieve::{Retriever, Settings};
use knowledge::{EmbedFuture, Embedder};
use rand::{Rng, SeedableRng};
use store::knowledge::{ChunkInput, KbInput};

const DIM: usize = 384;

mod minilm;

#[path = "allocator.rs"]
mod allocator;

struct Fixed(Vec<f32>);

impl Embedder for Fixed {
    fn model(&self) -> &str {
        "bench/fixed"
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move { Ok(texts.iter().map(|_| self.0.clone()).collect()) })
    }
}

fn unit(rng: &mut impl Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.r#gen::<f32>() - 0.5).collect();
    knowledge::index::normalise(&mut v);
    v
}

fn word(i: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ren", "tas", "vo", "shi", "pa", "qu", "dor", "el", "fin", "gu", "hal",
        "ix", "jo",
    ];
    let mut s = String::new();
    let mut n = i + 1;
    while n > 0 {
        s.push_str(SYL[n % 16]);
        n /= 16;
    }
    s
}

fn zipf(rng: &mut impl Rng, n: usize) -> usize {
    // Inverse-CDF of a 1/x density: small ranks are common, the tail is long.
    let u: f64 = rng.r#gen::<f64>();
    ((n as f64).powf(u) as usize).saturating_sub(1).min(n - 1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let chunks: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let queries: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let vocab: Vec<String> = (0..20_000).map(word).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kb.db").display());
    let store = store::Store::connect(&url, store::Cipher::generate().0).await?;
    store.migrate().await?;
    let kb = store
        .create_kb(&KbInput {
            name: "bench".into(),
            embedding_model: "bench/fixed".into(),
            chunk_tokens: 200,
            overlap_tokens: 40,
        })
        .await?;
    let filled = Instant::now();
    let per_doc = 1000;
    for d in 0..chunks.div_ceil(per_doc) {
        store
            .put_document(&kb.id, &format!("doc-{d}.txt"), b"x", "x")
            .await?;
        let claim = store
            .claim_document(0)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no claim"))?;
        let n = per_doc.min(chunks - d * per_doc);
        let rows: Vec<ChunkInput> = (0..n)
            .map(|i| {
                let text = (0..120)
                    .map(|_| vocab[zipf(&mut rng, vocab.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                ChunkInput {
                    ordinal: i as i64,
                    heading: None,
                    tokens: 120,
                    text,
                    vector: unit(&mut rng),
                }
            })
            .collect();
        store.finish_document(&claim, claim.token, &rows).await?;
    }
    eprintln!(
        "filled {chunks} chunks in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let retriever = Retriever::new(store.clone());
    let loaded = Instant::now();
    let index = retriever.index(&kb.id).await?;
    eprintln!(
        "index load: {} vectors in {:.0} ms",
        index.len(),
        loaded.elapsed().as_secs_f64() * 1e3
    );

    let bert = match std::env::var_os("GATEWAY_TEST_MINILM_DIR") {
        Some(dir) => Some(Arc::new(models::embed::BertEmbedder::load(
            std::path::Path::new(&dir),
            None,
        )?)),
        None => None,
    };
    eprintln!(
        "query vectors: {}",
        if bert.is_some() {
            "MiniLM (embed + search)"
        } else {
            "precomputed (search only)"
        }
    );
    let settings = Settings::default();
    let mut times = Vec::with_capacity(queries);
    let mut vector_ms = Vec::with_capacity(queries);
    let mut text_ms = Vec::with_capacity(queries);
    // Per retrieval: until the question's vector is in hand, until both it and the full-text
    // candidates are, and the rest (vector scan, fusion, chunk rows).
    let (mut embed_ms, mut joined_ms, mut after_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..queries {
        let q = (0..6)
            .map(|_| vocab[zipf(&mut rng, 2000)].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let e = Arc::new(Fixed(unit(&mut rng)));
        let t = Instant::now();
        let r = match &bert {
            Some(b) => {
                let m = minilm::MiniLm(b.clone());
                retriever.retrieve(&kb, &m, &q, &settings).await?
            }
            None => retriever.retrieve(&kb, e.as_ref(), &q, &settings).await?,
        };
        times.push(t.elapsed().as_secs_f64() * 1e3);
        embed_ms.push(r.embed_ms);
        joined_ms.push(r.total_ms - r.search_ms);
        after_ms.push(r.search_ms);
        let t = Instant::now();
        std::hint::black_box(index.search(&e.0, 50));
        vector_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(store.search_text(&kb.id, &q, 50).await?);
        text_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(r);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    };
    let spread =
        |v: &mut Vec<f64>| format!("p50 {:.2} ms, p99 {:.2} ms", pct(v, 0.5), pct(v, 0.99));
    println!(
        "kb-retrieval chunks={chunks} queries={queries}: search {}, max {:.2} ms; vector scan alone {}; full text alone {}",
        spread(&mut times),
        pct(&mut times, 1.0),
        spread(&mut vector_ms),
        spread(&mut text_ms),
    );
    println!(
        "  inside a retrieval: question embedded {}; embedding and full text both done {}; vector scan + fusion + rows {}",
        spread(&mut embed_ms),
        spread(&mut joined_ms),
        spread(&mut after_ms),
    );
    Ok(())
}
