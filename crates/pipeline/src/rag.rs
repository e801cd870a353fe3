//! The RAG stage and the gateway's side of the knowledge base.
//!
//! Reads the API's `rag` settings and the last user message; writes one system message with
//! the retrieved chunks right before that message, and `x-gateway-rag-sources`. The base is
//! the one the API's settings name, never one the request names: tenants are isolated by
//! construction. A failing retrieval (embedder down, base missing) lets the request on
//! without context (counted, logged) unless the API chose `fail_closed` (503).
//!
//! Embeddings for a base go through the same router as `/v1/embeddings`, so any configured
//! provider (or the built-in `local` models) can embed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use knowledge::ingest::{EmbedderSource, Ingestor};
use knowledge::retrieve::{Hit, Mode, Retriever, Settings};
use knowledge::{EmbedError, EmbedFuture, Embedder, TokenCounter};
use serde_json::Value;
use store::knowledge::KbRecord;
use wire::openai::{ChatRequest, EmbeddingInput, EmbeddingsRequest, Message, Role};

use crate::error::GatewayError;
use crate::llm::{self, Ask};
use crate::state::Gateway;

/// How long retrieval may take before the request goes on without it.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a knowledge base's record is trusted before it is read again.
const KB_TTL: Duration = Duration::from_secs(1);

/// The knowledge-base services of one gateway: retrieval with its index cache, ingestion.
pub struct Knowledge {
    pub retriever: Arc<Retriever>,
    pub ingestor: Arc<Ingestor>,
    pub embedders: Arc<dyn EmbedderSource>,
    kbs: Mutex<HashMap<String, (Option<KbRecord>, Instant)>>,
}

impl Knowledge {
    pub fn new(
        retriever: Arc<Retriever>,
        ingestor: Arc<Ingestor>,
        embedders: Arc<dyn EmbedderSource>,
    ) -> Knowledge {
        Knowledge {
            retriever,
            ingestor,
            embedders,
            kbs: Mutex::new(HashMap::new()),
        }
    }

    /// A base by name, cached for [`KB_TTL`].
    pub async fn kb(&self, name: &str) -> Result<Option<KbRecord>, store::StoreError> {
        if let Some((kb, at)) = self.kbs.lock().ok().and_then(|m| m.get(name).cloned())
            && at.elapsed() < KB_TTL
        {
            return Ok(kb);
        }
        let kb = self.retriever.store().get_kb(name).await?;
        if let Ok(mut m) = self.kbs.lock() {
            m.insert(name.to_string(), (kb.clone(), Instant::now()));
        }
        Ok(kb)
    }

    /// Forgets cached base records (after an admin change on this instance).
    pub fn forget(&self, name: &str) {
        if let Ok(mut m) = self.kbs.lock() {
            m.remove(name);
        }
    }

    /// Retrieval for a question against `kb` with the API's settings: the stage's core, and
    /// what the admin's test query shows.
    pub async fn query(
        &self,
        kb: &KbRecord,
        question: &str,
        settings: &access::stages::RagSettings,
    ) -> Result<knowledge::retrieve::Retrieval, GatewayError> {
        let embedder = self
            .embedders
            .embedder(&kb.embedding_model)
            .map_err(|e| GatewayError::Knowledge(e.to_string()))?;
        let s = Settings {
            top_k: settings.top_k,
            min_score: settings.min_score,
            mode: match settings.mode.as_str() {
                "vector" => Mode::Vector,
                "text" => Mode::Text,
                _ => Mode::Hybrid,
            },
            ..Settings::default()
        };
        match tokio::time::timeout(
            DEADLINE,
            self.retriever.retrieve(kb, embedder.as_ref(), question, &s),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(GatewayError::Knowledge(e.to_string())),
            Err(_) => Err(GatewayError::Knowledge(format!(
                "retrieval exceeded its {} s deadline",
                DEADLINE.as_secs()
            ))),
        }
    }
}

/// Starts the knowledge-base services on a gateway with a store: retrieval, and `workers`
/// background indexing loops. `None` without a store. Idempotent.
pub fn start(
    gw: &Arc<Gateway>,
    extractor: Arc<dyn knowledge::ingest::Extractor>,
    limits: knowledge::extract::Limits,
    workers: usize,
) -> Option<Arc<Knowledge>> {
    if let Some(k) = gw.knowledge() {
        return Some(k.clone());
    }
    let store = gw.store.clone()?;
    let retriever = Arc::new(Retriever::new(store.clone()));
    let embedders: Arc<dyn EmbedderSource> = Arc::new(RoutedEmbedders {
        gw: Arc::downgrade(gw),
    });
    let ingestor = Ingestor::new(
        store,
        embedders.clone(),
        extractor,
        limits,
        retriever.clone(),
    );
    let k = gw.set_knowledge(Arc::new(Knowledge::new(
        retriever,
        ingestor.clone(),
        embedders,
    )));
    if workers > 0 {
        // Detached: the loops end with the runtime; an interrupted document is taken over
        // after a restart (its claim goes stale).
        drop(ingestor.spawn(workers));
    }
    Some(k)
}

/// The text of the last user message: what retrieval searches for.
pub fn question(chat: &ChatRequest) -> Option<(usize, String)> {
    let (at, m) = chat
        .messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| m.role == Role::User)?;
    let text = m
        .content
        .as_ref()
        .map(wire::openai::Content::joined_text)
        .unwrap_or_default();
    (!text.trim().is_empty()).then_some((at, text))
}

/// Runs the stage: retrieves and injects. Returns the hits (for the pre-hook and headers).
pub async fn stage(
    gw: &Gateway,
    settings: &access::stages::RagSettings,
    chat: &mut ChatRequest,
) -> Result<Vec<Hit>, GatewayError> {
    let Some((at, question)) = question(chat) else {
        return Ok(Vec::new());
    };
    let found = async {
        let k = gw.knowledge().ok_or_else(|| {
            GatewayError::Knowledge("the knowledge base is not available on this gateway".into())
        })?;
        let kb = k
            .kb(&settings.knowledge_base)
            .await
            .map_err(|e| GatewayError::Knowledge(e.to_string()))?
            .ok_or_else(|| {
                GatewayError::Knowledge(format!(
                    "knowledge base {} does not exist",
                    settings.knowledge_base
                ))
            })?;
        k.query(&kb, &question, settings).await
    }
    .await;
    match found {
        Ok(r) => {
            if !r.hits.is_empty() {
                let text = knowledge::retrieve::context_message(&r.hits);
                chat.messages.insert(at, Message::text(Role::System, text));
            }
            Ok(r.hits)
        }
        Err(e) => {
            gw.counters.note_rag_failure();
            tracing::warn!(target: "gateway::knowledge", knowledge_base = %settings.knowledge_base,
                error = %e, "retrieval failed");
            if settings.fail_closed {
                Err(GatewayError::RetrievalUnavailable)
            } else {
                Ok(Vec::new())
            }
        }
    }
}

/// `x-gateway-rag-sources`: the source names, comma-separated, each percent-encoded where it
/// is not plain ASCII (names are the operator's file names).
pub fn sources_header(hits: &[Hit]) -> String {
    knowledge::retrieve::sources(hits)
        .iter()
        .map(|s| {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                if b.is_ascii_graphic() && b != b',' && b != b'%' || b == b' ' {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the pre-hook sees of the retrieved chunks.
pub fn chunks_json(hits: &[Hit]) -> Value {
    Value::Array(
        hits.iter()
            .map(|h| {
                serde_json::json!({
                    "source": h.chunk.document,
                    "section": h.chunk.heading,
                    "text": h.chunk.text,
                    "score": h.fused_score,
                    "similarity": h.vector_score,
                })
            })
            .collect(),
    )
}

/// Embeddings through the gateway's router: `local/minilm`, `openai/text-embedding-3-small`,
/// or an alias.
pub struct RoutedEmbedders {
    pub gw: Weak<Gateway>,
}

impl EmbedderSource for RoutedEmbedders {
    fn embedder(&self, model: &str) -> Result<Arc<dyn Embedder>, EmbedError> {
        Ok(Arc::new(RoutedEmbedder {
            gw: self.gw.clone(),
            model: model.to_string(),
        }))
    }
}

struct RoutedEmbedder {
    gw: Weak<Gateway>,
    model: String,
}

/// Float vectors for `texts` from `model` through the router (any embedding provider, or
/// `local/…`), in input order: what knowledge bases and the `embedding` moderation classifier
/// embed with.
pub async fn embed_texts(
    snap: &crate::state::Snapshot,
    health: &router::Health,
    model: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, String> {
    let n = texts.len();
    let req = EmbeddingsRequest {
        model: model.to_string(),
        input: EmbeddingInput::Many(texts),
        encoding_format: None,
        dimensions: None,
        user: None,
        extra: Default::default(),
    };
    let ask = Ask::embeddings(&req, &HeaderMap::new()).map_err(|e| e.to_string())?;
    let served = llm::embed(snap, health, &req, &ask)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<(u32, Vec<f32>)> = Vec::with_capacity(n);
    for e in served.value.data {
        let v = match &e.embedding {
            Value::Array(xs) => xs
                .iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect(),
            _ => return Err("the provider returned no float vector".into()),
        };
        rows.push((e.index, v));
    }
    rows.sort_by_key(|(i, _)| *i);
    if rows.iter().any(|(_, v)| v.is_empty()) {
        return Err("the provider returned an empty vector".into());
    }
    if rows.len() != n {
        return Err(format!(
            "asked for {n} vectors, the provider returned {}",
            rows.len()
        ));
    }
    Ok(rows.into_iter().map(|(_, v)| v).collect())
}

/// The BPE count scaled up: BERT-style WordPiece splits English into about a quarter more
/// pieces, and a chunk that overflows the embedder's window loses its tail.
struct WordPieceEstimate;

impl TokenCounter for WordPieceEstimate {
    fn count(&self, text: &str) -> usize {
        let bpe = usize::try_from(billing::tokens::count(text)).unwrap_or(usize::MAX);
        bpe.saturating_add(bpe / 4)
    }
}

impl Embedder for RoutedEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn counter(&self) -> &dyn TokenCounter {
        &WordPieceEstimate
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let gw = self
                .gw
                .upgrade()
                .ok_or_else(|| EmbedError("the gateway is shutting down".into()))?;
            let snap = gw.snapshot();
            embed_texts(&snap, &gw.health, &self.model, texts.to_vec())
                .await
                .map_err(EmbedError)
        })
    }
}
