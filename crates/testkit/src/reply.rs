//! Deterministic answers, so tests can assert on content and token counts.

/// How long an answer is: padded with `wordN` up to `pad_to`, then cut at `cap`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Length {
    pub pad_to: Option<usize>,
    pub cap: Option<usize>,
}

/// `Some(n)`: exactly `n` words; `None`: the natural answer.
impl From<Option<usize>> for Length {
    fn from(n: Option<usize>) -> Self {
        Length { pad_to: n, cap: n }
    }
}

/// The words of the answer to `prompt`: `"Echo: <prompt words>"`, padded and cut as `len` says.
pub fn words(prompt: &str, len: impl Into<Length>) -> Vec<String> {
    let len = len.into();
    let mut out: Vec<String> = std::iter::once("Echo:".to_string())
        .chain(prompt.split_whitespace().map(str::to_string))
        .collect();
    if let Some(n) = len.pad_to {
        let mut i = 0;
        while out.len() < n {
            out.push(format!("word{i}"));
            i += 1;
        }
    }
    if let Some(c) = len.cap {
        out.truncate(c.max(1));
    }
    out
}

/// Streamed pieces: each word but the first gets its leading space, so the pieces concatenate to
/// the full text.
pub fn pieces(words: &[String]) -> Vec<String> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.clone() } else { format!(" {w}") })
        .collect()
}

/// A crude, stable token count: whitespace-separated words, at least 1 for non-empty text.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The same fake embedding for the same text: `dims` floats derived from a hash of the text,
/// normalised to unit length.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut v = Vec::with_capacity(dims);
    for i in 0..dims {
        for b in text.bytes().chain((i as u32).to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v.push(((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter().map(|x| x / norm).collect()
}
