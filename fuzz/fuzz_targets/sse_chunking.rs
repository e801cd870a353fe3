//! Upstream SSE bytes, cut anywhere: the parser never panics, and however the bytes are split
//! it yields the same events as when they arrive in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::sse::SseParser;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (bytes, cuts) = input;
    let mut whole = SseParser::with_limit(1 << 16);
    let expected = whole.push(&bytes);
    let mut split = SseParser::with_limit(1 << 16);
    let mut got = Vec::new();
    let mut failed = false;
    let mut rest = &bytes[..];
    for c in cuts.iter().map(|c| *c as usize) {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(c.min(rest.len()));
        match split.push(head) {
            Ok(evs) => got.extend(evs),
            Err(_) => failed = true,
        }
        rest = tail;
    }
    match split.push(rest) {
        Ok(evs) => got.extend(evs),
        Err(_) => failed = true,
    }
    // An oversized event is refused either way; otherwise the events match.
    if let (Ok(expected), false) = (expected, failed) {
        assert_eq!(expected, got);
    }
});
