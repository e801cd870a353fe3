//! `models`: local CPU inference with candle.
//!
//! - [`embed`]: BERT-family sentence embedders (MiniLM, BGE) loaded from a directory with
//!   `config.json`, `tokenizer.json` and `model.safetensors`; CLS or mean pooling; L2-normalised.
//! - [`chat`]: a llama-architecture GGUF chat model (SmolLM2) with ChatML prompts and streaming.
//! - [`gguf_tokenizer`]: the byte-level BPE tokenizer rebuilt from a GGUF file's metadata.
//! - [`catalog`]: the models known by name, where they are pulled from, how they lie on disk.
//! - [`engine`]: one models directory's models, loaded on first use (the `local` provider).
//! - [`error`]: [`ModelError`], the one error type.
//!
//! Weights are read from disk with safe reads (no mmap); nothing is fetched at run time.

pub mod catalog;
pub mod embed;
pub mod engine;
pub mod error;

pub use engine::Engine;
pub use error::ModelError;
pub mod chat;
pub mod gguf_tokenizer;
