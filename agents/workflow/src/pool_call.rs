//! One agent call of a workflow step: what it asks ([`Call`]), how it is made, and the
//! `workflow_call` work handler that makes it as an item of a `[pools.NAME]`.
//!
//! A step that names a pool does not call its agent itself: the run enqueues a
//! [`WORKFLOW_CALL`] item in that pool (its id is the call's thread id, so a call repeated
//! after a crash finds the first item instead of asking again) and awaits the item's end.
//! The pool's `max_parallelism` then bounds the calls of every run of every daemon sharing the
//! store, and its retry policy retries them. Steps without a pool make the same call in the
//! run's own task.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use troupe_runtime::pool::{handler_fn, Work, WorkError, WorkHandler};

use troupe_agents::conversations::Conversations;
use troupe_agents::error::AgentError;
use troupe_agents::thread::TurnStatus;
use troupe_agents::thread_store::NewThread;

/// The kind of the work items that run workflow calls.
pub const WORKFLOW_CALL: &str = "workflow_call";

/// One agent call of a run: the payload of a [`WORKFLOW_CALL`] item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The workflow.
    pub workflow: String,
    /// The run.
    pub run: String,
    /// The call's journal key (`step`, `step/branch`).
    pub step: String,
    /// The run's group.
    pub group: String,
    /// The run's user.
    pub user: String,
    /// The agent asked.
    pub agent: String,
    /// The call's own thread, [`call_id`](super::journal::call_id):
    /// `wf-{run}[-r{restarts}].{step}[.{branch}]`.
    pub thread: String,
    /// What the agent is asked.
    pub input: String,
    /// The step's `timeout`, per attempt, in ms.
    pub timeout_ms: Option<u64>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// The agent (or its thread) failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The attempt ran longer than the step's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The turn ended without an answer (how, in words).
    #[error("the agent ended without an answer ({0})")]
    NoAnswer(&'static str),
}

impl CallFailure {
    /// As a pool attempt's error: agent errors keep their retry decision, timeouts are
    /// retried, a turn without an answer is not.
    pub fn to_work_error(&self) -> WorkError {
        let retryable = match self {
            CallFailure::Agent(err) => err.is_retryable(),
            CallFailure::Timeout(_) => true,
            CallFailure::NoAnswer(_) => false,
        };
        if retryable {
            WorkError::retryable(self.to_string())
        } else {
            WorkError::non_retryable(self.to_string())
        }
    }
}

impl Call {
    /// The step's timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// Makes the call in its own thread (created, or continued by a call made again), within
    /// the timeout.
    pub async fn perform(&self, talk: &Conversations) -> Result<String, CallFailure> {
        let new = NewThread {
            group: self.group.clone(),
            user: self.user.clone(),
            id: Some(self.thread.clone()),
            title: format!("{} {} {}", self.workflow, self.run, self.step),
            metadata: serde_json::json!({
                "workflow": self.workflow, "run": self.run, "step": self.step,
            }),
        };
        let ask = talk.ask_once(new, &self.agent, self.input.clone());
        let outcome = match self.timeout() {
            Some(after) => tokio::time::timeout(after, ask)
                .await
                .map_err(|_| CallFailure::Timeout(after))?,
            None => ask.await,
        }?;
        match outcome.status {
            TurnStatus::Completed => Ok(outcome.answer),
            TurnStatus::AwaitingApproval { .. } => {
                Err(CallFailure::NoAnswer("awaiting a tool approval"))
            }
            TurnStatus::StepLimit => Err(CallFailure::NoAnswer("step limit")),
        }
    }
}

/// The answer in a succeeded item's output.
pub fn answer_of(output: &serde_json::Value) -> Option<&str> {
    output.get("answer").and_then(serde_json::Value::as_str)
}

/// The handler of [`WORKFLOW_CALL`] items: performs the call, answers `{"answer": …}`.
pub fn handler(talk: Conversations) -> Arc<dyn WorkHandler> {
    handler_fn(move |work: Work| {
        let talk = talk.clone();
        async move {
            let call: Call = serde_json::from_value(work.payload).map_err(|err| {
                WorkError::non_retryable(format!("not a workflow call payload: {err}"))
            })?;
            let span = tracing::info_span!(
                "workflow.call",
                workflow = %call.workflow,
                run = %call.run,
                step = %call.step,
                group = %call.group,
                agent = %call.agent,
                attempt = work.attempt,
            );
            let answer = call
                .perform(&talk)
                .instrument(span)
                .await
                .map_err(|failure| failure.to_work_error())?;
            Ok(serde_json::json!({ "answer": answer }))
        }
    })
}
