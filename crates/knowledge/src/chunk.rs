//! Chunking. Placeholder until the structure-aware chunker lands: fixed word windows.

use crate::TokenCounter;
use crate::extract::Extracted;

#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    pub size_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        ChunkSettings {
            size_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ordinal: u32,
    pub heading: Option<String>,
    pub text: String,
    pub tokens: usize,
}

pub fn chunk(doc: &Extracted, settings: &ChunkSettings, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let mut out = Vec::new();
    let step = settings
        .size_tokens
        .saturating_sub(settings.overlap_tokens)
        .max(1);
    for s in &doc.sections {
        let words: Vec<&str> = s.text.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let end = (i + settings.size_tokens.max(1)).min(words.len());
            let text = words[i..end].join(" ");
            out.push(Chunk {
                ordinal: out.len() as u32,
                heading: s.heading.clone(),
                tokens: counter.count(&text),
                text,
            });
            if end == words.len() {
                break;
            }
            i += step;
        }
    }
    out
}
