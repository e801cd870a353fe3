//! Moderation: a classifier says SAFE or UNSAFE (with categories) about a prompt or an answer.
//!
//! Classifiers: built-in word rules (no key, no network), OpenAI's moderation API through a
//! configured provider, or any configured chat model asked with a Llama-Guard-style prompt.
//! A classifier that fails or times out is [`ModerationError`]: the caller lets the request on
//! (counted on [`crate::state::StageCounters`], logged) unless the API is `fail_closed`.
//! Streams are checked in windows as they flow ([`watch_stream`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::stages::{Classifier, ModerationSettings};
use bytes::Bytes;
use futures::StreamExt;
use providers::{ChunkStream, ErrorClass, ProviderError, StreamItem};
use router::Health;
use serde_json::{Value, json};
use wire::openai::{ChatRequest, Content, ContentPart, Message, Role};

use crate::error::GatewayError;
use crate::state::{Gateway, Snapshot};

/// What a classifier said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Categories at or above the threshold (among those configured).
    pub categories: Vec<String>,
    /// Every category's score as the classifier gave it (1.0/0.0 for classifiers without).
    pub scores: Vec<(String, f64)>,
}

impl Verdict {
    pub fn unsafe_(&self) -> bool {
        !self.categories.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("the classifier did not answer within {0} ms")]
    Timeout(u64),
    #[error("the classifier failed: {0}")]
    Failed(String),
}

/// OpenAI's moderation categories, in its order.
pub const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// The rules classifier's phrases (lower case) and the category each marks.
const RULES: &[(&str, &str)] = &[
    ("kill you", "violence"),
    ("i will hurt you", "violence"),
    ("shoot them all", "violence"),
    ("build a bomb", "illicit/violent"),
    ("make a bomb", "illicit/violent"),
    ("make meth", "illicit"),
    ("buy stolen credit cards", "illicit"),
    ("kill myself", "self-harm/intent"),
    ("how to self-harm", "self-harm/instructions"),
    ("subhuman vermin", "hate"),
    ("you are worthless trash", "harassment"),
    ("i know where you live", "harassment/threatening"),
];

/// The LLM classifier's prompt (Llama Guard 3's taxonomy); `{{content}}` is the text.
pub const LLM_PROMPT: &str = "Task: Check if there is unsafe content in the message below according to our safety policy with the categories below.

<BEGIN UNSAFE CONTENT CATEGORIES>
S1: Violent Crimes.
S2: Non-Violent Crimes.
S3: Sex-Related Crimes.
S4: Child Sexual Exploitation.
S5: Defamation.
S6: Specialized Advice.
S7: Privacy.
S8: Intellectual Property.
S9: Indiscriminate Weapons.
S10: Hate.
S11: Suicide & Self-Harm.
S12: Sexual Content.
S13: Elections.
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>
{{content}}
<END CONVERSATION>

Provide your safety assessment for the message above:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories.";

/// Llama Guard's codes as OpenAI-style category names.
fn llama_guard_category(code: &str) -> Option<&'static str> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "S1" => "violence",
        "S2" => "illicit",
        "S3" => "sexual",
        "S4" => "sexual/minors",
        "S5" => "defamation",
        "S6" => "specialized_advice",
        "S7" => "privacy",
        "S8" => "intellectual_property",
        "S9" => "illicit/violent",
        "S10" => "hate",
        "S11" => "self-harm",
        "S12" => "sexual",
        "S13" => "elections",
        _ => return None,
    })
}

/// Parses a Llama-Guard-style answer: `safe`, or `unsafe` then `S1,S10`.
pub fn parse_guard_answer(answer: &str) -> Result<Vec<String>, ModerationError> {
    let mut lines = answer.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next().map(str::to_ascii_lowercase).as_deref() {
        Some("safe") => Ok(vec![]),
        Some("unsafe") => {
            let mut out: Vec<String> = lines
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(llama_guard_category)
                .map(str::to_string)
                .collect();
            out.dedup();
            if out.is_empty() {
                out.push("unsafe".into());
            }
            Ok(out)
        }
        _ => Err(ModerationError::Failed(
            "the classifier model answered neither 'safe' nor 'unsafe'".into(),
        )),
    }
}

/// The rules classifier: a category scores 1.0 when one of its phrases occurs.
pub fn rules(text: &str) -> Vec<(String, f64)> {
    let lower = text.to_lowercase();
    let mut out: Vec<(String, f64)> = Vec::new();
    for (phrase, cat) in RULES {
        if lower.contains(phrase) && !out.iter().any(|(c, _)| c == cat) {
            out.push(((*cat).to_string(), 1.0));
        }
    }
    out
}

/// The categories that count: configured ones (a parent names its subcategories too), at or
/// above the threshold.
fn counted(settings: &ModerationSettings, scores: &[(String, f64)]) -> Vec<String> {
    scores
        .iter()
        .filter(|(_, s)| *s >= settings.threshold)
        .filter(|(c, _)| {
            settings.categories.is_empty()
                || settings
                    .categories
                    .iter()
                    .any(|want| c == want || c.starts_with(&format!("{want}/")))
        })
        .map(|(c, _)| c.clone())
        .collect()
}

/// Classifies `text` with the API's classifier, within its timeout.
pub async fn classify(
    snap: &Snapshot,
    health: &Health,
    settings: &ModerationSettings,
    text: &str,
) -> Result<Verdict, ModerationError> {
    let timeout = Duration::from_millis(settings.timeout_ms);
    let scores = tokio::time::timeout(timeout, scores(snap, health, settings, text))
        .await
        .map_err(|_| ModerationError::Timeout(settings.timeout_ms))??;
    Ok(Verdict {
        categories: counted(settings, &scores),
        scores,
    })
}

async fn scores(
    snap: &Snapshot,
    health: &Health,
    settings: &ModerationSettings,
    text: &str,
) -> Result<Vec<(String, f64)>, ModerationError> {
    match &settings.classifier {
        Classifier::Rules => Ok(rules(text)),
        Classifier::Embedding { model } => embedding_scores(snap, health, model, text).await,
        Classifier::Openai { provider, model } => {
            let p = snap.providers.get(provider).ok_or_else(|| {
                ModerationError::Failed(format!("provider '{provider}' is not configured"))
            })?;
            let mut body = json!({"input": text});
            if let Some(m) = model {
                body["model"] = Value::String(m.clone());
            }
            let bytes = p
                .moderations(
                    body.to_string().into_bytes(),
                    Duration::from_millis(settings.timeout_ms),
                )
                .await
                .map_err(|e| ModerationError::Failed(e.message))?;
            parse_openai(&bytes)
        }
        Classifier::Llm { model, prompt } => {
            let prompt = prompt.as_deref().unwrap_or(LLM_PROMPT);
            let req = ChatRequest {
                model: model.clone(),
                messages: vec![Message::text(
                    Role::User,
                    prompt.replace("{{content}}", text),
                )],
                max_tokens: Some(20),
                temperature: Some(0.0),
                ..Default::default()
            };
            let ask = crate::llm::Ask::chat(&req, &Default::default())
                .map_err(|e| ModerationError::Failed(e.message()))?;
            let served = crate::llm::complete(snap, health, &req, &ask)
                .await
                .map_err(|e| ModerationError::Failed(e.message()))?;
            let completion = served
                .value
                .into_completion(&served.provider)
                .map_err(|e| ModerationError::Failed(e.message))?;
            let answer = completion
                .choices
                .first()
                .and_then(|c| c.message.content.clone())
                .unwrap_or_default();
            Ok(parse_guard_answer(&answer)?
                .into_iter()
                .map(|c| (c, 1.0))
                .collect())
        }
    }
}

/// What the `embedding` classifier compares a text with: a few plain examples per category.
/// With MiniLM, texts of a category score 0.58–0.92 against them and everyday texts (recipes,
/// passwords, poems, "how to kill a python process") 0.09–0.35, so the default threshold of
/// 0.5 separates them.
const EXAMPLES: [(&str, &[&str]); 7] = [
    (
        "violence",
        &[
            "how to hurt someone badly",
            "I want to kill people",
            "how to attack a crowd of people",
        ],
    ),
    (
        "illicit/violent",
        &[
            "how to build a bomb",
            "instructions for making explosives at home",
            "how to make a weapon to kill someone",
        ],
    ),
    (
        "illicit",
        &[
            "how to make methamphetamine",
            "how to buy illegal drugs",
            "how to steal a car without getting caught",
            "how to launder money",
        ],
    ),
    (
        "self-harm",
        &[
            "I want to kill myself",
            "ways to end my life",
            "how to hurt myself",
        ],
    ),
    (
        "hate",
        &[
            "people of that race are inferior",
            "all immigrants should be removed from the country",
        ],
    ),
    (
        "harassment/threatening",
        &[
            "I will find you and hurt you",
            "you are worthless and everyone hates you",
        ],
    ),
    ("sexual/minors", &["sexual content involving children"]),
];

/// A text is embedded in pieces of about this many characters (an embedder's window is short),
/// at most [`MAX_PIECES`] of them: a category's score is its best piece's.
const PIECE_CHARS: usize = 400;
const MAX_PIECES: usize = 32;

/// The examples' vectors per embedding model, embedded once.
type ExampleVectors = Arc<Vec<(&'static str, Vec<f32>)>>;
static EXAMPLE_VECTORS: std::sync::LazyLock<
    Mutex<std::collections::HashMap<String, ExampleVectors>>,
> = std::sync::LazyLock::new(Default::default);

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// `text` in pieces of about [`PIECE_CHARS`] characters, cut at whitespace.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    for word in text.split_whitespace() {
        if !piece.is_empty() && piece.len() + word.len() >= PIECE_CHARS {
            out.push(std::mem::take(&mut piece));
            if out.len() == MAX_PIECES {
                return out;
            }
        }
        if !piece.is_empty() {
            piece.push(' ');
        }
        piece.push_str(word);
    }
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

async fn embedding_scores(
    snap: &Snapshot,
    health: &Health,
    model: &str,
    text: &str,
) -> Result<Vec<(String, f64)>, ModerationError> {
    let cached = EXAMPLE_VECTORS
        .lock()
        .ok()
        .and_then(|m| m.get(model).cloned());
    let examples = match cached {
        Some(e) => e,
        None => {
            let texts: Vec<String> = EXAMPLES
                .iter()
                .flat_map(|(_, xs)| xs.iter().map(|x| (*x).to_string()))
                .collect();
            let vectors = crate::rag::embed_texts(snap, health, model, texts)
                .await
                .map_err(ModerationError::Failed)?;
            let cats = EXAMPLES
                .iter()
                .flat_map(|(c, xs)| std::iter::repeat_n(*c, xs.len()));
            let e: ExampleVectors = Arc::new(cats.zip(vectors).collect());
            if let Ok(mut m) = EXAMPLE_VECTORS.lock() {
                m.insert(model.to_string(), e.clone());
            }
            e
        }
    };
    let pieces = pieces(text);
    if pieces.is_empty() {
        return Ok(Vec::new());
    }
    let vectors = crate::rag::embed_texts(snap, health, model, pieces)
        .await
        .map_err(ModerationError::Failed)?;
    let mut scores: Vec<(String, f64)> = Vec::new();
    for (cat, example) in examples.iter() {
        let best = vectors
            .iter()
            .map(|v| cosine(v, example))
            .fold(0.0f64, f64::max);
        match scores.iter_mut().find(|(c, _)| c == cat) {
            Some((_, s)) => *s = s.max(best),
            None => scores.push(((*cat).to_string(), best)),
        }
    }
    Ok(scores)
}

/// Scores from OpenAI's moderation object (the first result).
fn parse_openai(bytes: &[u8]) -> Result<Vec<(String, f64)>, ModerationError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|_| ModerationError::Failed("unreadable moderation answer".into()))?;
    let scores = v["results"][0]["category_scores"]
        .as_object()
        .ok_or_else(|| ModerationError::Failed("moderation answer without scores".into()))?;
    Ok(scores
        .iter()
        .map(|(k, s)| (k.clone(), s.as_f64().unwrap_or(0.0)))
        .collect())
}

/// One result of OpenAI's moderation object: every OpenAI category (and any other the
/// classifier reported), `flagged` when a counted category is present.
pub fn openai_result(v: &Verdict) -> Value {
    let mut cats = serde_json::Map::new();
    let mut scores = serde_json::Map::new();
    let mut types = serde_json::Map::new();
    let names = CATEGORIES
        .iter()
        .map(|c| (*c).to_string())
        .chain(v.scores.iter().map(|(c, _)| c.clone()))
        .chain(v.categories.iter().cloned());
    for c in names {
        if cats.contains_key(&c) {
            continue;
        }
        let score = v
            .scores
            .iter()
            .find(|(n, _)| *n == c)
            .map_or(0.0, |(_, s)| *s);
        cats.insert(c.clone(), Value::Bool(v.categories.contains(&c)));
        scores.insert(c.clone(), json!(score));
        types.insert(c, json!(["text"]));
    }
    json!({
        "flagged": v.unsafe_(),
        "categories": cats,
        "category_scores": scores,
        "category_applied_input_types": types,
    })
}

/// The text of a chat request's messages, one per line.
pub fn prompt_text(req: &ChatRequest) -> String {
    let mut out = String::new();
    for m in &req.messages {
        match &m.content {
            Some(Content::Text(t)) => out.push_str(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    if let ContentPart::Text { text } = p {
                        out.push_str(text);
                    }
                }
            }
            None => {}
        }
        out.push('\n');
    }
    out
}

/// The `x-gateway-moderation` value of a flagged request.
pub fn flag_value(categories: &[String]) -> String {
    format!("flagged; categories={}", categories.join(","))
}

/// The request log's `moderation` column: `blocked; categories=…` when moderation stopped the
/// request or its stream, else `flagged; categories=…`, else nothing.
pub fn verdict_value(flagged: &[String], blocked: &[String]) -> Option<String> {
    if !blocked.is_empty() {
        return Some(format!("blocked; categories={}", blocked.join(",")));
    }
    (!flagged.is_empty()).then(|| flag_value(flagged))
}

/// Adds `categories` to `into`, each once, in order of first sight.
pub fn merge(into: &mut Vec<String>, categories: impl IntoIterator<Item = String>) {
    for c in categories {
        if !into.contains(&c) {
            into.push(c);
        }
    }
}

/// A classifier failure: counted and logged; the caller decides between on and 503.
pub fn failed(gw: &Gateway, stage: &'static str, e: &ModerationError) {
    gw.counters.note_moderation_failure();
    tracing::warn!(target: "gateway::hooks", stage, error = %e, "moderation classifier failed");
}

/// Output is checked every this many characters of a stream, and at its end.
pub const WINDOW: usize = 512;
/// Characters of the previous window re-checked with the next (a phrase across the edge).
const OVERLAP: usize = 64;

/// What output moderation found in a stream's windows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamVerdict {
    /// Categories of flagged windows (flag mode).
    pub flagged: Vec<String>,
    /// Categories of the window that stopped the stream (block mode).
    pub blocked: Vec<String>,
    /// The error code the stream was stopped with (`content_policy_violation`, or
    /// `moderation_unavailable` when a fail-closed classifier failed).
    pub stopped: Option<&'static str>,
}

/// Shared between the watched stream and its end hook (the flag comment, the post-hook's
/// metadata and the request log's row).
pub type StreamFlags = Arc<Mutex<StreamVerdict>>;

fn stopped(message: String) -> ProviderError {
    let mut e = ProviderError::new("gateway", ErrorClass::BadRequest, message);
    e.code = Some("content_policy_violation".into());
    e
}

fn delta_text(item: &StreamItem) -> String {
    match item {
        StreamItem::Chunk(c) => c
            .choices
            .iter()
            .filter_map(|c| c.delta.content.as_deref())
            .collect(),
        StreamItem::Raw {
            json, has_choices, ..
        } => {
            if !has_choices {
                return String::new();
            }
            let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
            v["choices"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["delta"]["content"].as_str())
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}

/// Watches a stream's text: every [`WINDOW`] characters and at the end the classifier looks
/// at what arrived since the last check (with a little overlap). Block mode ends the stream
/// with a `content_policy_violation` error event; flag mode records the categories in `flags`
/// (the end hook writes them as a final SSE comment). Either way `flags` has the verdict for
/// the request log. The first chunk's text counts too.
pub fn watch_stream(
    gw: Arc<Gateway>,
    snap: Arc<Snapshot>,
    settings: ModerationSettings,
    first: &StreamItem,
    rest: ChunkStream,
    flags: StreamFlags,
) -> ChunkStream {
    let seed = delta_text(first);
    Box::pin(async_stream::stream! {
        let mut rest = rest;
        let mut pending = seed;
        let mut carry = String::new();
        let block = settings.mode == access::stages::ModerationMode::Block;
        loop {
            let next = rest.next().await;
            let end = next.is_none();
            if let Some(Ok(item)) = &next {
                pending.push_str(&delta_text(item));
            }
            if (pending.len() >= WINDOW || (end && !pending.is_empty()))
                && let Some(e) = check(&gw, &snap, &settings, &carry, &pending, block, &flags).await
            {
                if let Some(Ok(item)) = next {
                    // This chunk's text is what tripped the check: it is not delivered.
                    drop(item);
                }
                yield Err(e);
                return;
            }
            if pending.len() >= WINDOW || end {
                carry = overlap(&pending);
                pending.clear();
            }
            match next {
                Some(item) => yield item,
                None => return,
            }
        }
    })
}

/// The last [`OVERLAP`] characters of a checked window, checked again with the next one.
fn overlap(window: &str) -> String {
    let tail = window
        .char_indices()
        .rev()
        .nth(OVERLAP.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    window[tail..].to_string()
}

async fn check(
    gw: &Gateway,
    snap: &Snapshot,
    settings: &ModerationSettings,
    carry: &str,
    pending: &str,
    block: bool,
    flags: &StreamFlags,
) -> Option<ProviderError> {
    let text = format!("{carry}{pending}");
    match classify(snap, &gw.health, settings, &text).await {
        Ok(v) if v.unsafe_() => {
            tracing::info!(target: "gateway::hooks", stage = "moderation_output",
                categories = %v.categories.join(","), block, "unsafe output");
            let message = block.then(|| {
                format!(
                    "The answer was stopped by the gateway's output moderation (categories: {}).",
                    v.categories.join(",")
                )
            });
            if let Ok(mut f) = flags.lock() {
                if block {
                    f.blocked = v.categories;
                    f.stopped = Some("content_policy_violation");
                } else {
                    merge(&mut f.flagged, v.categories);
                }
            }
            message.map(stopped)
        }
        Ok(_) => None,
        Err(e) => {
            failed(gw, "moderation_output", &e);
            if settings.fail_closed
                && let Ok(mut f) = flags.lock()
            {
                f.stopped = Some("moderation_unavailable");
            }
            settings.fail_closed.then(|| {
                let mut e = ProviderError::new(
                    "gateway",
                    ErrorClass::Server,
                    "The output classifier is unavailable and this API fails closed.",
                );
                e.code = Some("moderation_unavailable".into());
                e
            })
        }
    }
}

/// Output moderation over text that arrives in pieces of no known shape (a function
/// backend's event stream): the windows and overlap of [`watch_stream`], the verdict in
/// `flags`.
pub struct TextWindows {
    settings: ModerationSettings,
    pending: String,
    carry: String,
    pub flags: StreamFlags,
}

impl TextWindows {
    pub fn new(settings: ModerationSettings) -> Self {
        Self {
            settings,
            pending: String::new(),
            carry: String::new(),
            flags: StreamFlags::default(),
        }
    }

    /// Adds `text` and checks once a window is full, or at the `end` if anything is left.
    /// `Some` stops the stream: the categories (block mode) or a fail-closed classifier down.
    pub async fn push(
        &mut self,
        gw: &Gateway,
        snap: &Snapshot,
        text: &str,
        end: bool,
    ) -> Option<GatewayError> {
        self.pending.push_str(text);
        let full = self.pending.len() >= WINDOW;
        if !(full || (end && !self.pending.is_empty())) {
            return None;
        }
        let block = self.settings.mode == access::stages::ModerationMode::Block;
        let stop = check(
            gw,
            snap,
            &self.settings,
            &self.carry,
            &self.pending,
            block,
            &self.flags,
        )
        .await;
        self.carry = overlap(&self.pending);
        self.pending.clear();
        stop?;
        let f = self.flags.lock().ok()?;
        Some(match f.stopped {
            Some("content_policy_violation") => GatewayError::ContentPolicy(f.blocked.join(",")),
            _ => GatewayError::ModerationUnavailable,
        })
    }
}

/// The final SSE comment of a flagged stream.
pub fn flag_comment(flags: &StreamFlags) -> Option<Bytes> {
    let f = flags.lock().ok()?;
    (!f.flagged.is_empty()).then(|| {
        Bytes::from(format!(
            ": x-gateway-moderation={}\n\n",
            flag_value(&f.flagged)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_embedded_in_bounded_pieces_cut_at_whitespace() {
        assert!(pieces("  ").is_empty());
        assert_eq!(pieces("how to build a bomb"), vec!["how to build a bomb"]);
        let long = "word ".repeat(1_000);
        let p = pieces(&long);
        assert!(p.len() > 1 && p.iter().all(|x| x.len() < PIECE_CHARS && !x.ends_with(' ')));
        assert_eq!(pieces(&"word ".repeat(100_000)).len(), MAX_PIECES);
    }

    #[test]
    fn guard_answers_parse() {
        assert_eq!(parse_guard_answer("safe").ok(), Some(vec![]));
        assert_eq!(
            parse_guard_answer("\nunsafe\nS1,S10\n").ok(),
            Some(vec!["violence".to_string(), "hate".to_string()])
        );
        assert_eq!(
            parse_guard_answer("UNSAFE").ok(),
            Some(vec!["unsafe".to_string()])
        );
        assert!(parse_guard_answer("I cannot help with that").is_err());
    }

    #[test]
    fn the_log_verdict_is_the_block_else_the_flags() {
        let (a, b) = (vec!["hate".to_string()], vec!["violence".to_string()]);
        assert_eq!(verdict_value(&[], &[]), None);
        assert_eq!(
            verdict_value(&a, &[]).as_deref(),
            Some("flagged; categories=hate")
        );
        assert_eq!(
            verdict_value(&a, &b).as_deref(),
            Some("blocked; categories=violence")
        );
        let mut flagged = a.clone();
        merge(&mut flagged, vec!["violence".into(), "hate".into()]);
        assert_eq!(flagged, ["hate", "violence"]);
    }

    #[test]
    fn rules_find_phrases_case_insensitively() {
        assert_eq!(rules("How do I BUILD A BOMB?")[0].0, "illicit/violent");
        assert!(rules("how do I build a birdhouse").is_empty());
    }

    #[test]
    fn configured_categories_include_subcategories() {
        let mut s: ModerationSettings =
            serde_json::from_str(r#"{"classifier":{"kind":"rules"},"categories":["illicit"]}"#)
                .unwrap_or_else(|e| unreachable!("{e}"));
        let scores = vec![("illicit/violent".to_string(), 0.9), ("hate".into(), 0.9)];
        assert_eq!(counted(&s, &scores), vec!["illicit/violent".to_string()]);
        s.threshold = 0.95;
        assert!(counted(&s, &scores).is_empty());
    }
}
