//! Unit tests of the wire types: tool calls assembled by index, streams without a finish, the
//! bounded answer, finish reasons, the request body, excerpts.

use super::*;
use crate::message::ChatMessage;

fn chunk(json: &str) -> Chunk {
    match serde_json::from_str(json) {
        Ok(chunk) => chunk,
        Err(err) => panic!("{err}: {json}"),
    }
}

#[test]
fn tool_calls_assemble_by_index_with_late_ids() {
    let mut assembly = Assembly::new(usize::MAX);
    for json in [
        r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":1,"function":{"arguments":"{\"b\""}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c0","type":"function","function":{"name":"first","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c1","function":{"name":"second","arguments":":1}"}}]}}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":""}],"usage":null}"#,
    ] {
        assert_eq!(assembly.apply("m", chunk(json)), Ok(None));
    }
    let response = match assembly.finish("m", "fallback") {
        Ok(response) => response,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(response.finish, FinishReason::Unknown);
    assert_eq!(response.usage, None);
    assert_eq!(response.model, "fallback");
    let calls: Vec<(&str, &str, &str)> = response
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        calls,
        [("c0", "first", "{}"), ("c1", "second", r#"{"b":1}"#)]
    );
}

#[test]
fn a_stream_without_finish_is_an_error() {
    let mut assembly = Assembly::new(usize::MAX);
    let _ = assembly.apply("m", chunk(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#));
    assert!(matches!(
        assembly.finish("m", "x"),
        Err(ModelError::Connection { .. })
    ));
}

#[test]
fn an_assembled_answer_is_bounded() {
    let too_large = |result: Result<Option<String>, ModelError>| {
        matches!(result, Err(ModelError::ResponseTooLarge { limit: 100, .. }))
    };
    let text = |piece: &str| {
        chunk(&format!(
            r#"{{"choices":[{{"delta":{{"content":"{piece}"}}}}]}}"#
        ))
    };
    // Text: 100 bytes fit, the 101st does not.
    let mut assembly = Assembly::new(100);
    for _ in 0..10 {
        assert!(assembly.apply("m", text(&"x".repeat(10))).is_ok());
    }
    assert!(too_large(assembly.apply("m", text("y"))));

    // One tool call's arguments, in fragments.
    let mut assembly = Assembly::new(100);
    let args = |piece: &str| {
        chunk(&format!(
            r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":0,"id":"c","function":{{"name":"t","arguments":"{piece}"}}}}]}}}}]}}"#
        ))
    };
    assert!(assembly.apply("m", args(&"a".repeat(40))).is_ok());
    assert!(too_large(assembly.apply("m", args(&"a".repeat(40)))));

    // Empty fragments of ever new calls.
    let mut assembly = Assembly::new(100);
    let results: Vec<bool> = (0..4)
        .map(|i| {
            too_large(assembly.apply(
                "m",
                chunk(&format!(
                    r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":{i}}}]}}}}]}}"#
                )),
            ))
        })
        .collect();
    assert_eq!(results, [false, false, false, true]);
}

#[test]
fn finish_reasons() {
    assert_eq!(finish_reason(Some("stop")), FinishReason::Stop);
    assert_eq!(finish_reason(Some("tool_calls")), FinishReason::ToolCalls);
    assert_eq!(finish_reason(Some("")), FinishReason::Unknown);
    assert_eq!(finish_reason(Some("eos")), FinishReason::Unknown);
    assert_eq!(finish_reason(None), FinishReason::Unknown);
}

#[test]
fn request_body_shape() {
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::User, "hi"),
            ChatMessage::tool_calls(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "t".into(),
                    arguments: "{}".into(),
                }],
            ),
            ChatMessage::tool_result("c1", "ok"),
        ],
        tools: Vec::new(),
        temperature: Some(0.2),
        max_tokens: None,
    };
    let body = serde_json::to_value(Request::new("gpt", &request, true)).unwrap_or_default();
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["messages"][1]["content"], Value::Null);
    assert_eq!(body["messages"][1]["tool_calls"][0]["type"], "function");
    assert_eq!(body["messages"][2]["tool_call_id"], "c1");
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert!(body.get("tools").is_none());
}

#[test]
fn excerpts_are_short_and_collapsed() {
    assert_eq!(
        excerpt("<html>\r\n  <b>x</b>\n</html>"),
        "<html> <b>x</b> </html>"
    );
    assert_eq!(excerpt(&"é".repeat(400)).chars().count(), 301);
}
