#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::sync::OnceLock;

use models::chat::{ChatModel, FinishReason, GenerateParams};

fn smollm2() -> Option<&'static ChatModel> {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    let path = common::model_path("GATEWAY_TEST_SMOLLM2_GGUF")?;
    Some(MODEL.get_or_init(|| ChatModel::load(&path).expect("load SmolLM2")))
}

fn id(m: &ChatModel, token: &str) -> u32 {
    m.tokenizer()
        .token_to_id(token)
        .unwrap_or_else(|| panic!("{token} is not in the vocabulary"))
}

/// Known SmolLM2 ids: the ChatML control tokens are 0..=2 in its vocabulary, and byte-level BPE
/// marks a leading space with `Ġ` — the first word must not get one (candle's conversion adds it).
#[test]
fn tokenizer_matches_known_ids() {
    let Some(m) = smollm2() else { return };
    assert_eq!(id(m, "<|endoftext|>"), 0);
    assert_eq!(id(m, "<|im_start|>"), 1);
    assert_eq!(id(m, "<|im_end|>"), 2);
    assert_eq!(
        m.encode("Hello world").unwrap(),
        vec![id(m, "Hello"), id(m, "Ġworld")]
    );
    assert_eq!(
        m.encode("<|im_start|>user\nHi<|im_end|>").unwrap(),
        vec![1, id(m, "user"), id(m, "Ċ"), id(m, "Hi"), 2]
    );
    // SmolLM's pre-tokenizer splits numbers into single digits.
    assert_eq!(
        m.encode("2024").unwrap(),
        vec![id(m, "2"), id(m, "0"), id(m, "2"), id(m, "4")]
    );
}

#[test]
fn tokenizer_round_trips() {
    let Some(m) = smollm2() else { return };
    for text in [
        "Hello, world!",
        "  two leading spaces, tabs\tand\nnew lines",
        "naïve café — 東京 🚀 1234.5",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    ] {
        let ids = m.encode(text).unwrap();
        assert_eq!(m.decode(&ids).unwrap(), text);
    }
}

#[test]
fn answers_a_trivial_prompt() {
    let Some(m) = smollm2() else { return };
    let mut streamed = String::new();
    let g = m
        .generate(
            &[("user", "What is the capital of France?")],
            &GenerateParams {
                max_tokens: 40,
                ..GenerateParams::default()
            },
            &mut |piece| {
                streamed.push_str(piece);
                true
            },
        )
        .unwrap();
    eprintln!("answer: {:?} ({:?})", g.text, g.finish_reason);
    assert!(!g.text.trim().is_empty());
    assert_eq!(streamed, g.text, "the streamed pieces add up to the text");
    assert!(g.text.contains("Paris"), "{}", g.text);
    assert!(g.prompt_tokens > 5);
    assert!(g.completion_tokens > 0 && g.completion_tokens <= 40);
}

#[test]
fn respects_max_tokens() {
    let Some(m) = smollm2() else { return };
    let g = m
        .generate(
            &[("user", "Write a long story about a dragon.")],
            &GenerateParams {
                max_tokens: 5,
                ..GenerateParams::default()
            },
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.completion_tokens, 5);
}

#[test]
fn stops_at_the_end_of_its_turn() {
    let Some(m) = smollm2() else { return };
    let g = m
        .generate(
            &[("user", "Say just the word yes.")],
            &GenerateParams {
                max_tokens: 100,
                ..GenerateParams::default()
            },
            &mut |_| true,
        )
        .unwrap();
    eprintln!("answer: {:?}", g.text);
    assert_eq!(g.finish_reason, FinishReason::Stop, "{}", g.text);
    assert!(g.completion_tokens < 100);
    assert!(!g.text.contains("<|im_end|>"));
}

#[test]
fn stop_strings_and_the_callback_stop_early() {
    let Some(m) = smollm2() else { return };
    let params = GenerateParams {
        max_tokens: 30,
        ..GenerateParams::default()
    };
    let msgs = [("user", "Count from 1 to 20, separated by commas.")];
    let full = m.generate(&msgs, &params, &mut |_| true).unwrap();
    eprintln!("full: {:?}", full.text);
    let stop = GenerateParams {
        stop: vec!["5".into()],
        ..params.clone()
    };
    let cut = m.generate(&msgs, &stop, &mut |_| true).unwrap();
    assert!(!cut.text.contains('5'), "{}", cut.text);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(full.text.starts_with(&cut.text));

    let mut pieces = 0;
    let g = m
        .generate(&msgs, &params, &mut |_| {
            pieces += 1;
            pieces < 3
        })
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert!(g.completion_tokens <= 4, "{}", g.completion_tokens);
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let Some(m) = smollm2() else { return };
    let params = GenerateParams {
        max_tokens: 12,
        temperature: 0.8,
        top_p: Some(0.9),
        seed: 7,
        ..GenerateParams::default()
    };
    let msgs = [("user", "Tell me a fun fact.")];
    let a = m.generate(&msgs, &params, &mut |_| true).unwrap();
    let b = m.generate(&msgs, &params, &mut |_| true).unwrap();
    assert_eq!(a.text, b.text);
}
