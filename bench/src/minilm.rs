//! MiniLM behind the knowledge base's `Embedder` trait, on blocking threads as the gateway runs it.

use std::sync::Arc;

use knowledge::ingest::EmbedderSource;
use knowledge::{EmbedError, EmbedFuture, Embedder, TokenCounter};
use models::embed::BertEmbedder;

pub struct MiniLm(pub Arc<BertEmbedder>);

impl TokenCounter for MiniLm {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text).unwrap_or(usize::MAX)
    }
}

impl Embedder for MiniLm {
    fn model(&self) -> &str {
        "local/minilm"
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        let model = self.0.clone();
        let texts = texts.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                model.embed(&refs).map_err(|e| EmbedError(e.to_string()))
            })
            .await
            .map_err(|e| EmbedError(e.to_string()))?
        })
    }
    fn counter(&self) -> &dyn TokenCounter {
        self
    }
}

#[allow(
    dead_code,
    reason = "kb-retrieval embeds queries only; local-models indexes with it"
)]
pub struct Source(pub Arc<BertEmbedder>);

impl EmbedderSource for Source {
    fn embedder(&self, _model: &str) -> Result<Arc<dyn Embedder>, EmbedError> {
        Ok(Arc::new(MiniLm(self.0.clone())))
    }
}
