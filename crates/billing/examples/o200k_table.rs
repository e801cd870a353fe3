//! Writes `data/o200k_base.bin`, the table `billing::tokens` counts with, from tiktoken-rs's
//! copy of OpenAI's `o200k_base` ranks: every token in rank order as one length byte and its
//! bytes. Run `cargo run -p billing --example o200k_table` after a tiktoken-rs update; the
//! tokens tests check that the committed file still matches.
#![expect(
    clippy::unwrap_used,
    reason = "a developer tool: a failure should stop it loudly"
)]

use std::io::Write;

fn main() {
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let mut out = Vec::new();
    let mut rank = 0u32;
    // Ranks are dense from 0; the first rank that does not decode ends the ordinary tokens.
    while let Ok(bytes) = bpe.decode_bytes(&[rank]) {
        if bpe
            .special_tokens()
            .iter()
            .any(|s| s.as_bytes() == bytes.as_slice())
        {
            break;
        }
        out.push(u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(&bytes);
        rank += 1;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/o200k_base.bin");
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
    println!("{rank} tokens, {} bytes -> {path}", out.len());
}
