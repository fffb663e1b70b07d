//! `POST /v1/chat/completions`: the scripted reply as a JSON body or an SSE stream, with
//! faults (stall, truncate, malformed chunk, huge or endless answers, a huge header) and
//! quirks applied.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Fault, Quirk};
use crate::respond::{
    bad_request, channel_body, echo_response, endless_body, error_response, padded_body,
    stalled_body, stopping_response, with_huge_header,
};
use crate::script::{self, Reply, Turn};
use crate::state::{Endpoint, Options, Shared};

/// The parts of a chat completion request the mock reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    function: ToolFunction,
}

#[derive(Debug, Deserialize)]
struct ToolFunction {
    name: String,
}

/// A message's text: a string, or the `text` of its content parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// One answer, ready to be sent either way.
struct Answer {
    id: String,
    model: String,
    reply: Reply,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: &'static str,
}

pub(crate) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(Endpoint::Chat, &headers, &body);
    let options = match Options::from_headers(&headers, &shared.config) {
        Ok(options) => options,
        Err(message) => return bad_request(message),
    };
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(format!("invalid request body: {err}")),
    };
    let fault = shared.next_fault(options.fault);
    if !shared.sleep(options.latency).await {
        return stopping_response();
    }
    if fault == Some(Fault::Echo) {
        return echo_response(&headers, "/v1/chat/completions");
    }
    if let Some(response) = fault.and_then(|fault| error_response(&shared, fault, &options)) {
        return response;
    }
    if fault == Some(Fault::Hang) {
        shared.stopping().await;
        return stopping_response();
    }

    let messages: Vec<(String, String, usize)> = request
        .messages
        .iter()
        .map(|message| {
            (
                message.role.clone(),
                text_of(message.content.as_ref()),
                message.tool_calls.as_ref().map_or(0, Vec::len),
            )
        })
        .collect();
    let turns: Vec<Turn<'_>> = messages
        .iter()
        .map(|(role, content, tool_calls)| Turn {
            role,
            content,
            tool_calls: *tool_calls,
        })
        .collect();
    let tools: Vec<&str> = request
        .tools
        .iter()
        .flatten()
        .map(|tool| tool.function.name.as_str())
        .collect();
    let reply = shared.script.reply(&turns, &tools);
    let finish_reason = if options.has(Quirk::EmptyFinishReason) {
        ""
    } else if reply.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let answer = Answer {
        id: format!("chatcmpl-mock-{}", shared.next_id()),
        model: request
            .model
            .clone()
            .unwrap_or_else(|| shared.config.model.clone()),
        prompt_tokens: script::prompt_tokens(messages.iter().map(|(_, text, _)| text.as_str())),
        completion_tokens: reply.completion_tokens(),
        reply,
        finish_reason,
    };

    let response = if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        stream(shared, answer, options, fault, include_usage)
    } else {
        whole(shared, answer, &options, fault)
    };
    if fault == Some(Fault::HugeHeader) {
        return with_huge_header(response);
    }
    response
}

/// The text of a JSON string, for answers written by hand.
fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn usage_json(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    })
}

/// A non-streamed answer.
fn whole(shared: Arc<Shared>, answer: Answer, options: &Options, fault: Option<Fault>) -> Response {
    let mut message = json!({
        "role": "assistant",
        "content": if answer.reply.text.is_empty() && !answer.reply.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(answer.reply.text.clone())
        },
    });
    if !answer.reply.tool_calls.is_empty() {
        message["tool_calls"] = answer
            .reply
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
    }
    let mut body = json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": 0,
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason}],
    });
    let with_usage = !options.has(Quirk::NoUsage);
    if with_usage {
        body["usage"] = usage_json(&answer);
    }
    let text = body.to_string();
    let half = Bytes::copy_from_slice(&text.as_bytes()[..text.len() / 2]);
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    match fault {
        Some(Fault::HugeBody | Fault::Endless) => {
            // A valid completion whose text is huge (or never ends).
            let filler = (fault == Some(Fault::HugeBody)).then_some(shared.config.huge_bytes);
            let head = format!(
                r#"{{"id":{},"object":"chat.completion","created":0,"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":""#,
                quoted(&answer.id),
                quoted(&answer.model)
            );
            let tail = r#""},"finish_reason":"stop"}]}"#.to_owned();
            let body = padded_body(shared, head, filler, tail);
            (StatusCode::OK, json_type, body).into_response()
        }
        Some(Fault::Malformed) => (
            StatusCode::OK,
            json_type,
            format!(r#"{{"id":"{}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"#, answer.id),
        )
            .into_response(),
        Some(Fault::Truncate) => (StatusCode::OK, json_type, half).into_response(),
        Some(Fault::Stall) => (StatusCode::OK, json_type, stalled_body(shared, half)).into_response(),
        _ => {
            if with_usage {
                shared.add_chat_usage(answer.prompt_tokens, answer.completion_tokens);
            }
            (StatusCode::OK, json_type, text).into_response()
        }
    }
}

/// Deltas of the streamed answer: word-sized text pieces, then each tool call in fragments
/// (the first carrying id and name, or the second with `late_tool_ids`). The first delta also
/// carries the role.
fn deltas(answer: &Answer, late_ids: bool) -> Vec<Value> {
    let mut deltas: Vec<Value> = script::word_pieces(&answer.reply.text)
        .into_iter()
        .map(|piece| json!({"content": piece}))
        .collect();
    for (index, call) in answer.reply.tool_calls.iter().enumerate() {
        let fragments = fragments(&call.arguments, 3);
        let named_at = usize::from(late_ids);
        for (at, fragment) in fragments.iter().enumerate() {
            let mut entry = json!({"index": index, "function": {"arguments": fragment}});
            if at == named_at {
                entry["id"] = json!(call.id);
                entry["type"] = json!("function");
                entry["function"]["name"] = json!(call.name);
            }
            deltas.push(json!({"tool_calls": [entry]}));
        }
    }
    match deltas.first_mut() {
        Some(first) => first["role"] = json!("assistant"),
        None => deltas.push(json!({"role": "assistant", "content": ""})),
    }
    deltas
}

/// Splits `text` into `parts` pieces on char boundaries (at least two, so that late ids have
/// a chunk to arrive in; pieces may be empty).
fn fragments(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts).max(1);
    let mut pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    while pieces.len() < 2 {
        pieces.push(String::new());
    }
    pieces
}

/// An SSE streamed answer, produced by a task so that latency and stalls are real.
fn stream(
    shared: Arc<Shared>,
    answer: Answer,
    options: Options,
    fault: Option<Fault>,
    include_usage: bool,
) -> Response {
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": answer.model,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    };
    let deltas: Vec<String> = deltas(&answer, options.has(Quirk::LateToolIds))
        .into_iter()
        .map(|delta| chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])))
        .collect();
    let finish = chunk(json!([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}]));
    let usage = (include_usage && !options.has(Quirk::NoUsage)).then(|| {
        let mut chunk = json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": answer.model,
            "choices": [],
        });
        chunk["usage"] = usage_json(&answer);
        chunk.to_string()
    });
    let tokens = (answer.prompt_tokens, answer.completion_tokens);
    let sse = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    match fault {
        Some(Fault::HugeBody) => {
            // One event whose text is huge, then a proper end.
            let head = format!(
                r#"data: {{"id":{},"object":"chat.completion.chunk","created":0,"model":{},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""#,
                quoted(&answer.id),
                quoted(&answer.model)
            );
            let tail =
                format!("\"}},\"finish_reason\":null}}]}}\n\ndata: {finish}\n\ndata: [DONE]\n\n");
            let size = shared.config.huge_bytes;
            let body = padded_body(shared, head, Some(size), tail);
            return (StatusCode::OK, sse, body).into_response();
        }
        Some(Fault::Endless) => {
            // Valid chunks of text, each small, without end.
            let piece = "a".repeat(16 * 1024);
            let event =
                chunk(json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]));
            let body = endless_body(shared, Bytes::from(format!("data: {event}\n\n")));
            return (StatusCode::OK, sse, body).into_response();
        }
        _ => {}
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut sent = 0_usize;
        // Sends one event, after the token latency unless it is the first; false to stop.
        let send = |data: String, sent: usize| {
            let tx = tx.clone();
            let shared = shared.clone();
            let delay = options.token_latency;
            async move {
                if sent > 0 && !shared.sleep(delay).await {
                    return false;
                }
                tx.send(Bytes::from(format!("data: {data}\n\n")))
                    .await
                    .is_ok()
            }
        };
        let half = (deltas.len() / 2).max(1);
        match fault {
            Some(Fault::Stall) => {
                if let Some(first) = deltas.first() {
                    if send(first.clone(), 0).await {
                        tokio::select! {
                            () = shared.stopping() => {}
                            () = tx.closed() => {}
                        }
                    }
                }
                return;
            }
            Some(Fault::Truncate) => {
                for delta in deltas.into_iter().take(half) {
                    if !send(delta, sent).await {
                        return;
                    }
                    sent += 1;
                }
                return;
            }
            _ => {}
        }
        let broken_at = (fault == Some(Fault::Malformed)).then_some(deltas.len() / 2);
        for (at, delta) in deltas.into_iter().enumerate() {
            if broken_at == Some(at) {
                let broken =
                    r#"{"id":"chatcmpl-mock","choices":[{"index":0,"delta":{"content":"bro"#;
                if !send(broken.to_owned(), sent).await {
                    return;
                }
                sent += 1;
            }
            if !send(delta, sent).await {
                return;
            }
            sent += 1;
        }
        if !send(finish, sent).await {
            return;
        }
        sent += 1;
        if let Some(usage) = usage {
            if !send(usage, sent).await {
                return;
            }
            shared.add_chat_usage(tokens.0, tokens.1);
            sent += 1;
        }
        let _ = send("[DONE]".to_owned(), sent).await;
    });
    (StatusCode::OK, sse, channel_body(rx)).into_response()
}
