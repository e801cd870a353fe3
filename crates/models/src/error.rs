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
