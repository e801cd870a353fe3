//! BERT-family sentence embedders: all-MiniLM-L6-v2 (mean pooling) and BGE small/base/large (CLS
//! pooling), loaded from a directory holding `config.json`, `tokenizer.json` and
//! `model.safetensors`.
//!
//! Texts are tokenised one by one without padding, sorted by length and cut into batches of
//! similar lengths, each padded only to its own longest member; the attention mask goes both into
//! the model and into mean pooling, so padding changes neither the attention nor the mean. The
//! package's `tokenizer.json` may preset padding and truncation (MiniLM's pads every input to
//! 128): both are replaced here (no padding, truncation at the model's position limit).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{ModelError, read_file};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's (`[CLS]`) vector: BGE.
    Cls,
    /// The mean over the real (unmasked) tokens: sentence-transformers' MiniLM.
    Mean,
}

/// At most this many sequences go through the model at once.
const MAX_BATCH: usize = 32;
/// At most this many tokens (padded) per batch: bounds the activations' memory and keeps a long
/// text from padding a batch of short ones.
const MAX_BATCH_TOKENS: usize = 4096;

/// A loaded BERT-family embedder. `embed` is synchronous and CPU-bound: call it from a blocking
/// thread.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    dim: usize,
    max_tokens: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("pooling", &self.pooling)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl BertEmbedder {
    /// Loads the model in `dir`. `pooling` overrides what the directory's sentence-transformers
    /// files (`modules.json`, `1_Pooling/config.json`) say; without either, CLS (BGE's).
    pub fn load(dir: &Path, pooling: Option<Pooling>) -> Result<BertEmbedder, ModelError> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read_file(&config_path)?)
            .map_err(|e| ModelError::invalid(&config_path, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(read_file(&tokenizer_path)?)
            .map_err(|e| ModelError::invalid(&tokenizer_path, e))?;
        let max_tokens = config.max_position_embeddings.min(512);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::invalid(&tokenizer_path, e))?;

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load_buffer(&read_file(&weights_path)?, &device)
            .and_then(linear_weights_transposed)
            .map_err(|e| ModelError::invalid(&weights_path, e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model =
            BertModel::load(vb, &config).map_err(|e| ModelError::invalid(&weights_path, e))?;

        let pooling = match pooling {
            Some(p) => p,
            None => detect_pooling(dir)?.unwrap_or(Pooling::Cls),
        };
        Ok(BertEmbedder {
            model,
            tokenizer,
            pooling,
            dim: config.hidden_size,
            max_tokens,
            device,
        })
    }

    /// The length of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The most tokens of one input the model sees (longer inputs are truncated).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Tokens of `text` as the model counts them, special tokens included, before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.len() + enc.get_overflowing().iter().map(|o| o.len()).sum::<usize>())
    }

    /// One L2-normalised vector per text, in the order given.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();

        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the batch's last member is its longest.
            let mut end = start + 1;
            while end < order.len()
                && end - start < MAX_BATCH
                && (end - start + 1) * ids[order[end]].len().max(1) <= MAX_BATCH_TOKENS
            {
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| ids[i]).collect();
            let vectors = self.embed_batch(&batch)?;
            for (&i, v) in order[start..end].iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    /// Runs one padded batch through the model and pools it.
    fn embed_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let n = batch.len();
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;

        let pooled = match self.pooling {
            Pooling::Cls => hidden.i((.., 0))?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1f32, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let norms = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        Ok(pooled.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

/// Every linear layer's `[out, in]` weight, stored transposed in memory but still shaped
/// `[out, in]` (a strided view). A linear layer multiplies by the weight's transpose, which is
/// then contiguous, so the GEMM reads it without repacking: at a question's few tokens that
/// halves every layer's matmul time (x·Wᵀ for 8 × 384 · 384 × 1536: 250 → 110 µs on one core);
/// at batch sizes it changes little. Embedding tables keep their rows, as lookups want.
fn linear_weights_transposed(
    tensors: HashMap<String, Tensor>,
) -> candle_core::Result<HashMap<String, Tensor>> {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_dtype(DType::F32)?;
            let linear = t.rank() == 2 && name.ends_with(".weight") && !name.contains("embeddings");
            let t = if linear { t.t()?.contiguous()?.t()? } else { t };
            Ok((name, t))
        })
        .collect()
}

/// Reads the pooling from sentence-transformers' files when the directory has them.
fn detect_pooling(dir: &Path) -> Result<Option<Pooling>, ModelError> {
    let mut pooling_dir = dir.join("1_Pooling");
    let modules = dir.join("modules.json");
    if modules.is_file() {
        let v: serde_json::Value = serde_json::from_slice(&read_file(&modules)?)
            .map_err(|e| ModelError::invalid(&modules, e))?;
        let pooling_module = v.as_array().into_iter().flatten().find(|m| {
            m.get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.ends_with("Pooling"))
        });
        if let Some(p) = pooling_module
            .and_then(|m| m.get("path"))
            .and_then(|p| p.as_str())
        {
            pooling_dir = dir.join(p);
        }
    }
    let config = pooling_dir.join("config.json");
    if !config.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&read_file(&config)?)
        .map_err(|e| ModelError::invalid(&config, e))?;
    let on = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
    Ok(if on("pooling_mode_cls_token") {
        Some(Pooling::Cls)
    } else if on("pooling_mode_mean_tokens") {
        Some(Pooling::Mean)
    } else {
        None
    })
}
