//! The OpenAI chat-completions wire format as troupe sends and reads it: a request built from a
//! [`ChatRequest`], and tolerant response types (every field optional, unknown values kept as
//! text) so that quirks of vLLM, Ollama and llama.cpp are parsed, not fatal. Streamed chunks
//! are assembled by [`Assembly`], bounded in bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatRequest, ChatResponse, Embeddings, FinishReason, ModelError, Usage};
use crate::message::{Role, ToolCall};

/// A chat completion request body.
#[derive(Debug, Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    /// `null` for an assistant message that only calls tools.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutgoingCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct OutgoingCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutgoingFunction<'a>,
}

#[derive(Debug, Serialize)]
struct OutgoingFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ToolFunction<'a>,
}

#[derive(Debug, Serialize)]
struct ToolFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> Request<'a> {
    /// The body for `request`; streamed requests ask for usage in a final chunk.
    pub(super) fn new(model: &'a str, request: &'a ChatRequest, stream: bool) -> Request<'a> {
        let messages = request
            .messages
            .iter()
            .map(|message| Message {
                role: match message.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                },
                content: if message.content.is_empty() && !message.tool_calls.is_empty() {
                    None
                } else {
                    Some(&message.content)
                },
                tool_calls: message
                    .tool_calls
                    .iter()
                    .map(|call| OutgoingCall {
                        id: &call.id,
                        kind: "function",
                        function: OutgoingFunction {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
                tool_call_id: message.tool_call_id.as_deref(),
            })
            .collect();
        Request {
            model,
            messages,
            tools: request
                .tools
                .iter()
                .map(|tool| Tool {
                    kind: "function",
                    function: ToolFunction {
                        name: &tool.name,
                        description: &tool.description,
                        parameters: &tool.parameters,
                    },
                })
                .collect(),
            // Through f64 with 3 decimals, so that 0.2 is sent as 0.2, not 0.20000000298.
            temperature: request
                .temperature
                .map(|t| (f64::from(t) * 1000.0).round() / 1000.0),
            max_tokens: request.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

/// An embeddings request body.
#[derive(Debug, Serialize)]
pub(super) struct EmbeddingRequest<'a> {
    pub(super) model: &'a str,
    pub(super) input: &'a [String],
    pub(super) encoding_format: &'static str,
}

/// A non-streamed chat completion.
#[derive(Debug, Deserialize)]
pub(super) struct Response {
    model: Option<String>,
    choices: Option<Vec<Choice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<ReplyMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReplyMessage {
    content: Option<Value>,
    tool_calls: Option<Vec<IncomingCall>>,
}

/// A tool call, whole or a streamed fragment.
#[derive(Debug, Deserialize)]
struct IncomingCall {
    index: Option<u32>,
    id: Option<String>,
    function: Option<IncomingFunction>,
}

#[derive(Debug, Deserialize)]
struct IncomingFunction {
    name: Option<String>,
    /// A string normally; some servers send an object.
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// One streamed chunk.
#[derive(Debug, Deserialize)]
pub(super) struct Chunk {
    model: Option<String>,
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<IncomingCall>>,
}

/// An embeddings response.
#[derive(Debug, Deserialize)]
pub(super) struct EmbeddingResponse {
    data: Option<Vec<EmbeddingData>>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingData {
    index: Option<usize>,
    embedding: Vec<f32>,
}

fn usage(wire: Option<WireUsage>) -> Option<Usage> {
    let wire = wire?;
    if wire.prompt_tokens.is_none() && wire.completion_tokens.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: wire.prompt_tokens.unwrap_or(0),
        output_tokens: wire.completion_tokens.unwrap_or(0),
    })
}

/// `finish_reason` as troupe knows it; `""`, absent and unknown values are `Unknown`.
pub(super) fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Unknown,
    }
}

/// The start of a text, for error messages (at most 300 characters, whitespace collapsed).
pub(super) fn excerpt(text: &str) -> String {
    const LIMIT: usize = 300;
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}…", &collapsed[..at]),
        None => collapsed,
    }
}

fn malformed(model: &str, message: impl Into<String>) -> ModelError {
    ModelError::MalformedResponse {
        model: model.to_owned(),
        message: message.into(),
    }
}

/// An error object sent with status 200 (in a body or mid-stream).
fn carried_error(model: &str, error: &Value) -> ModelError {
    ModelError::Provider {
        model: model.to_owned(),
        status: 200,
        body: excerpt(&error.to_string()),
    }
}

fn text_of(content: Option<Value>) -> String {
    match content {
        Some(Value::String(text)) => text,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl Response {
    /// The answer, for the configured model `name`.
    pub(super) fn into_chat(
        self,
        name: &str,
        fallback_model: &str,
    ) -> Result<ChatResponse, ModelError> {
        if let Some(error) = &self.error {
            return Err(carried_error(name, error));
        }
        let choice = self
            .choices
            .and_then(|choices| choices.into_iter().next())
            .ok_or_else(|| malformed(name, "the response has no choices"))?;
        let message = choice
            .message
            .ok_or_else(|| malformed(name, "the choice has no message"))?;
        // The body was bounded as it was read: nothing more to count here.
        let mut calls = Assembly::new(usize::MAX);
        for (position, call) in message.tool_calls.into_iter().flatten().enumerate() {
            calls.add_call(position, call);
        }
        Ok(ChatResponse {
            content: text_of(message.content),
            tool_calls: calls.tool_calls(name)?,
            finish: finish_reason(choice.finish_reason.as_deref()),
            usage: usage(self.usage),
            model: self.model.unwrap_or_else(|| fallback_model.to_owned()),
        })
    }
}

impl EmbeddingResponse {
    /// The vectors in input order; exactly `expected` of them.
    pub(super) fn into_embeddings(
        self,
        name: &str,
        expected: usize,
    ) -> Result<Embeddings, ModelError> {
        let mut data = self.data.unwrap_or_default();
        if data.len() != expected {
            return Err(malformed(
                name,
                format!("{} embeddings for {expected} inputs", data.len()),
            ));
        }
        if data.iter().all(|item| item.index.is_some()) {
            data.sort_by_key(|item| item.index);
        }
        Ok(Embeddings {
            vectors: data.into_iter().map(|item| item.embedding).collect(),
            usage: usage(self.usage),
        })
    }
}

/// A tool call being assembled from fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// What a tool call being assembled costs beyond its text, against the bound: a flood of
/// empty fragments with distinct indexes is bounded too.
const CALL_OVERHEAD: usize = 32;

/// A streamed answer being assembled: text, tool calls by index (id and name may arrive in a
/// later fragment than the first arguments), finish reason and usage. At most `max_bytes` of
/// text, tool-call ids, names and arguments are assembled; past that, [`Assembly::apply`]
/// fails with [`ModelError::ResponseTooLarge`].
#[derive(Debug)]
pub(super) struct Assembly {
    content: String,
    calls: BTreeMap<u32, PartialCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    chunks: usize,
    max_bytes: usize,
    received: usize,
}

impl Assembly {
    /// An empty answer that may grow to `max_bytes`.
    pub(super) fn new(max_bytes: usize) -> Assembly {
        Assembly {
            content: String::new(),
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
            model: None,
            chunks: 0,
            max_bytes,
            received: 0,
        }
    }

    /// Chunks applied so far.
    pub(super) fn chunks(&self) -> usize {
        self.chunks
    }

    /// Applies a chunk; returns its text delta, if any.
    pub(super) fn apply(&mut self, name: &str, chunk: Chunk) -> Result<Option<String>, ModelError> {
        self.chunks += 1;
        if let Some(error) = &chunk.error {
            return Err(carried_error(name, error));
        }
        if chunk.model.is_some() {
            self.model = chunk.model;
        }
        if let Some(usage) = usage(chunk.usage) {
            self.usage = Some(usage);
        }
        let mut text = String::new();
        for choice in chunk.choices.into_iter().flatten() {
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(content) = delta.content {
                self.count(name, content.len())?;
                text.push_str(&content);
            }
            for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
                let added = self.add_call(position, call);
                self.count(name, added)?;
            }
        }
        self.content.push_str(&text);
        Ok((!text.is_empty()).then_some(text))
    }

    /// Adds `bytes` to what was assembled; fails past the bound.
    fn count(&mut self, name: &str, bytes: usize) -> Result<(), ModelError> {
        self.received = self.received.saturating_add(bytes);
        if self.received > self.max_bytes {
            return Err(ModelError::ResponseTooLarge {
                model: name.to_owned(),
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Applies a tool-call fragment; returns the bytes it added (ids, names, arguments, and
    /// [`CALL_OVERHEAD`] for a new call).
    fn add_call(&mut self, position: usize, call: IncomingCall) -> usize {
        let index = call
            .index
            .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
        let mut added = 0;
        let partial = self.calls.entry(index).or_insert_with(|| {
            added += CALL_OVERHEAD;
            PartialCall::default()
        });
        if let Some(id) = call.id.filter(|id| !id.is_empty()) {
            added += id.len();
            partial.id = Some(id);
        }
        if let Some(function) = call.function {
            if let Some(name) = function.name.filter(|name| !name.is_empty()) {
                added += name.len();
                partial.name = Some(name);
            }
            match function.arguments {
                // A whole object replaces nothing-so-far; fragments are appended.
                Some(Value::Object(object)) if partial.arguments.is_empty() => {
                    partial.arguments = Value::Object(object).to_string();
                    added += partial.arguments.len();
                }
                other => {
                    let text = arguments_text(other);
                    added += text.len();
                    partial.arguments.push_str(&text);
                }
            }
        }
        added
    }

    fn tool_calls(&mut self, name: &str) -> Result<Vec<ToolCall>, ModelError> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, call)| {
                let tool = call.name.ok_or_else(|| {
                    malformed(name, format!("tool call #{index} has no function name"))
                })?;
                Ok(ToolCall {
                    id: call.id.unwrap_or_else(|| format!("call_{index}")),
                    name: tool,
                    arguments: call.arguments,
                })
            })
            .collect()
    }

    /// The complete answer. A stream that ended without any `finish_reason` was cut off: that
    /// is a [`ModelError::Connection`] (retried only when no delta was sent), never a
    /// silently truncated answer.
    pub(super) fn finish(
        mut self,
        name: &str,
        fallback_model: &str,
    ) -> Result<ChatResponse, ModelError> {
        let Some(reason) = self.finish.take() else {
            return Err(ModelError::Connection {
                model: name.to_owned(),
                message: format!(
                    "the stream ended after {} chunks without a finish_reason",
                    self.chunks
                ),
            });
        };
        Ok(ChatResponse {
            tool_calls: self.tool_calls(name)?,
            content: self.content,
            finish: finish_reason(Some(&reason)),
            usage: self.usage,
            model: self.model.unwrap_or_else(|| fallback_model.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests;
