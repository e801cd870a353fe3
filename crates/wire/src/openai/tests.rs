use super::*;

#[test]
fn unknown_request_fields_survive_a_round_trip() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi","x_msg":1}],
        "logprobs":true,"parallel_tool_calls":false,"metadata":{"a":"b"}}"#;
    let req: ChatRequest = serde_json::from_str(body).unwrap_or_default();
    let back = serde_json::to_value(&req).unwrap_or_default();
    assert_eq!(back["logprobs"], true);
    assert_eq!(back["parallel_tool_calls"], false);
    assert_eq!(back["metadata"]["a"], "b");
    assert_eq!(back["messages"][0]["x_msg"], 1);
}

#[test]
fn content_parts_and_tool_calls_parse() {
    let body = r#"{"model":"m","messages":[
        {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"42"}]}"#;
    let req: ChatRequest = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(req.messages.len(), 3);
    assert!(matches!(&req.messages[0].content, Some(Content::Parts(p)) if p.len() == 2));
    assert_eq!(req.messages[1].tool_calls.as_ref().map(Vec::len), Some(1));
    assert_eq!(req.messages[2].tool_call_id.as_deref(), Some("c1"));
}

#[test]
fn usage_only_reads_usage_and_cached_tokens() {
    let body = r#"{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#;
    let u: UsageOnly = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(u.usage.map(|u| u.cached_tokens()), Some(4));
}
