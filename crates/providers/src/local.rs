//! The `local` provider: the built-in CPU models of `models`, served in the OpenAI shapes.
//!
//! No key and no network: the zero-key last resort of a fallback chain, and what a fresh gateway
//! answers with. The provider's `base_url` is the models directory. Inference is CPU-bound and
//! runs on blocking threads; a stream's generation stops when its consumer goes away.

use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use models::catalog::{self, Task};
use models::chat::{ChatModel, FinishReason as LocalFinish, GenerateParams};
use models::{Engine, ModelError};
use wire::openai::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, Embedding,
    EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage, FinishReason, ResponseMessage, Role,
    Usage,
};

use crate::error::{ErrorClass, ProviderError};
use crate::provider::{ChatOutput, ChunkStream, StreamItem};
use crate::spec::ProviderSpec;

/// Completion tokens when the request sets no maximum: a small model rambles.
const DEFAULT_MAX_TOKENS: usize = 512;
/// Chunks a stream may run ahead of its consumer.
const STREAM_BUFFER: usize = 64;

pub fn engine(spec: &ProviderSpec) -> Arc<Engine> {
    Engine::shared(std::path::Path::new(&spec.base_url))
}

/// The chat model a request for `model` runs on: the model itself when it is a local chat model,
/// else the default (a fresh gateway answers whatever model name a client sends).
fn chat_name(model: &str) -> &str {
    match catalog::find(model) {
        Some(k) if k.task == Task::Chat => k.name,
        _ => catalog::DEFAULT_CHAT,
    }
}

fn embed_name(model: &str) -> &str {
    match catalog::find(model) {
        Some(k) if matches!(k.task, Task::Embed(_)) => k.name,
        _ => catalog::DEFAULT_EMBED,
    }
}

fn model_error(provider: &str, e: ModelError) -> ProviderError {
    let class = match &e {
        // Not installed here: a fallback target elsewhere may serve the request.
        ModelError::NotInstalled { .. } | ModelError::Unknown { .. } => ErrorClass::NotFound,
        ModelError::WrongTask { .. } => ErrorClass::BadRequest,
        ModelError::PromptTooLong { .. } => ErrorClass::ContextLength,
        _ => ErrorClass::Server,
    };
    ProviderError::new(provider, class, e.to_string())
}

fn bad_request(provider: &str, m: &str) -> ProviderError {
    ProviderError::new(provider, ErrorClass::BadRequest, m)
}

/// What a request asks of the local chat model.
struct Job {
    messages: Vec<(String, String)>,
    params: GenerateParams,
}

fn job(provider: &str, req: &ChatRequest, context: usize) -> Result<Job, ProviderError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(bad_request(
            provider,
            "the local chat model does not support tools; route tool calls to another provider",
        ));
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad_request(
            provider,
            "the local chat model answers with n = 1 only",
        ));
    }
    let messages = req
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::Assistant => "assistant",
                // Tool results are shown as the user's words: the model has no tool role.
                _ => "user",
            };
            let text = m
                .content
                .as_ref()
                .map(|c| c.joined_text())
                .unwrap_or_default();
            (role.to_string(), text)
        })
        .collect();
    let max = req
        .max_completion_tokens
        .or(req.max_tokens)
        .map_or(DEFAULT_MAX_TOKENS, |m| m as usize)
        .min(context);
    Ok(Job {
        messages,
        params: GenerateParams {
            max_tokens: max,
            // Unset means greedy: the same question gets the same answer.
            temperature: req.temperature.unwrap_or(0.0),
            top_p: req.top_p,
            stop: req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
            seed: req
                .seed
                .map_or(GenerateParams::default().seed, |s| s as u64),
        },
    })
}

fn finish(f: LocalFinish) -> FinishReason {
    match f {
        LocalFinish::Stop => FinishReason::Stop,
        LocalFinish::Length => FinishReason::Length,
    }
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

async fn load_chat(
    spec: &ProviderSpec,
    model: &str,
) -> Result<(&'static str, Arc<ChatModel>), ProviderError> {
    let engine = engine(spec);
    let name = chat_name(model).to_string();
    let provider = spec.name.clone();
    tokio::task::spawn_blocking(move || engine.chat_model(&name))
        .await
        .map_err(|_| {
            ProviderError::new(&provider, ErrorClass::Server, "loading the model crashed")
        })?
        .map(|(k, m)| (k.name, m))
        .map_err(|e| model_error(&provider, e))
}

pub async fn chat(
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChatOutput, ProviderError> {
    let (name, chat) = load_chat(spec, model).await?;
    let job = job(&spec.name, req, chat.context())?;
    let provider = spec.name.clone();
    let generation = tokio::task::spawn_blocking(move || {
        let messages: Vec<(&str, &str)> = job
            .messages
            .iter()
            .map(|(r, c)| (r.as_str(), c.as_str()))
            .collect();
        chat.generate(&messages, &job.params, &mut |_| true)
    })
    .await
    .map_err(|_| ProviderError::new(&provider, ErrorClass::Server, "the local model crashed"))?
    .map_err(|e| model_error(&provider, e))?;
    Ok(ChatOutput::Completion(ChatCompletion {
        id: completion_id(),
        object: "chat.completion".into(),
        created: wire::unix_now(),
        model: name.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: Some(generation.text),
                refusal: None,
                tool_calls: None,
            },
            finish_reason: Some(finish(generation.finish_reason)),
            logprobs: None,
        }],
        usage: Some(Usage::new(
            generation.prompt_tokens as u64,
            generation.completion_tokens as u64,
            None,
        )),
        system_fingerprint: None,
    }))
}

pub async fn chat_stream(
    spec: &ProviderSpec,
    req: &ChatRequest,
    model: &str,
) -> Result<ChunkStream, ProviderError> {
    let (name, chat) = load_chat(spec, model).await?;
    let job = job(&spec.name, req, chat.context())?;
    let provider = spec.name.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatChunk, ProviderError>>(STREAM_BUFFER);
    let id = completion_id();
    let created = wire::unix_now();
    let chunk =
        move |delta: Delta, finish_reason: Option<FinishReason>, usage: Option<Usage>| ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: name.to_string(),
            choices: if usage.is_some() {
                Vec::new()
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason,
                    logprobs: None,
                }]
            },
            usage,
            system_fingerprint: None,
        };
    tokio::task::spawn_blocking(move || {
        let messages: Vec<(&str, &str)> = job
            .messages
            .iter()
            .map(|(r, c)| (r.as_str(), c.as_str()))
            .collect();
        let first = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Delta::default()
        };
        if tx.blocking_send(Ok(chunk(first, None, None))).is_err() {
            return;
        }
        // A closed channel means the consumer left: returning false stops the generation.
        let mut on_token = |piece: &str| {
            let delta = Delta {
                content: Some(piece.to_string()),
                ..Delta::default()
            };
            tx.blocking_send(Ok(chunk(delta, None, None))).is_ok()
        };
        match chat.generate(&messages, &job.params, &mut on_token) {
            Ok(g) => {
                let usage = Usage::new(g.prompt_tokens as u64, g.completion_tokens as u64, None);
                let _ = tx.blocking_send(Ok(chunk(
                    Delta::default(),
                    Some(finish(g.finish_reason)),
                    None,
                )));
                let _ = tx.blocking_send(Ok(chunk(Delta::default(), None, Some(usage))));
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(model_error(&provider, e)));
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|item| item.map(StreamItem::Chunk));
    Ok(Box::pin(stream))
}

pub async fn embeddings(
    spec: &ProviderSpec,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ProviderError> {
    let provider = spec.name.clone();
    let texts: Vec<String> = req
        .input
        .texts()
        .ok_or_else(|| {
            bad_request(
                &provider,
                "the local embedders take text input, not token arrays",
            )
        })?
        .into_iter()
        .map(str::to_string)
        .collect();
    if texts.is_empty() {
        return Err(bad_request(&provider, "input must not be empty"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_request(
                &provider,
                &format!("encoding_format {other:?} is not one of float, base64"),
            ));
        }
    };
    let engine = engine(spec);
    let name = embed_name(&req.model).to_string();
    let dimensions = req.dimensions;
    let p = provider.clone();
    let (model, vectors, tokens) = tokio::task::spawn_blocking(move || {
        let (known, embedder) = engine.embedder(&name).map_err(|e| model_error(&p, e))?;
        if let Some(d) = dimensions
            && d as usize != embedder.dim()
        {
            return Err(bad_request(
                &p,
                &format!(
                    "{} makes {}-d vectors; dimensions {d} is not supported",
                    known.name,
                    embedder.dim()
                ),
            ));
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs).map_err(|e| model_error(&p, e))?;
        let tokens: usize = refs
            .iter()
            .map(|t| {
                embedder
                    .count_tokens(t)
                    .unwrap_or(0)
                    .min(embedder.max_tokens())
            })
            .sum();
        Ok((known.name, vectors, tokens))
    })
    .await
    .map_err(|_| {
        ProviderError::new(&provider, ErrorClass::Server, "the local embedder crashed")
    })??;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: i as u32,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::Value::from(v)
            },
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: EmbeddingsUsage {
            prompt_tokens: tokens as u64,
            total_tokens: tokens as u64,
        },
    })
}

/// Healthy when at least one local model is installed.
pub async fn health(spec: &ProviderSpec) -> Result<(), ProviderError> {
    let engine = engine(spec);
    if engine.installed().is_empty() {
        return Err(ProviderError::new(
            &spec.name,
            ErrorClass::NotFound,
            format!(
                "no local model is installed in {}: run `gateway models pull {}`",
                engine.dir().display(),
                catalog::DEFAULT_CHAT
            ),
        ));
    }
    Ok(())
}
