#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::sync::OnceLock;

use models::embed::{BertEmbedder, Pooling};

fn minilm() -> Option<&'static BertEmbedder> {
    static MODEL: OnceLock<BertEmbedder> = OnceLock::new();
    let dir = common::model_path("GATEWAY_TEST_MINILM_DIR")?;
    Some(MODEL.get_or_init(|| BertEmbedder::load(&dir, None).expect("load MiniLM")))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_shape_pooling_and_norm() {
    let Some(m) = minilm() else { return };
    assert_eq!(m.dim(), 384);
    assert_eq!(
        m.pooling(),
        Pooling::Mean,
        "detected from 1_Pooling/config.json"
    );
    assert_eq!(m.max_tokens(), 512);
    let v = m.embed(&["hello world"]).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), 384);
    assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
    assert_eq!(
        m.count_tokens("hello world").unwrap(),
        4,
        "[CLS] hello world [SEP]"
    );
    assert!(m.embed(&[]).unwrap().is_empty());
}

#[test]
fn similar_sentences_score_higher_than_unrelated_ones() {
    let Some(m) = minilm() else { return };
    let v = m
        .embed(&[
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The weather in Lisbon is sunny today.",
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
        ])
        .unwrap();
    let pw = dot(&v[0], &v[1]);
    assert!(pw > dot(&v[0], &v[2]) + 0.3, "password pair {pw}");
    assert!(pw > dot(&v[0], &v[3]) + 0.3);
    let cat = dot(&v[3], &v[4]);
    assert!(cat > dot(&v[3], &v[2]) + 0.3, "cat pair {cat}");
    assert!(cat > dot(&v[3], &v[1]) + 0.3);
}

/// Equal to an independent numpy implementation (scripts/reference_embed.py: its own WordPiece
/// and BERT forward pass in float64) to 1e-3 per component, and the same token ids.
#[test]
fn vectors_match_the_independent_reference() {
    let Some(m) = minilm() else { return };
    let Some(path) = common::model_path("GATEWAY_TEST_MINILM_REFERENCE") else {
        return;
    };
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read the reference")).unwrap();
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let ours = m.embed(&sentences).unwrap();
    let mut worst = 0f64;
    for (i, s) in sentences.iter().enumerate() {
        let ids: Vec<u64> = reference["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(m.count_tokens(s).unwrap(), ids.len(), "{s}");
        let want: Vec<f64> = reference["vectors"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), ours[i].len());
        for (a, b) in ours[i].iter().zip(&want) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    eprintln!("largest difference from the reference: {worst:e}");
    assert!(worst < 1e-3, "largest difference {worst}");
}

/// Mean pooling ignores padding: a short text alone equals it batched beside a long one.
#[test]
fn padding_does_not_change_a_vector() {
    let Some(m) = minilm() else { return };
    let short = "Short one.";
    let long = "This is a much longer sentence that will force the short one to be padded with \
                many pad tokens when both go through the model in the same batch, which must not \
                change the short sentence's vector at all.";
    let alone = m.embed(&[short]).unwrap();
    let batched = m.embed(&[long, short]).unwrap();
    let diff = alone[0]
        .iter()
        .zip(&batched[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "difference {diff}");
}

#[test]
fn many_texts_keep_their_order() {
    let Some(m) = minilm() else { return };
    let texts: Vec<String> = (0..70)
        .map(|i| format!("sentence number {i} {}", "word ".repeat(i % 13)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = m.embed(&refs).unwrap();
    for i in [0, 13, 69] {
        let one = m.embed(&[refs[i]]).unwrap();
        let diff = one[0]
            .iter()
            .zip(&all[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: difference {diff}");
    }
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let err = BertEmbedder::load(std::path::Path::new("/nonexistent/model"), None).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
