//! The one error type of local inference.

use std::path::PathBuf;

/// Why a local model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs is not there (the model is not installed).
    #[error("model file {path} is missing")]
    Missing { path: PathBuf },
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is there but is not what we expect (bad JSON, unknown architecture, no vocabulary…).
    #[error("invalid model file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// No known local model has this name.
    #[error("no local model is called `{name}` (known: {known})", known = crate::catalog::KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", "))]
    Unknown { name: String },
    /// The model exists but cannot do what was asked (a chat model asked for embeddings…).
    #[error("`{name}` is not a local {wanted} model")]
    WrongTask { name: String, wanted: &'static str },
    /// A known model whose files are not in the models directory.
    #[error("the local model `{name}` is not installed in {dir}: run `gateway models pull {name}`")]
    NotInstalled { name: &'static str, dir: PathBuf },
    /// The prompt leaves no room in the model's context window.
    #[error("the prompt has {tokens} tokens; the model's context window is {context}")]
    PromptTooLong { tokens: usize, context: usize },
    /// The tokenizer failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The tensor library failed.
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn invalid(path: &std::path::Path, reason: impl std::fmt::Display) -> ModelError {
        ModelError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Reads a whole file, telling a missing file apart from an unreadable one.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ModelError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}
