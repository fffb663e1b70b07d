//! The messages a [`ThreadActor`](super::ThreadActor) takes and what they answer.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::message::ToolCall;
use crate::model::Usage;
use crate::thread_store::{ThreadInfo, ThreadMessage};

/// A user message for an agent to answer.
#[derive(Debug, Message)]
#[rtype(result = "Result<TurnOutcome, AgentError>")]
pub struct Turn {
    /// The agent that answers.
    pub agent: String,
    /// The user writing.
    pub user: String,
    /// The message.
    pub input: String,
    /// Stream the answer's deltas to the turn's delta stream.
    pub stream: bool,
    /// Told the delta stream as soon as it is open (streamed turns only).
    pub started: Option<StreamStarted>,
}

/// Where a streamed turn's deltas go, sent as soon as the stream is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The thread.
    pub thread: String,
    /// The delta stream.
    pub stream: String,
}

/// Receives the [`StreamStart`] of a streamed turn.
pub type StreamStarted = tokio::sync::mpsc::UnboundedSender<StreamStart>;

/// Resolves the pending approval of a paused turn and resumes it.
#[derive(Debug, Message)]
#[rtype(result = "Result<TurnOutcome, AgentError>")]
pub struct Approve {
    /// The approval id from [`TurnStatus::AwaitingApproval`].
    pub approval: String,
    /// Run the calls (`true`) or refuse them (`false`).
    pub approve: bool,
}

/// Reads messages `from..from+limit`, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Result<MessagePage, AgentError>")]
pub struct ReadMessages {
    /// First position.
    pub from: u64,
    /// At most this many.
    pub limit: usize,
}

/// Archives the thread: readable, but it takes no new turns.
#[derive(Debug, Message)]
#[rtype(result = "Result<ThreadInfo, AgentError>")]
pub struct Archive;

/// Deletes the thread and everything in it; the actor stops.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Delete;

/// A page of messages.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// The messages, oldest first.
    pub messages: Vec<ThreadMessage>,
    /// The thread's length.
    pub total: u64,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TurnStatus {
    /// The agent answered.
    Completed,
    /// The agent wants tools that need approval; resume with [`Approve`].
    AwaitingApproval {
        /// The approval to resolve.
        approval: String,
        /// The calls waiting.
        calls: Vec<ToolCall>,
    },
    /// The agent hit its `max_steps` without a final answer.
    StepLimit,
}

/// The result of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// The thread id.
    pub thread: String,
    /// Position of the last message written.
    pub seq: u64,
    /// The final answer (empty unless completed).
    pub answer: String,
    /// How it ended.
    pub status: TurnStatus,
    /// Tokens over all model calls of the turn.
    pub usage: Usage,
    /// Model calls made.
    pub model_calls: u32,
    /// The delta stream, when streamed.
    pub delta_stream: Option<String>,
}
