//! A consumer's chat request body: parsed once, validated, the router's view of it taken —
//! never a panic, only `Ok` or a `GatewayError`.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use pipeline::admission::{parse, validate_chat};
use pipeline::llm::{Ask, needs};
use wire::openai::ChatRequest;

fuzz_target!(|body: &[u8]| {
    let Ok(req) = parse::<ChatRequest>(body) else {
        return;
    };
    let _ = needs(&req);
    if validate_chat(&req).is_ok() {
        let _ = Ask::chat(&req, &HeaderMap::new());
        let _ = serde_json::to_vec(&req);
    }
});
