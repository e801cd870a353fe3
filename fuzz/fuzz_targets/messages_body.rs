//! An Anthropic-format body on `/v1/messages`: parsed and translated to the canonical request
//! without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::admission::{parse, validate_chat};
use wire::anthropic::{MessagesRequest, chat_from_messages_request};

fuzz_target!(|body: &[u8]| {
    let Ok(m) = parse::<MessagesRequest>(body) else {
        return;
    };
    if let Ok(chat) = chat_from_messages_request(&m) {
        let _ = validate_chat(&chat);
    }
});
