use super::*;
use crate::openai::{ChatRequest, FinishReason, Message, Role};
use proptest::prelude::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn chat(body: Value) -> Result<ChatRequest, serde_json::Error> {
    serde_json::from_value(body)
}

/// Parts of the produced contents, flattened to (role, what) for easy comparison.
fn flat(contents: &[Content]) -> Vec<(String, String)> {
    contents
        .iter()
        .flat_map(|c| {
            let role = c.role.clone().unwrap_or_default();
            c.parts.iter().map(move |p| {
                let what = if let Some(t) = &p.text {
                    format!("text:{t}")
                } else if let Some(fc) = &p.function_call {
                    format!("call:{}:{}", fc.name, fc.args.clone().unwrap_or_default())
                } else if let Some(fr) = &p.function_response {
                    format!("result:{}:{}", fr.name, fr.response)
                } else {
                    "other".to_string()
                };
                (role.clone(), what)
            })
        })
        .collect()
}

// ---- the documented shapes ----------------------------------------------------------------

/// The request shape of the API reference: system instruction, a multi-turn chat, a function
/// declaration, tool config and generation config, all camelCase.
const DOC_REQUEST: &str = r#"{
  "systemInstruction": {"parts": [{"text": "You are a cat. Your name is Neko."}]},
  "contents": [
    {"role": "user", "parts": [{"text": "Hello"}]},
    {"role": "model", "parts": [{"text": "Great to meet you. What would you like to know?"}]},
    {"role": "user", "parts": [
      {"text": "What is in this picture?"},
      {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
      {"fileData": {"mimeType": "application/pdf", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}
    ]}
  ],
  "tools": [{"functionDeclarations": [{
    "name": "schedule_meeting",
    "description": "Schedules a meeting with specified attendees at a given time and date.",
    "parametersJsonSchema": {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]}
  }]}],
  "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["schedule_meeting"]}},
  "generationConfig": {"stopSequences": ["Title"], "temperature": 1.0, "topP": 0.8, "topK": 10,
    "maxOutputTokens": 800, "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0}}
}"#;

#[test]
fn documented_request_parses_and_keeps_unknown_fields() -> TestResult {
    let req: GenerateContentRequest = serde_json::from_str(DOC_REQUEST)?;
    assert_eq!(req.contents.len(), 3);
    assert_eq!(req.contents[1].role.as_deref(), Some("model"));
    let parts = &req.contents[2].parts;
    assert_eq!(
        parts[1].inline_data.as_ref().map(|b| b.mime_type.as_str()),
        Some("image/jpeg")
    );
    assert!(
        parts[2]
            .file_data
            .as_ref()
            .is_some_and(|f| f.file_uri.ends_with("files/abc"))
    );
    let decl = req
        .tools
        .as_ref()
        .and_then(|t| t[0].function_declarations.as_ref())
        .ok_or("no declarations")?;
    assert_eq!(decl[0].name, "schedule_meeting");
    let g = req
        .generation_config
        .as_ref()
        .ok_or("no generation config")?;
    assert_eq!((g.top_k, g.max_output_tokens), (Some(10), Some(800)));
    // Unmodelled fields survive a round trip.
    let back = serde_json::to_value(&req)?;
    assert_eq!(
        back["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        0
    );
    assert_eq!(back["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
    Ok(())
}

/// A documented-shape response: text, then usage with cached and thinking tokens.
const DOC_RESPONSE: &str = r#"{
  "candidates": [{
    "content": {"parts": [{"text": "Hello! "}, {"text": "How can I help?"}], "role": "model"},
    "finishReason": "STOP",
    "index": 0,
    "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
  }],
  "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 29,
    "cachedContentTokenCount": 4, "thoughtsTokenCount": 10,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]},
  "modelVersion": "gemini-2.5-flash",
  "responseId": "mAitaLmkHPPlz7IPvtfUqQ4"
}"#;

#[test]
fn documented_response_converts_to_a_chat_completion() -> TestResult {
    let resp: GenerateContentResponse = serde_json::from_str(DOC_RESPONSE)?;
    let c = chat_from_response(resp, "my-gemini");
    assert_eq!(c.id, "mAitaLmkHPPlz7IPvtfUqQ4");
    assert_eq!(c.object, "chat.completion");
    assert_eq!(c.model, "my-gemini");
    assert_eq!(c.choices.len(), 1);
    assert_eq!(
        c.choices[0].message.content.as_deref(),
        Some("Hello! How can I help?")
    );
    assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
    let u = c.usage.ok_or("no usage")?;
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (12, 17, 29)
    );
    assert_eq!(u.cached_tokens(), 4);
    Ok(())
}

#[test]
fn function_call_response_becomes_tool_calls() -> TestResult {
    let body = r#"{"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "schedule_meeting", "args": {"date": "2025-03-14", "attendees": ["Bob"]}},
         "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "noop"}}]},
      "finishReason": "STOP"}]}"#;
    let c = chat_from_response(serde_json::from_str(body)?, "m");
    let choice = &c.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(choice.message.content, None);
    let calls = choice.message.tool_calls.as_ref().ok_or("no calls")?;
    assert_eq!(calls[0].id, "call_0_0");
    assert_eq!(calls[0].function.name, "schedule_meeting");
    let args: Value = serde_json::from_str(&calls[0].function.arguments)?;
    assert_eq!(args, json!({"date": "2025-03-14", "attendees": ["Bob"]}));
    assert!(
        !calls[0].function.arguments.contains(' '),
        "arguments are compact JSON"
    );
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
        ("call_0_1", "{}")
    );
    assert!(
        !c.id.is_empty(),
        "an id is generated when responseId is absent"
    );
    Ok(())
}

#[test]
fn finish_reasons_map_to_openai() -> TestResult {
    for (reason, want) in [
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        ("SPII", FinishReason::ContentFilter),
        ("BLOCKLIST", FinishReason::ContentFilter),
        ("OTHER", FinishReason::Stop),
    ] {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}]});
        let c = chat_from_response(serde_json::from_value(body)?, "m");
        assert_eq!(c.choices[0].finish_reason, Some(want), "{reason}");
    }
    // A blocked prompt has no candidates.
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
    let c = chat_from_response(serde_json::from_value(blocked)?, "m");
    assert_eq!(
        c.choices[0].finish_reason,
        Some(FinishReason::ContentFilter)
    );
    Ok(())
}

// ---- canonical request → Gemini ----------------------------------------------------------

#[test]
fn chat_request_converts_every_field() -> TestResult {
    let req = chat(json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?x=1"}}
            ]}
        ],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 64,
        "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}}
    }))?;
    let g = request_from_chat(&req)?;
    let body = serde_json::to_value(&g)?;
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]})
    );
    assert_eq!(body["contents"][0]["role"], "user");
    let parts = &body["contents"][0]["parts"];
    assert_eq!(
        parts[1]["inlineData"],
        json!({"mimeType": "image/png", "data": "iVBORw0K"})
    );
    assert_eq!(
        parts[2]["fileData"],
        json!({"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?x=1"})
    );
    let gc = &body["generationConfig"];
    assert_eq!(gc["temperature"], 0.2);
    assert_eq!(gc["topP"], 0.9);
    assert_eq!(gc["maxOutputTokens"], 64, "max_completion_tokens wins");
    assert_eq!(gc["stopSequences"], json!(["END"]));
    assert_eq!(gc["candidateCount"], 2);
    assert_eq!(gc["seed"], 7);
    assert_eq!(gc["presencePenalty"], 0.5);
    assert_eq!(gc["frequencyPenalty"], -0.5);
    assert_eq!(gc["responseMimeType"], "application/json");
    assert_eq!(gc["responseJsonSchema"], json!({"type": "object"}));
    let decl = &body["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "lookup");
    assert_eq!(
        decl["parametersJsonSchema"]["properties"]["q"]["type"],
        "string"
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["lookup"]})
    );
    Ok(())
}

#[test]
fn tool_choice_modes_map() -> TestResult {
    for (choice, mode) in [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")] {
        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": choice}),
        )?;
        let g = request_from_chat(&req)?;
        let cfg = g.tool_config.and_then(|t| t.function_calling_config);
        assert_eq!(cfg.and_then(|c| c.mode).as_deref(), Some(mode));
    }
    let req = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"}}),
    )?;
    let g = request_from_chat(&req)?
        .generation_config
        .ok_or("no config")?;
    assert_eq!(g.response_mime_type.as_deref(), Some("application/json"));
    assert_eq!(g.response_json_schema, None);
    Ok(())
}

#[test]
fn tool_results_find_their_function_name_by_call_id() -> TestResult {
    let req = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather in Paris and time in Tokyo?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_b", "content": "{\"time\":\"10:00\"}"},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "user", "content": "thanks"}
    ]}))?;
    let g = request_from_chat(&req)?;
    let roles: Vec<_> = g
        .contents
        .iter()
        .map(|c| c.role.clone().unwrap_or_default())
        .collect();
    // Both results and the following user text merge into one user turn.
    assert_eq!(roles, ["user", "model", "user"]);
    assert_eq!(
        flat(&g.contents),
        vec![
            (
                "user".into(),
                "text:weather in Paris and time in Tokyo?".into()
            ),
            (
                "model".into(),
                r#"call:get_weather:{"city":"Paris"}"#.into()
            ),
            ("model".into(), "call:get_time:{}".into()),
            ("user".into(), r#"result:get_time:{"time":"10:00"}"#.into()),
            (
                "user".into(),
                r#"result:get_weather:{"content":"sunny"}"#.into()
            ),
            ("user".into(), "text:thanks".into()),
        ]
    );
    Ok(())
}

#[test]
fn invalid_requests_say_which_field() -> TestResult {
    let empty = chat(json!({"model": "m", "messages": []}))?;
    assert!(
        matches!(request_from_chat(&empty), Err(ConvertError::Invalid(m)) if m.contains("messages"))
    );

    let bad_args = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}
    ]}))?;
    let err = request_from_chat(&bad_args)
        .err()
        .ok_or("accepted bad arguments")?;
    assert!(
        err.to_string()
            .contains("messages[1].tool_calls[0].function.arguments"),
        "{err}"
    );

    let orphan = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "1"}
    ]}))?;
    let err = request_from_chat(&orphan)
        .err()
        .ok_or("accepted an orphan tool result")?;
    assert!(
        err.to_string().contains("messages[1].tool_call_id"),
        "{err}"
    );

    let system_only = ChatRequest {
        model: "m".into(),
        messages: vec![Message::text(Role::System, "hi")],
        ..Default::default()
    };
    assert!(request_from_chat(&system_only).is_err());
    Ok(())
}

// ---- streaming -----------------------------------------------------------------------------

fn event(v: Value) -> Result<GenerateContentResponse, serde_json::Error> {
    serde_json::from_value(v)
}

#[test]
fn stream_of_text_then_a_function_call() -> TestResult {
    let mut s = StreamToChunks::new("gm");
    let usage_only = json!({"trafficType": "ON_DEMAND"});
    let mut chunks = Vec::new();
    chunks.extend(s.on_response(event(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}}],
        "usageMetadata": usage_only, "responseId": "r1"}))?));
    chunks.extend(s.on_response(event(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "check."}]}}],
        "usageMetadata": usage_only, "responseId": "r1"}))?));
    assert!(!s.saw_finish_reason());
    chunks.extend(s.on_response(event(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]},
            "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14},
        "responseId": "r1"}))?));
    assert!(s.saw_finish_reason());
    let tail = s.finish();

    assert!(
        chunks
            .iter()
            .all(|c| c.id == "r1" && c.object == "chat.completion.chunk")
    );
    let deltas: Vec<_> = chunks.iter().map(|c| &c.choices[0].delta).collect();
    assert_eq!(deltas[0].role, Some(Role::Assistant));
    assert!(
        deltas[1..].iter().all(|d| d.role.is_none()),
        "role only on the first chunk"
    );
    let text: String = deltas.iter().filter_map(|d| d.content.as_deref()).collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<_> = deltas
        .iter()
        .filter_map(|d| d.tool_calls.as_ref())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].index, 0);
    assert_eq!(calls[0].id.as_deref(), Some("call_0_0"));
    assert_eq!(calls[0].kind.as_deref(), Some("function"));
    let f = calls[0].function.as_ref().ok_or("no function")?;
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    assert_eq!(f.arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
    let last = chunks.last().ok_or("no chunks")?;
    assert_eq!(last.choices[0].finish_reason, Some(FinishReason::ToolCalls));

    assert_eq!(tail.len(), 1);
    assert!(tail[0].choices.is_empty());
    let u = tail[0].usage.ok_or("no usage")?;
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (9, 5, 14)
    );
    assert!(s.finish().is_empty(), "usage goes out once");
    Ok(())
}

#[test]
fn stream_skips_thoughts_and_empty_signature_parts() -> TestResult {
    let mut s = StreamToChunks::new("gm");
    let chunks = s.on_response(event(
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "pondering", "thought": true},
        {"text": "", "thoughtSignature": "c2ln"}]}, "finishReason": "MAX_TOKENS"}]}),
    )?);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert_eq!(chunks[0].choices[0].delta.content, None);
    assert_eq!(
        chunks[0].choices[0].finish_reason,
        Some(FinishReason::Length)
    );
    assert!(s.finish().is_empty(), "no usage seen, no usage chunk");
    Ok(())
}

// ---- embeddings and errors --------------------------------------------------------------

#[test]
fn embeddings_convert_both_ways() -> TestResult {
    let req: openai::EmbeddingsRequest = serde_json::from_value(json!({
        "model": "emb", "input": ["a b", "c"], "dimensions": 8}))?;
    let batch = embed_request_from_openai(&req, "gemini-embedding-001")?;
    let body = serde_json::to_value(&batch)?;
    assert_eq!(
        body["requests"][1],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "c"}]},
            "outputDimensionality": 8})
    );
    let tokens: openai::EmbeddingsRequest =
        serde_json::from_value(json!({"model": "emb", "input": [1, 2, 3]}))?;
    assert!(embed_request_from_openai(&tokens, "e").is_err());

    let resp: BatchEmbedContentsResponse = serde_json::from_str(
        r#"{"embeddings": [{"values": [0.1, -0.2]}, {"values": [0.3, 0.4]}]}"#,
    )?;
    let out = embeddings_from_gemini(resp, "emb", 3);
    assert_eq!(out.object, "list");
    assert_eq!(out.data[1].index, 1);
    assert_eq!(out.data[0].embedding, json!([0.1, -0.2]));
    assert_eq!((out.usage.prompt_tokens, out.usage.total_tokens), (3, 3));
    Ok(())
}

#[test]
fn error_bodies_parse_plain_and_wrapped() -> TestResult {
    let body =
        br#"{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED", "details": [
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"}]}}"#;
    let e = parse_error(body).ok_or("not parsed")?;
    assert_eq!(
        (e.error.code, e.error.status.as_str()),
        (429, "RESOURCE_EXHAUSTED")
    );
    assert_eq!(e.retry_delay_secs(), Some(27.0));

    let wrapped =
        br#"[{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT"}}]"#;
    let e = parse_error(wrapped).ok_or("wrapped not parsed")?;
    assert_eq!(e.error.code, 400);
    assert_eq!(e.retry_delay_secs(), None);

    assert!(parse_error(b"<html>502</html>").is_none());
    assert_eq!(ErrorResponse::new(503, "x").error.status, "UNAVAILABLE");
    assert_eq!(ErrorResponse::new(500, "x").error.status, "INTERNAL");
    Ok(())
}

// ---- property: a canonical conversation survives conversion ------------------------------

#[derive(Debug, Clone)]
enum Turn {
    User(String),
    Assistant(String),
    /// Calls (name, args) each answered by a tool result (text or JSON object).
    Calls(Vec<(String, Value, bool)>),
}

fn turn() -> impl Strategy<Value = Turn> {
    let text = "[a-zA-Z0-9][a-zA-Z0-9 ]{0,15}";
    let args = prop::collection::btree_map("[a-z]{1,5}", any::<i32>(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k, Value::from(v))).collect()));
    let call = ("[a-z_]{1,8}", args, any::<bool>());
    prop_oneof![
        text.prop_map(Turn::User),
        text.prop_map(Turn::Assistant),
        prop::collection::vec(call, 1..3).prop_map(Turn::Calls),
    ]
}

/// The canonical messages and the (role, part) sequence Gemini should receive.
fn conversation(turns: &[Turn]) -> (Vec<Message>, Vec<(String, String)>) {
    let mut messages = vec![Message::text(Role::System, "sys")];
    let mut want = Vec::new();
    let mut next_id = 0;
    for t in turns {
        match t {
            Turn::User(s) => {
                messages.push(Message::text(Role::User, s.clone()));
                want.push(("user".to_string(), format!("text:{s}")));
            }
            Turn::Assistant(s) => {
                messages.push(Message::text(Role::Assistant, s.clone()));
                want.push(("model".to_string(), format!("text:{s}")));
            }
            Turn::Calls(calls) => {
                let mut assistant = Message::text(Role::Assistant, "");
                assistant.content = None;
                let mut results = Vec::new();
                let mut tool_calls = Vec::new();
                // All calls go out in the model turn, then all results in the next user turn.
                let mut result_parts = Vec::new();
                for (name, args, json_result) in calls {
                    next_id += 1;
                    let id = format!("id{next_id}");
                    tool_calls.push(openai::ToolCall {
                        id: id.clone(),
                        kind: "function".into(),
                        function: openai::FunctionCall {
                            name: name.clone(),
                            arguments: args.to_string(),
                        },
                    });
                    want.push(("model".to_string(), format!("call:{name}:{args}")));
                    let (content, response) = if *json_result {
                        (json!({"ok": next_id}).to_string(), json!({"ok": next_id}))
                    } else {
                        (
                            format!("r{next_id}"),
                            json!({"content": format!("r{next_id}")}),
                        )
                    };
                    let mut m = Message::text(Role::Tool, content);
                    m.tool_call_id = Some(id);
                    results.push(m);
                    result_parts.push(("user".to_string(), format!("result:{name}:{response}")));
                }
                want.extend(result_parts);
                assistant.tool_calls = Some(tool_calls);
                messages.push(assistant);
                messages.extend(results);
            }
        }
    }
    (messages, want)
}

proptest! {
    #[test]
    fn conversation_text_and_tool_calls_survive(turns in prop::collection::vec(turn(), 1..8)) {
        let (messages, want) = conversation(&turns);
        let req = ChatRequest { model: "m".into(), messages, ..Default::default() };
        let g = request_from_chat(&req);
        prop_assert!(g.is_ok(), "{:?}", g.err());
        let g = g.unwrap_or_default();
        prop_assert_eq!(flat(&g.contents), want);
        // Roles alternate: same-role neighbours were merged.
        for pair in g.contents.windows(2) {
            prop_assert_ne!(&pair[0].role, &pair[1].role);
        }
        prop_assert_eq!(
            g.system_instruction.map(|s| s.parts),
            Some(vec![Part::text("sys")])
        );
    }
}
