//! Token counts before the provider reports any: what TPM limits reserve and wallet holds
//! cover at admission, and what a stream without provider usage is billed as (flagged as
//! estimated). One BPE (`o200k_base`, GPT-4o's) for every model: other vendors' tokenizers
//! differ by a few percent, which the settlement corrects whenever the provider reports usage.

use tiktoken_rs::o200k_base_singleton;

/// Texts longer than this are estimated from their length instead of encoded: a 20 MB body
/// must not cost a second of CPU before admission.
const MAX_ENCODED_BYTES: usize = 256 * 1024;

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.len() > MAX_ENCODED_BYTES {
        // About four bytes per token for English; rounded up so a hold is never short.
        return u64::try_from(text.len().div_ceil(3)).unwrap_or(u64::MAX);
    }
    u64::try_from(o200k_base_singleton().encode_ordinary(text).len()).unwrap_or(u64::MAX)
}

/// Loads the BPE tables (~100 ms) so the first request does not pay for it.
pub fn warm() {
    let _ = count("warm");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_the_reference_tokenizer() {
        // Reference counts from OpenAI's tiktoken (o200k_base).
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        let n = count("The quick brown fox jumps over the lazy dog.");
        assert!((9..=11).contains(&n), "{n}");
        let long = "word ".repeat(100_000);
        assert!(count(&long) >= 100_000 / 2);
    }
}
