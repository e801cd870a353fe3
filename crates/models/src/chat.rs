//! A small local chat model: a llama-architecture GGUF (SmolLM2-135M-Instruct, Q4_1) run with
//! candle-transformers' quantized llama, prompted in ChatML.
//!
//! One generation runs at a time per model (the KV cache lives in the model, behind a mutex);
//! others wait. `generate` is synchronous and CPU-bound: call it from a blocking thread.

use std::path::Path;
use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::Tokenizer;

use crate::error::{ModelError, read_file};
use crate::gguf_tokenizer;

/// How to sample a completion.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// 0 is greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling; `None` or 1 samples from all tokens.
    pub top_p: Option<f64>,
    /// Strings that end the completion (not included in it).
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: None,
            stop: Vec::new(),
            seed: 299_792_458,
        }
    }
}

/// Why a generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, a stop string appeared, or the caller stopped it.
    Stop,
    /// `max_tokens` (or the context window) was reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

/// A loaded GGUF chat model with its tokenizer.
pub struct ChatModel {
    weights: Mutex<ModelWeights>,
    tokenizer: Tokenizer,
    /// Tokens that end the assistant's turn (`<|im_end|>`, the EOS token).
    end_ids: Vec<u32>,
    context: usize,
    device: Device,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Quantisations whose dot products candle runs without SIMD on x86: a Q4_1 SmolLM2 decodes at
/// a third of the speed it reaches as Q8_0, and its prompt takes a second per 30 tokens.
fn slow_on_cpu(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Rewrites the slow quantisations as Q8_0 (which keeps 4- and 5-bit values almost exactly)
/// into an in-memory GGUF; a file without them is returned as it was read.
fn requantize(
    content: gguf_file::Content,
    mut reader: std::io::Cursor<Vec<u8>>,
    device: &Device,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    let slow = content
        .tensor_infos
        .values()
        .any(|t| slow_on_cpu(t.ggml_dtype));
    if !slow {
        return Ok((content, reader));
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = content.tensor(&mut reader, name, device)?;
        let fits = t
            .shape()
            .dims()
            .last()
            .is_some_and(|d| d % GgmlDType::Q8_0.block_size() == 0);
        let t = if slow_on_cpu(t.dtype()) && fits {
            QTensor::quantize(&t.dequantize(device)?, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.as_str(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensor_refs)?;
    out.set_position(0);
    let content = gguf_file::Content::read(&mut out)?;
    Ok((content, out))
}

impl ChatModel {
    /// Reads the whole GGUF file into memory (no mmap) and builds the model and its tokenizer.
    pub fn load(path: &Path) -> Result<ChatModel, ModelError> {
        let bytes = read_file(path)?;
        let mut reader = std::io::Cursor::new(bytes);
        let content =
            gguf_file::Content::read(&mut reader).map_err(|e| ModelError::invalid(path, e))?;
        let arch = gguf_tokenizer::metadata_string(&content, "general.architecture");
        if arch != Some("llama") {
            return Err(ModelError::invalid(
                path,
                format!("architecture {arch:?} is not supported (only llama)"),
            ));
        }
        let tokenizer = gguf_tokenizer::from_gguf(&content, path)?;
        let context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(2048, |c| c as usize);
        let mut end_ids = Vec::new();
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_to_id(t) {
                end_ids.push(id);
            }
        }
        if let Some(eos) = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            && !end_ids.contains(&eos)
        {
            end_ids.push(eos);
        }
        let device = Device::Cpu;
        let (content, mut reader) =
            requantize(content, reader, &device).map_err(|e| ModelError::invalid(path, e))?;
        let weights = ModelWeights::from_gguf(content, &mut reader, &device)
            .map_err(|e| ModelError::invalid(path, e))?;
        Ok(ChatModel {
            weights: Mutex::new(weights),
            tokenizer,
            end_ids,
            context,
            device,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The context window in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Token ids of `text`, special tokens (`<|im_start|>`…) recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The ChatML prompt for `messages` (role, content), ending with the assistant's open turn.
    pub fn prompt(messages: &[(&str, &str)]) -> String {
        let mut p = String::new();
        for (role, content) in messages {
            p.push_str("<|im_start|>");
            p.push_str(role);
            p.push('\n');
            p.push_str(content);
            p.push_str("<|im_end|>\n");
        }
        p.push_str("<|im_start|>assistant\n");
        p
    }

    /// Generates the assistant's answer to `messages`, calling `on_token` with each new piece of
    /// text as it is decoded; `on_token` returning false stops the generation (finish "stop").
    pub fn generate(
        &self,
        messages: &[(&str, &str)],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, ModelError> {
        let prompt = self.encode(&Self::prompt(messages))?;
        let prompt_tokens = prompt.len();
        if prompt_tokens >= self.context {
            return Err(ModelError::PromptTooLong {
                tokens: prompt_tokens,
                context: self.context,
            });
        }
        let budget = params.max_tokens.min(self.context - prompt_tokens);
        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            match params.top_p {
                Some(p) if p < 1.0 => Sampling::TopP {
                    p,
                    temperature: params.temperature,
                },
                _ => Sampling::All {
                    temperature: params.temperature,
                },
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);

        // A poisoned lock only means an earlier generation panicked mid-way; the cache is
        // cleared below, so the weights are still good.
        let mut weights = self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        weights.clear_kv_cache();

        let mut out = Output::new(&params.stop);
        let mut generated: Vec<u32> = Vec::new();
        let mut finish = FinishReason::Length;
        let mut input = Tensor::new(prompt.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut pos = 0;
        while generated.len() < budget {
            let logits = weights.forward(&input, pos)?.squeeze(0)?;
            pos += input.dim(1)?;
            let next = sampler.sample(&logits)?;
            if self.end_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            let text = self.decode(&generated)?;
            match out.advance(&text, on_token) {
                Flow::Continue => {}
                Flow::Stop => {
                    finish = FinishReason::Stop;
                    break;
                }
            }
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        weights.clear_kv_cache();
        drop(weights);
        let text = out.finish(on_token);
        Ok(Generation {
            text,
            prompt_tokens,
            completion_tokens: generated.len(),
            finish_reason: finish,
        })
    }
}

enum Flow {
    Continue,
    Stop,
}

/// The text handed out so far: holds back an incomplete UTF-8 tail and anything that could be
/// the start of a stop string until the next token settles it.
struct Output<'a> {
    stop: &'a [String],
    /// Bytes of `text` already given to `on_token`.
    sent: usize,
    text: String,
    /// `on_token` said stop: nothing more is handed out.
    closed: bool,
}

impl<'a> Output<'a> {
    fn new(stop: &'a [String]) -> Self {
        Output {
            stop,
            sent: 0,
            text: String::new(),
            closed: false,
        }
    }

    fn advance(&mut self, decoded: &str, on_token: &mut dyn FnMut(&str) -> bool) -> Flow {
        self.text.clear();
        self.text.push_str(decoded);
        let stops = || self.stop.iter().filter(|s| !s.is_empty());
        if let Some(cut) = stops().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(cut);
            self.flush(cut, on_token);
            return Flow::Stop;
        }
        // An incomplete multi-byte character decodes as U+FFFD at the end: wait for the rest.
        let mut safe = self.text.trim_end_matches('\u{FFFD}').len();
        for s in stops() {
            if let Some(k) = (1..s.len())
                .rev()
                .find(|&k| s.is_char_boundary(k) && self.text[..safe].ends_with(&s[..k]))
            {
                safe -= k;
            }
        }
        self.flush(safe, on_token);
        if self.closed {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Hands out text up to byte `upto`.
    fn flush(&mut self, upto: usize, on_token: &mut dyn FnMut(&str) -> bool) {
        if self.closed || upto <= self.sent || !self.text.is_char_boundary(upto) {
            return;
        }
        let piece = &self.text[self.sent..upto];
        self.sent = upto;
        if !on_token(piece) {
            self.closed = true;
        }
    }

    /// Ends the generation, handing out what was held back; returns the whole text handed out.
    fn finish(mut self, on_token: &mut dyn FnMut(&str) -> bool) -> String {
        let end = self.text.len();
        self.flush(end, on_token);
        self.text.truncate(self.sent);
        self.text
    }
}
