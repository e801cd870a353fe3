use super::*;
use crate::openai::{
    ChatChunk, ChatRequest, ChunkChoice, Content, ContentPart, Delta, FinishReason, FunctionCall,
    FunctionCallDelta, Message, ResponseFormat, Role as OaRole, ToolCall, ToolCallDelta, Usage,
};
use crate::sse::SseParser;
use proptest::prelude::*;
use serde_json::{Value, json};

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> T {
    match serde_json::from_str(s) {
        Ok(v) => v,
        Err(e) => unreachable!("fixture does not parse: {e}"),
    }
}

fn chat(body: Value) -> ChatRequest {
    parse(&body.to_string())
}

/// The events of a recorded SSE body.
fn events(body: &str) -> Vec<StreamEvent> {
    let mut p = SseParser::new();
    let evs = p.push(body.as_bytes()).unwrap_or_default();
    evs.iter()
        .map(|e| {
            let ev: StreamEvent = parse(&e.data);
            // The SSE name always repeats the JSON type.
            assert_eq!(e.event.as_deref(), Some(ev.event_type()));
            ev
        })
        .collect()
}

// --- documented shapes -------------------------------------------------------------------

/// Multi-turn request in the documented shapes: system blocks, a base64 and a URL image, a
/// tool round trip, a forced tool, stop sequences, metadata.
const DOC_REQUEST: &str = r#"{
  "model": "claude-sonnet-4-5",
  "max_tokens": 1024,
  "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}],
  "messages": [
    {"role": "user", "content": [
      {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
      {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
      {"type": "text", "text": "What's the weather like in San Francisco?"}
    ]},
    {"role": "assistant", "content": [
      {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
      {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
    ]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"}
    ]}
  ],
  "tools": [{
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
  }],
  "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
  "stop_sequences": ["\n\nHuman:"],
  "temperature": 0.5,
  "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
  "thinking": {"type": "disabled"}
}"#;

#[test]
fn documented_request_converts_to_chat() {
    let req: MessagesRequest = parse(DOC_REQUEST);
    assert_eq!(
        req.extra.get("thinking"),
        Some(&json!({"type": "disabled"}))
    );
    let c = chat_from_messages_request(&req).unwrap_or_default();
    let roles: Vec<OaRole> = c.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            OaRole::System,
            OaRole::User,
            OaRole::Assistant,
            OaRole::Tool
        ]
    );
    assert_eq!(
        c.messages[0].content,
        Some(Content::Text("You are a weather bot.".into()))
    );
    let Some(Content::Parts(parts)) = &c.messages[1].content else {
        unreachable!("user turn with images keeps parts")
    };
    let urls: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::ImageUrl { image_url } => Some(image_url.url.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        urls,
        [
            "data:image/jpeg;base64,/9j/4AAQSkZJRg==",
            "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
        ]
    );
    let calls = c.messages[2].tool_calls.clone().unwrap_or_default();
    assert_eq!(calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(
        calls[0].function.arguments,
        r#"{"location":"San Francisco, CA","unit":"celsius"}"#
    );
    assert_eq!(
        c.messages[3].tool_call_id.as_deref(),
        Some("toolu_01A09q90qw90lq917835lq9")
    );
    assert_eq!(
        c.messages[3].content,
        Some(Content::Text("15 degrees".into()))
    );
    assert_eq!(c.max_tokens, Some(1024));
    assert_eq!(
        c.stop,
        Some(crate::openai::Stop::Many(vec!["\n\nHuman:".into()]))
    );
    assert_eq!(
        c.tool_choice,
        Some(crate::openai::ToolChoice::Mode("required".into()))
    );
    assert_eq!(
        c.extra.get("parallel_tool_calls"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        c.user.as_deref(),
        Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b")
    );
    assert!(
        !c.extra.contains_key("thinking"),
        "Anthropic-only settings are not forwarded"
    );
    assert_eq!(c.stream, None);
}

#[test]
fn documented_tool_use_response_converts_to_completion() {
    let resp: MessagesResponse = parse(
        r#"{
      "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
      "model": "claude-sonnet-4-5", "stop_reason": "tool_use", "stop_sequence": null,
      "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
      ],
      "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}
    }"#,
    );
    let c = chat_from_response(resp, false);
    assert_eq!(c.id, "msg_01Aq9w938a90dw8q");
    assert_eq!(c.object, "chat.completion");
    let choice = &c.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        choice.message.content.as_deref(),
        Some("I'll check the current weather in San Francisco for you.")
    );
    let calls = choice.message.tool_calls.clone().unwrap_or_default();
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        calls[0].function.arguments,
        r#"{"location":"San Francisco, CA","unit":"celsius"}"#
    );
    assert_eq!(
        c.usage,
        Some(Usage::new(2095 + 1000 + 100, 503, Some(1000)))
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Stop),
    ] {
        let resp: MessagesResponse = parse(&format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":"hi"}}],
                "stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
        ));
        assert_eq!(
            chat_from_response(resp, false).choices[0].finish_reason,
            Some(finish),
            "{stop}"
        );
    }
}

#[test]
fn unknown_blocks_and_events_parse() {
    let blocks: Vec<ContentBlock> = parse(
        r#"[{"type":"thinking","thinking":"Let me think","signature":"abc"},{"type":"text","text":"hi","citations":null}]"#,
    );
    assert_eq!(blocks[0].kind(), "thinking");
    assert!(matches!(&blocks[0], ContentBlock::Other(v) if v["signature"] == "abc"));
    assert_eq!(blocks[1], ContentBlock::text("hi"));
    let ev: StreamEvent = parse(r#"{"type":"some_future_event","x":1}"#);
    assert_eq!(ev, StreamEvent::Unknown);
    let ev: StreamEvent = parse(
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
    );
    assert_eq!(
        ev,
        StreamEvent::ContentBlockDelta {
            index: 0,
            delta: BlockDelta::Other
        }
    );
}

#[test]
fn error_bodies_follow_the_documented_table() {
    let e = parse_error(
        br#"{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
    );
    assert_eq!(
        e.as_ref().map(|e| e.error.kind.as_str()),
        Some("not_found_error")
    );
    assert_eq!(
        e.and_then(|e| e.request_id).as_deref(),
        Some("req_011CSHoEeqs5C35K2UUqR7Fy")
    );
    assert_eq!(
        parse_error(br#"{"error":{"message":"openai shaped"}}"#),
        None
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(error_response(status, "x").error.kind, kind, "{status}");
    }
    let body = serde_json::to_value(error_response(429, "slow down")).unwrap_or_default();
    assert_eq!(
        body,
        json!({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})
    );
}

// --- upstream direction: chat → Anthropic ----------------------------------------------------

#[test]
fn request_from_chat_maps_roles_tools_and_images() {
    let req = chat(json!({
        "model": "gw-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "g", "description": "gee"}}],
        "tool_choice": "required",
        "stop": "END",
        "temperature": 1.6,
        "user": "u-1"
    }));
    let m = request_from_chat(&req, "claude-x").unwrap_or_else(|e| unreachable!("{e}"));
    let v = serde_json::to_value(&m).unwrap_or_default();
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["max_tokens"], 4096);
    assert_eq!(
        v["system"],
        json!([{"type":"text","text":"Be brief."},{"type":"text","text":"Use tools."}])
    );
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        v["messages"][0]["content"],
        json!([
            {"type":"text","text":"look"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
            {"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}
        ])
    );
    assert_eq!(
        v["messages"][1],
        json!({"role":"assistant","content":[
            {"type":"tool_use","id":"call_1","name":"f","input":{"a":1}},
            {"type":"tool_use","id":"call_2","name":"g","input":{}}
        ]})
    );
    // Both tool results and the next user text share one user turn, results first.
    assert_eq!(
        v["messages"][2],
        json!({"role":"user","content":[
            {"type":"tool_result","tool_use_id":"call_1","content":"one"},
            {"type":"tool_result","tool_use_id":"call_2","content":"two"},
            {"type":"text","text":"thanks"}
        ]})
    );
    assert_eq!(
        v["tools"][1],
        json!({"name":"g","description":"gee","input_schema":{"type":"object","properties":{}}})
    );
    assert_eq!(v["tool_choice"], json!({"type":"any"}));
    assert_eq!(v["stop_sequences"], json!(["END"]));
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["metadata"], json!({"user_id":"u-1"}));
    assert!(v.get("stream").is_none());
}

#[test]
fn tool_choice_modes_map() {
    for (choice, want) in [
        (json!("none"), json!({"type":"none"})),
        (json!("auto"), json!({"type":"auto"})),
        (json!("required"), json!({"type":"any"})),
        (
            json!({"type":"function","function":{"name":"f"}}),
            json!({"type":"tool","name":"f"}),
        ),
    ] {
        let req = chat(
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":choice}),
        );
        let m = request_from_chat(&req, "c").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            serde_json::to_value(m.tool_choice).unwrap_or_default(),
            want
        );
    }
}

#[test]
fn unconvertible_requests_name_the_field() {
    let cases = [
        (json!({"model":"m","messages":[]}), "messages"),
        (
            json!({"model":"m","messages":[{"role":"assistant","tool_calls":[
                {"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"model":"m","messages":[{"role":"tool","content":"x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model":"m","messages":[{"role":"user","content":[
                {"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
    ];
    for (body, field) in cases {
        match request_from_chat(&chat(body), "c") {
            Err(ConvertError::Invalid(msg)) => assert!(msg.starts_with(field), "{msg}"),
            other => unreachable!("expected Invalid for {field}, got {other:?}"),
        }
    }
}

#[test]
fn json_mode_forces_the_json_tool_and_reads_it_back() {
    let mut req = chat(json!({"model":"m","messages":[{"role":"user","content":"give json"}]}));
    req.response_format = Some(ResponseFormat {
        kind: "json_schema".into(),
        json_schema: Some(crate::openai::JsonSchemaFormat {
            name: "answer".into(),
            description: None,
            schema: Some(json!({"type":"object","properties":{"n":{"type":"integer"}}})),
            strict: None,
        }),
    });
    assert!(json_mode(&req));
    let m = request_from_chat(&req, "c").unwrap_or_else(|e| unreachable!("{e}"));
    let tools = m.tools.clone().unwrap_or_default();
    assert_eq!(tools[0].name, JSON_TOOL);
    assert_eq!(
        tools[0].input_schema,
        Some(json!({"type":"object","properties":{"n":{"type":"integer"}}}))
    );
    assert_eq!(
        m.tool_choice,
        Some(ToolChoice::Tool {
            name: JSON_TOOL.into(),
            disable_parallel_tool_use: None
        })
    );

    let resp: MessagesResponse = parse(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"c","stop_reason":"tool_use","stop_sequence":null,
            "content":[{"type":"text","text":"Here you go."},{"type":"tool_use","id":"t1","name":"json_response","input":{"n":7}}],
            "usage":{"input_tokens":5,"output_tokens":3}}"#,
    );
    let c = chat_from_response(resp, true);
    assert_eq!(c.choices[0].message.content.as_deref(), Some(r#"{"n":7}"#));
    assert_eq!(c.choices[0].message.tool_calls, None);
    assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
}

// --- streaming: Anthropic → chunks ------------------------------------------------------------

/// The documented "streaming request with tool use" sequence: a text block, then a tool_use
/// block whose input arrives as JSON fragments.
const DOC_TOOL_STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_read_input_tokens\":28},\"content\":[],\"stop_reason\":null}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", let's check the weather.\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

#[test]
fn recorded_stream_gives_chunks_and_final_usage() {
    let mut conv = StreamToChunks::new(false);
    let mut chunks = Vec::new();
    for ev in events(DOC_TOOL_STREAM) {
        assert!(!conv.is_finished());
        chunks.extend(conv.on_event(ev).unwrap_or_default());
    }
    assert!(conv.is_finished());
    assert!(chunks.iter().all(|c| c.id == "msg_014p7gG3wDgGV9EUtLvnow3U"
        && c.model == "claude-sonnet-4-5"
        && c.object == "chat.completion.chunk"));
    assert_eq!(chunks[0].choices[0].delta.role, Some(OaRole::Assistant));
    let text: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert_eq!(text, "Okay, let's check the weather.");
    let calls: Vec<&ToolCallDelta> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .collect();
    assert_eq!(
        calls[0].id.as_deref(),
        Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    );
    assert_eq!(calls[0].kind.as_deref(), Some("function"));
    assert_eq!(
        calls[0].function.as_ref().and_then(|f| f.name.as_deref()),
        Some("get_weather")
    );
    assert!(calls.iter().all(|c| c.index == 0));
    let args: String = calls
        .iter()
        .filter_map(|c| c.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(args, r#"{"location": "San Francisco, CA"}"#);
    let finishes: Vec<FinishReason> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|ch| ch.finish_reason)
        .collect();
    assert_eq!(finishes, [FinishReason::ToolCalls]);
    let last = chunks.last().cloned();
    assert_eq!(last.as_ref().map(|c| c.choices.len()), Some(0));
    assert_eq!(
        last.and_then(|c| c.usage),
        Some(Usage::new(472 + 28, 89, Some(28)))
    );
}

#[test]
fn stream_error_event_is_an_upstream_error() {
    let mut conv = StreamToChunks::new(false);
    let evs = events(
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    );
    match evs.into_iter().next().map(|ev| conv.on_event(ev)) {
        Some(Err(ConvertError::Upstream { kind, message })) => {
            assert_eq!(
                (kind.as_str(), message.as_str()),
                ("overloaded_error", "Overloaded")
            );
        }
        other => unreachable!("expected an upstream error, got {other:?}"),
    }
    assert!(!conv.is_finished());
}

// --- ingress direction: chat → Anthropic response / stream ------------------------------------

#[test]
fn messages_response_from_chat_maps_usage_and_stop() {
    let c: crate::openai::ChatCompletion = parse(
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",
            "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Let me see.",
              "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}],
            "usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,"prompt_tokens_details":{"cached_tokens":40}}}"#,
    );
    let r = messages_response_from_chat(&c, "claude-alias");
    let v = serde_json::to_value(&r).unwrap_or_default();
    assert_eq!(
        v,
        json!({
            "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-alias",
            "content": [
                {"type":"text","text":"Let me see."},
                {"type":"tool_use","id":"call_1","name":"f","input":{"a":1}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 60, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40}
        })
    );
    for (finish, stop) in [
        (FinishReason::Stop, "end_turn"),
        (FinishReason::Length, "max_tokens"),
        (FinishReason::ContentFilter, "refusal"),
    ] {
        let mut c = c.clone();
        c.choices[0].finish_reason = Some(finish);
        assert_eq!(
            messages_response_from_chat(&c, "m").stop_reason.as_deref(),
            Some(stop)
        );
    }
}

fn chunk(delta: Delta, finish: Option<FinishReason>, usage: Option<Usage>) -> ChatChunk {
    ChatChunk {
        id: "chatcmpl-9".into(),
        object: "chat.completion.chunk".into(),
        created: 1,
        model: "gpt-4o".into(),
        choices: if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            }]
        },
        usage,
        system_fingerprint: None,
    }
}

fn call_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Delta {
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index,
            id: id.map(str::to_string),
            kind: id.map(|_| "function".to_string()),
            function: Some(FunctionCallDelta {
                name: name.map(str::to_string),
                arguments: Some(args.to_string()),
            }),
        }]),
        ..Delta::default()
    }
}

fn text_delta(t: &str) -> Delta {
    Delta {
        content: Some(t.into()),
        ..Delta::default()
    }
}

#[test]
fn chunks_to_stream_emits_the_documented_sequence_and_round_trips() {
    let chunks = vec![
        chunk(
            Delta {
                role: Some(OaRole::Assistant),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
            None,
        ),
        chunk(text_delta("Checking"), None, None),
        chunk(text_delta(" now."), None, None),
        chunk(
            call_delta(0, Some("call_a"), Some("get_weather"), ""),
            None,
            None,
        ),
        chunk(call_delta(0, None, None, "{\"location\":"), None, None),
        chunk(call_delta(0, None, None, "\"Paris\"}"), None, None),
        chunk(
            call_delta(1, Some("call_b"), Some("get_time"), "{}"),
            None,
            None,
        ),
        chunk(Delta::default(), Some(FinishReason::ToolCalls), None),
        chunk(Delta::default(), None, Some(Usage::new(50, 12, Some(10)))),
    ];
    let mut to_stream = ChunksToStream::new("claude-alias");
    let mut evs: Vec<StreamEvent> = chunks.iter().flat_map(|c| to_stream.on_chunk(c)).collect();
    evs.extend(to_stream.finish());
    assert!(to_stream.finish().is_empty(), "finish is idempotent");

    let kinds: Vec<&str> = evs.iter().map(StreamEvent::event_type).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let indexes: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockStart { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(
        matches!(&evs[12], StreamEvent::MessageDelta { delta, usage }
        if delta.stop_reason.as_deref() == Some("tool_use")
            && usage.output_tokens == 12
            && usage.input_tokens == Some(40)
            && usage.cache_read_input_tokens == Some(10))
    );

    // Through the wire and back.
    let body: Vec<u8> = evs.iter().flat_map(|e| encode_event(e).to_vec()).collect();
    let mut back = StreamToChunks::new(false);
    let mut out = Vec::new();
    for ev in events(&String::from_utf8_lossy(&body)) {
        out.extend(back.on_event(ev).unwrap_or_default());
    }
    assert!(back.is_finished());
    let text: String = out
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert_eq!(text, "Checking now.");
    let mut args = [String::new(), String::new()];
    for d in out
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
    {
        if let (Some(slot), Some(a)) = (
            args.get_mut(d.index as usize),
            d.function.as_ref().and_then(|f| f.arguments.as_ref()),
        ) {
            slot.push_str(a);
        }
    }
    assert_eq!(
        args,
        ["{\"location\":\"Paris\"}".to_string(), "{}".to_string()]
    );
    assert_eq!(
        out.last().and_then(|c| c.usage),
        Some(Usage::new(50, 12, Some(10)))
    );
}

// --- round trip property ------------------------------------------------------------------------

fn words() -> impl Strategy<Value = String> {
    "[a-z]{1,6}( [a-z]{1,6}){0,3}"
}

type Exchange = (
    Option<String>,
    Vec<(String, std::collections::BTreeMap<String, i64>)>,
    Vec<String>,
    Option<String>,
);

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        proptest::option::of(words()),
        proptest::collection::vec(
            (
                "[a-z_]{1,8}",
                proptest::collection::btree_map("[a-z]{1,5}", any::<i64>(), 0..3),
            ),
            0..3,
        ),
        proptest::collection::vec(words(), 3),
        proptest::option::of(words()),
    )
}

/// An alternating conversation: user, then exchanges of an assistant turn (text and/or tool
/// calls), the tool results, and maybe a user turn.
fn conversation(system: Option<String>, first: String, exchanges: Vec<Exchange>) -> Vec<Message> {
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(Message::text(OaRole::System, s));
    }
    msgs.push(Message::text(OaRole::User, first));
    let mut next_id = 0;
    for (text, calls, results, user) in exchanges {
        let text = if text.is_none() && calls.is_empty() {
            Some("ok".to_string())
        } else {
            text
        };
        let mut a = Message::text(OaRole::Assistant, "");
        a.content = text.map(Content::Text);
        let calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(name, args)| {
                next_id += 1;
                ToolCall {
                    id: format!("call_{next_id}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name,
                        arguments: json!(args).to_string(),
                    },
                }
            })
            .collect();
        let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
        let had_calls = !calls.is_empty();
        a.tool_calls = had_calls.then_some(calls);
        msgs.push(a);
        for (id, r) in ids.into_iter().zip(results) {
            let mut t = Message::text(OaRole::Tool, r);
            t.tool_call_id = Some(id);
            msgs.push(t);
        }
        // Two assistant turns in a row would be merged into one.
        match user {
            Some(u) => msgs.push(Message::text(OaRole::User, u)),
            None if !had_calls => msgs.push(Message::text(OaRole::User, "go on")),
            None => {}
        }
    }
    msgs
}

proptest! {
    #[test]
    fn chat_survives_anthropic_and_back(
        system in proptest::option::of(words()),
        first in words(),
        exchanges in proptest::collection::vec(exchange(), 0..4),
    ) {
        let messages = conversation(system, first, exchanges);
        let req = ChatRequest { model: "m".into(), messages, ..ChatRequest::default() };
        let upstream = request_from_chat(&req, "claude");
        prop_assert!(upstream.is_ok(), "{:?}", upstream.err());
        let wire = serde_json::to_string(&upstream.ok()).unwrap_or_default();
        let parsed: Option<MessagesRequest> = serde_json::from_str(&wire).unwrap_or_default();
        let back = parsed.map(|p| chat_from_messages_request(&p).map(|c| c.messages));
        prop_assert_eq!(back.and_then(Result::ok), Some(req.messages));
    }
}
