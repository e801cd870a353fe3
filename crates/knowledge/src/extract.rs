//! Text out of an uploaded file. Placeholder until the per-format extractors land: plain text only.

use std::time::Duration;

/// Hard limits on what parsing one untrusted upload may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_decompressed: u64,
    pub max_zip_entries: usize,
    pub max_zip_ratio: u64,
    pub max_pdf_pages: usize,
    pub max_pdf_objects: usize,
    pub max_depth: usize,
    pub deadline: Duration,
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 5 * 1024 * 1024,
            max_decompressed: 50 * 1024 * 1024,
            max_zip_entries: 2_000,
            max_zip_ratio: 100,
            max_pdf_pages: 2_000,
            max_pdf_objects: 200_000,
            max_depth: 64,
            deadline: Duration::from_secs(30),
            max_memory: 1024 * 1024 * 1024,
        }
    }
}

/// A document as text: sections in reading order, each under its heading (if any); paragraphs
/// inside a section's text are separated by blank lines.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub heading: Option<String>,
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtractError {
    #[error(
        "unsupported file type {0:?}: upload pdf, txt, md, json, csv, html, xml, yaml, toml or docx"
    )]
    Unsupported(String),
    #[error("file is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
}

pub fn extract(name: &str, bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    if bytes.len() > limits.max_bytes {
        return Err(ExtractError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ExtractError::Invalid("file is not UTF-8 text".into()))?;
            Ok(Extracted {
                sections: vec![Section {
                    heading: None,
                    text: text.to_string(),
                }],
            })
        }
        _ => Err(ExtractError::Unsupported(ext)),
    }
}
