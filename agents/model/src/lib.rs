//! troupe-model: model services, the one boundary between agents and language models, and
//! the chat messages they exchange ([`message`]).
//!
//! [`ModelService`] is implemented by [`OpenAiModel`] (async-openai against any
//! OpenAI-compatible server) and [`ScriptedModel`] (deterministic rules or a recorded cassette,
//! no network). Agents hold an `Arc<dyn ModelService>` made by [`build`], so tests swap one for
//! the other.
//!
//! - `openai.rs`: the HTTP model (timeouts, retries, streaming, tool calls, embeddings).
//! - `wire.rs`: the tolerant OpenAI wire types; `transport.rs`: HTTP, auth and error mapping.
//! - `retry.rs`: the runtime's retry loop for model calls (equal jitter, bounded in attempts
//!   and time).
//! - `scripted.rs`: the scripted model; `cassette.rs`: recording and replaying exchanges.
//! - `fuzzing.rs`: the response decoders without HTTP, for the fuzz targets (feature
//!   `fuzzing`).

#![warn(missing_docs)]

mod cassette;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
mod openai;
mod retry;
mod scripted;
mod transport;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

pub use self::error::ModelError;
pub use self::openai::OpenAiModel;
pub use self::scripted::ScriptedModel;
use crate::message::{ChatMessage, ToolCall};
use troupe_config::{ModelSettings, Provider};
pub use troupe_tools::ToolSchema;

/// The model service configured as `[models.NAME]`: an [`OpenAiModel`] or a
/// [`ScriptedModel`]. Fails when a rules file or cassette cannot be read, or the HTTP client
/// cannot be built; a missing API key is reported at the first call.
pub fn build(name: &str, settings: &ModelSettings) -> Result<Arc<dyn ModelService>, ModelError> {
    Ok(match settings.provider {
        Provider::Openai { .. } => Arc::new(OpenAiModel::new(name, settings)?),
        Provider::Scripted { .. } => Arc::new(ScriptedModel::new(name, settings)?),
    })
}

/// One chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far, system message first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call (already filtered by the agent's allowlist).
    pub tools: Vec<ToolSchema>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound of generated tokens.
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// The names of the offered tools, in order.
    pub(crate) fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|tool| tool.name.as_str()).collect()
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A complete answer.
    Stop,
    /// It wants tool calls run.
    ToolCalls,
    /// It hit `max_tokens`.
    Length,
    /// The provider filtered the content.
    ContentFilter,
    /// Not reported, or a value this client does not know (e.g. `""` from some servers).
    Unknown,
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// A model's complete answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The text (empty when the model only calls tools).
    pub content: String,
    /// Tool calls, assembled from their chunks when streamed.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Usage as reported by the provider; `None` when the server does not report it.
    pub usage: Option<Usage>,
    /// The model name the provider reported (or the configured one).
    pub model: String,
}

/// One embedding request's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Usage as reported (`output_tokens` is 0).
    pub usage: Option<Usage>,
}

/// Where streamed text deltas go, in order, as they arrive.
pub type DeltaSink = UnboundedSender<String>;

/// A language model.
#[async_trait]
pub trait ModelService: Send + Sync + 'static {
    /// The configured model's name (`[models.NAME]`), for usage records and spans.
    fn name(&self) -> &str;

    /// Runs one chat completion. With `deltas`, the answer is streamed and every text delta
    /// is sent there as it arrives; the complete answer is returned either way.
    ///
    /// Retries of transient failures (429, 5xx, connection errors) happen inside, bounded in
    /// attempts and total time; the error returned is the last one.
    async fn chat(
        &self,
        request: &ChatRequest,
        deltas: Option<DeltaSink>,
    ) -> Result<ChatResponse, ModelError>;

    /// Embeds texts.
    async fn embed(&self, inputs: &[String]) -> Result<Embeddings, ModelError>;
}
