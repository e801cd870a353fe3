//! The tokenizer of a GGUF chat model, built from the file's own metadata.
//!
//! A GGUF of a GPT-2-style model carries its byte-level BPE vocabulary (`tokenizer.ggml.tokens`),
//! merges (`tokenizer.ggml.merges`, "left right" strings), token types (`tokenizer.ggml.token_type`,
//! 3 = control) and the pre-tokenizer's name (`tokenizer.ggml.pre`). We rebuild the
//! Hugging Face tokenizer from those: BPE over bytes mapped to printable characters, split first
//! into single digits (SmolLM's `smollm` pre-tokenizer) and then by the GPT-2 regex, with no
//! prefix space (candle's own conversion adds one and so mis-encodes the first word), and every
//! control token registered as special so `<|im_start|>` stays one token.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::ModelError;

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`…).
const TOKEN_TYPE_CONTROL: i32 = 3;

/// Builds the tokenizer from `content`'s metadata (`path` only names the file in errors).
pub fn from_gguf(content: &Content, path: &Path) -> Result<Tokenizer, ModelError> {
    let md = &content.metadata;
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        let v = md
            .get(key)
            .ok_or_else(|| ModelError::invalid(path, format!("no {key} in the metadata")))?;
        let items = v.to_vec().map_err(|e| ModelError::invalid(path, e))?;
        items
            .iter()
            .map(|i| {
                i.to_string()
                    .cloned()
                    .map_err(|e| ModelError::invalid(path, e))
            })
            .collect()
    };
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if model != Some("gpt2") {
        return Err(ModelError::invalid(
            path,
            format!("tokenizer model {model:?} is not supported (only gpt2 byte-level BPE)"),
        ));
    }
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| ModelError::invalid(path, e))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::invalid(path, e))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let byte_level = ByteLevel::new(false, true, true);
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        // llama.cpp's `smollm` (like `starcoder`, `refact`): single digits, then GPT-2's regex.
        Some("smollm" | "starcoder" | "refact") => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ]))
        }
        _ => byte_level.into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(byte_level));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter())
        .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| ModelError::invalid(path, e))?;
    Ok(tokenizer)
}

/// A metadata string, if present.
pub fn metadata_string<'a>(content: &'a Content, key: &str) -> Option<&'a str> {
    content
        .metadata
        .get(key)
        .and_then(|v: &Value| v.to_string().ok())
        .map(String::as_str)
}
