//! Background indexing: workers claim queued documents from the store, extract their text,
//! chunk it, embed the chunks in batches and write them in one transaction. Bounded by the
//! number of workers; a restart resumes from the queue (see `store::knowledge`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::Store;
use store::knowledge::{ChunkInput, Claim};
use tokio::sync::Notify;

use crate::chunk::{ChunkSettings, chunk};
use crate::extract::{ExtractError, Extracted, Limits};
use crate::index::normalise;
use crate::retrieve::Retriever;
use crate::{EmbedError, Embedder};

/// Finds the embedder a base names (`local/minilm`, `openai/text-embedding-3-small`, …).
pub trait EmbedderSource: Send + Sync {
    fn embedder(&self, model: &str) -> Result<Arc<dyn Embedder>, EmbedError>;
}

pub type ExtractFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Extracted, ExtractError>> + Send + 'a>>;

/// How text is pulled out of an upload: in a sandboxed child process in the gateway, in
/// process (on a blocking thread, under the deadline) in tests.
pub trait Extractor: Send + Sync {
    fn extract<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        limits: &'a Limits,
    ) -> ExtractFuture<'a>;
}

pub struct InProcess;

impl Extractor for InProcess {
    fn extract<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        limits: &'a Limits,
    ) -> ExtractFuture<'a> {
        Box::pin(async move {
            let owned = (name.to_string(), limits.clone());
            let job = tokio::task::spawn_blocking(move || {
                crate::extract::extract(&owned.0, &bytes, &owned.1)
            });
            match tokio::time::timeout(limits.deadline, job).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(ExtractError::Invalid("extraction crashed".into())),
                Err(_) => Err(deadline_exceeded(limits)),
            }
        })
    }
}

/// The error of an extraction that ran past `limits.deadline` (in process or in the sandbox).
pub(crate) fn deadline_exceeded(limits: &Limits) -> ExtractError {
    let d = limits.deadline;
    ExtractError::Invalid(if d.as_secs() >= 1 {
        format!("extraction exceeded its {} s deadline", d.as_secs())
    } else {
        format!("extraction exceeded its {} ms deadline", d.as_millis())
    })
}

/// Texts per embedding call.
const BATCH: usize = 32;
/// A claim not renewed for this long is taken over by another worker.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
const RENEW_EVERY: Duration = Duration::from_secs(20);

pub struct Ingestor {
    pub store: Store,
    pub embedders: Arc<dyn EmbedderSource>,
    pub extractor: Arc<dyn Extractor>,
    pub limits: Limits,
    pub retriever: Arc<Retriever>,
    wake: Notify,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Extract(#[from] ExtractError),
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    #[error("the document has no text to index")]
    Empty,
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("the claim was lost (the document was replaced or deleted)")]
    Lost,
}

impl Ingestor {
    pub fn new(
        store: Store,
        embedders: Arc<dyn EmbedderSource>,
        extractor: Arc<dyn Extractor>,
        limits: Limits,
        retriever: Arc<Retriever>,
    ) -> Arc<Ingestor> {
        Arc::new(Ingestor {
            store,
            embedders,
            extractor,
            limits,
            retriever,
            wake: Notify::new(),
        })
    }

    /// Tells the workers an upload is waiting (they also poll, for other instances' uploads).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Starts `workers` indexing loops; they run until the runtime stops or the handles are aborted.
    pub fn spawn(self: &Arc<Self>, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers.max(1))
            .map(|_| {
                let me = self.clone();
                tokio::spawn(async move { me.run().await })
            })
            .collect()
    }

    async fn run(&self) {
        loop {
            match self.step().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "gateway::knowledge", error = %e, "ingestion queue unavailable")
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wake.notified()).await;
        }
    }

    /// Indexes one queued document, if any. Returns whether one was taken.
    pub async fn step(&self) -> Result<bool, store::StoreError> {
        let stale = store_now_ms() - i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
        let Some(claim) = self.store.claim_document(stale).await? else {
            return Ok(false);
        };
        let started = Instant::now();
        let mut token = claim.token;
        match self.index(&claim, &mut token).await {
            Ok(n) => {
                self.retriever.invalidate(&claim.kb.id);
                tracing::info!(target: "gateway::knowledge", kb = %claim.kb.name, document = %claim.document.name,
                    chunks = n, ms = started.elapsed().as_millis() as u64, "document indexed");
            }
            Err(Failure::Lost) => {}
            Err(e) => {
                tracing::info!(target: "gateway::knowledge", kb = %claim.kb.name, document = %claim.document.name,
                    reason = %e, "document failed");
                self.store
                    .fail_document(&claim.document.id, token, &e.to_string())
                    .await?;
            }
        }
        Ok(true)
    }
}

impl Ingestor {
    /// Extract, chunk, embed, write. `token` follows the claim's renewals.
    async fn index(&self, claim: &Claim, token: &mut i64) -> Result<usize, Failure> {
        let embedder = self.embedders.embedder(&claim.kb.embedding_model)?;
        let doc = self
            .extractor
            .extract(&claim.document.name, claim.content.clone(), &self.limits)
            .await?;
        let settings = ChunkSettings {
            size_tokens: usize::try_from(claim.kb.chunk_tokens).unwrap_or(200),
            overlap_tokens: usize::try_from(claim.kb.overlap_tokens).unwrap_or(0),
        };
        let chunks = chunk(&doc, &settings, embedder.counter());
        if chunks.is_empty() {
            return Err(Failure::Empty);
        }
        let mut rows = Vec::with_capacity(chunks.len());
        let mut renewed = Instant::now();
        for batch in chunks.chunks(BATCH) {
            // The heading travels with its text: a question often names the section.
            let texts: Vec<String> = batch
                .iter()
                .map(|c| match &c.heading {
                    Some(h) => format!("{h}\n{}", c.text),
                    None => c.text.clone(),
                })
                .collect();
            let vectors = embedder.embed(&texts).await?;
            if vectors.len() != batch.len() {
                return Err(Failure::Embed(EmbedError(format!(
                    "asked for {} vectors, got {}",
                    batch.len(),
                    vectors.len()
                ))));
            }
            for (c, mut v) in batch.iter().zip(vectors) {
                normalise(&mut v);
                rows.push(ChunkInput {
                    ordinal: i64::from(c.ordinal),
                    heading: c.heading.clone(),
                    text: c.text.clone(),
                    tokens: i64::try_from(c.tokens).unwrap_or(i64::MAX),
                    vector: v,
                });
            }
            if renewed.elapsed() >= RENEW_EVERY {
                *token = self
                    .store
                    .renew_claim(&claim.document.id, *token)
                    .await?
                    .ok_or(Failure::Lost)?;
                renewed = Instant::now();
            }
        }
        if self.store.finish_document(claim, *token, &rows).await? {
            Ok(rows.len())
        } else {
            Err(Failure::Lost)
        }
    }
}

fn store_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
