//! The scripted model: deterministic, in-process, no network — the embedded default, demos and
//! tests. It answers by rules (a rules file, or the built-in behaviour; the format is
//! documented in `troupe_mock_llm::script` and `examples/scripted/rules.toml`) or replays a
//! cassette recorded by an `openai` model. It streams word-sized deltas and reports usage by
//! the same word-count rule as the mock server.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use troupe_config::{ModelSettings, Provider};
use troupe_mock_llm::script::{self, Script, Turn, DEFAULT_DIMENSIONS};

use super::cassette::Replay;
use super::{
    ChatRequest, ChatResponse, DeltaSink, Embeddings, FinishReason, ModelError, ModelService, Usage,
};
use crate::message::{Role, ToolCall};

/// Where the answers come from.
#[derive(Debug)]
enum Source {
    Script(Script),
    Cassette(Mutex<Replay>),
}

/// A deterministic model answering by rules or from a cassette.
#[derive(Debug)]
pub struct ScriptedModel {
    name: String,
    source: Source,
    latency: Duration,
}

impl ScriptedModel {
    /// The model configured as `[models.NAME]` (`provider = "scripted"`): reads its rules file
    /// or cassette now.
    pub fn new(name: &str, settings: &ModelSettings) -> Result<ScriptedModel, ModelError> {
        let Provider::Scripted {
            script,
            cassette,
            latency,
        } = &settings.provider
        else {
            return Err(ModelError::invalid_request(name, "not a scripted model"));
        };
        let source = match (cassette, script) {
            (Some(cassette), _) => Source::Cassette(Mutex::new(Replay::load(name, cassette)?)),
            (None, Some(path)) => Source::Script(Script::from_file(path).map_err(|err| {
                ModelError::InvalidRequest {
                    model: name.to_owned(),
                    message: err.to_string(),
                }
            })?),
            (None, None) => Source::Script(Script::default()),
        };
        Ok(ScriptedModel {
            name: name.to_owned(),
            source,
            latency: *latency,
        })
    }

    fn no_reply(&self, message: &str) -> ModelError {
        ModelError::NoScriptedReply {
            model: self.name.clone(),
            message: message.to_owned(),
        }
    }

    fn by_script(&self, script: &Script, request: &ChatRequest) -> ChatResponse {
        let turns: Vec<Turn<'_>> = request
            .messages
            .iter()
            .map(|message| Turn {
                role: match message.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                },
                content: &message.content,
                tool_calls: message.tool_calls.len(),
            })
            .collect();
        let tools = request.tool_names();
        let reply = script.reply(&turns, &tools);
        let usage = Usage {
            input_tokens: script::prompt_tokens(turns.iter().map(|turn| turn.content)),
            output_tokens: reply.completion_tokens(),
        };
        ChatResponse {
            finish: if reply.tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            content: reply.text,
            tool_calls: reply
                .tool_calls
                .into_iter()
                .map(|call| ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                })
                .collect(),
            usage: Some(usage),
            model: self.name.clone(),
        }
    }
}

#[async_trait]
impl ModelService for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        deltas: Option<DeltaSink>,
    ) -> Result<ChatResponse, ModelError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let response = match &self.source {
            Source::Script(script) => self.by_script(script, request),
            Source::Cassette(replay) => replay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .chat(request)
                .ok_or_else(|| {
                    self.no_reply("the cassette has no exchange left for this request")
                })?,
        };
        if let Some(sink) = deltas {
            for piece in script::word_pieces(&response.content) {
                // A receiver that went away does not stop the answer.
                let _ = sink.send(piece.to_owned());
            }
        }
        Ok(response)
    }

    async fn embed(&self, inputs: &[String]) -> Result<Embeddings, ModelError> {
        match &self.source {
            Source::Script(_) => Ok(Embeddings {
                vectors: inputs
                    .iter()
                    .map(|text| script::embed(text, DEFAULT_DIMENSIONS))
                    .collect(),
                usage: Some(Usage {
                    input_tokens: script::prompt_tokens(inputs.iter().map(String::as_str)),
                    output_tokens: 0,
                }),
            }),
            Source::Cassette(replay) => replay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .embed(inputs)
                .ok_or_else(|| self.no_reply("the cassette recorded no embedding of these inputs")),
        }
    }
}
