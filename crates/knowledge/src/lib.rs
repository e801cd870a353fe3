//! The knowledge base of a gateway API: what an operator uploads becomes text
//! ([`extract`]), then chunks ([`chunk`]), then vectors in an in-process index ([`index`])
//! beside a full-text index in the store; a question is answered by both, fused by
//! reciprocal rank ([`fuse`]).
//!
//! Model code stays out of this crate: an [`Embedder`] is whatever turns text into vectors
//! (a local BERT model, or any provider's embeddings endpoint).

pub mod chunk;
pub mod extract;
pub mod index;
pub mod ingest;
pub mod retrieve;
pub mod sandbox;

use std::future::Future;
use std::pin::Pin;

/// File extensions an upload may have (the format is chosen by extension).
pub const EXTENSIONS: &[&str] = &[
    "pdf", "txt", "md", "markdown", "json", "csv", "html", "htm", "xml", "yml", "yaml", "toml",
    "docx",
];

/// Whether `name`'s extension is one [`extract`] reads.
pub fn supported(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Counts tokens the way the embedder will, so chunk sizes mean what the operator set.
pub trait TokenCounter: Send + Sync {
    fn count(&self, text: &str) -> usize;
}

/// Whitespace-separated words: the counter when no tokenizer is at hand (tests, remote embedders).
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmbedError(pub String);

pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<f32>>, EmbedError>> + Send + 'a>>;

/// Turns texts into unit-length vectors of [`Embedder::dim`] components.
pub trait Embedder: Send + Sync {
    /// The name the knowledge base records (and locks) as its embedding model.
    fn model(&self) -> &str;
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
    /// The embedder's own token count, when it has a tokenizer.
    fn counter(&self) -> &dyn TokenCounter {
        &WordCounter
    }
}
