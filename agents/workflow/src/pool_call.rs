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
use troupe_runtime::pool::{handler_fn, Work, WorkError, WorkErrorKind, WorkHandler};
use troupe_runtime::retry::Transient;
use troupe_runtime::store::Write;

use troupe_agents::conversations::Conversations;
use troupe_agents::error::AgentError;
use troupe_agents::model::ModelError;
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
    /// The run's retention (`[daemon] run_retention`), in ms: the call's thread expires after
    /// it, like the run's keys (absent in items of older daemons: the thread retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
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
    /// As a pool attempt's error: its retry decision ([`Transient`]), its [`kind`](Self::kind)
    /// and its message chain, so that the run awaiting the item can tell a rate limit from
    /// bad input.
    pub fn to_work_error(&self) -> WorkError {
        WorkError::from_error(self.kind(), self)
    }

    /// The kind of failure, as it crosses the pool: an agent error's kind (as
    /// `AgentError::kind` names it), a timeout, or a turn without an answer.
    pub fn kind(&self) -> WorkErrorKind {
        match self {
            CallFailure::Agent(err) => agent_kind(err),
            CallFailure::Timeout(_) => WorkErrorKind::Timeout,
            CallFailure::NoAnswer(_) => WorkErrorKind::NoAnswer,
        }
    }
}

impl Transient for CallFailure {
    /// Agent errors keep their retry decision, timeouts are retried, a turn without an answer
    /// is not. No wait of its own: the pool's backoff paces the retries.
    fn is_retryable(&self) -> bool {
        match self {
            CallFailure::Agent(err) => err.is_retryable(),
            CallFailure::Timeout(_) => true,
            CallFailure::NoAnswer(_) => false,
        }
    }
}

/// The kind of an agent error as a work failure.
fn agent_kind(err: &AgentError) -> WorkErrorKind {
    match err {
        AgentError::Store(_) => WorkErrorKind::Store,
        AgentError::Model(ModelError::BudgetExceeded { .. }) => WorkErrorKind::Budget,
        AgentError::Model(ModelError::RateLimited { .. }) | AgentError::Limit(_) => {
            WorkErrorKind::RateLimited
        }
        AgentError::Model(_) => WorkErrorKind::Model,
        AgentError::Tool(_) => WorkErrorKind::Tool,
        AgentError::Invalid { .. } => WorkErrorKind::Invalid,
        AgentError::NotFound { .. } => WorkErrorKind::NotFound,
        AgentError::Forbidden { .. } => WorkErrorKind::Forbidden,
        AgentError::Conflict { .. }
        | AgentError::Archived { .. }
        | AgentError::AwaitingApproval { .. } => WorkErrorKind::Conflict,
        AgentError::Busy { .. } | AgentError::LeaseLost { .. } => WorkErrorKind::Busy,
        AgentError::Actor(_) | AgentError::Corrupt { .. } => WorkErrorKind::Internal,
    }
}

impl Call {
    /// The step's timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// Makes the call in its own one-shot thread, within the timeout: the answer, and the
    /// writes that store the call's thread and usage, for the caller's batch. A call without
    /// an answer (step limit, a tool approval) has its thread written before it fails.
    pub async fn perform(&self, talk: &Conversations) -> Result<(String, Vec<Write>), CallFailure> {
        let new = NewThread {
            group: self.group.clone(),
            user: self.user.clone(),
            id: Some(self.thread.clone()),
            title: troupe_runtime::key_name::join(&[
                &self.workflow,
                " ",
                &self.run,
                " ",
                &self.step,
            ]),
            metadata: serde_json::json!({
                "workflow": self.workflow, "run": self.run, "step": self.step,
            }),
        };
        let retention = self.retention_ms.map(Duration::from_millis);
        let ask = talk.ask_once(new, &self.agent, self.input.clone(), retention);
        let (outcome, writes) = match self.timeout() {
            Some(after) => tokio::time::timeout(after, ask)
                .await
                .map_err(|_| CallFailure::Timeout(after))?,
            None => ask.await,
        }?;
        let why = match outcome.status {
            TurnStatus::Completed => return Ok((outcome.answer, writes)),
            TurnStatus::AwaitingApproval { .. } => "awaiting a tool approval",
            TurnStatus::StepLimit => "step limit",
        };
        talk.store()
            .apply(writes)
            .await
            .map_err(|err| CallFailure::Agent(err.into()))?;
        Err(CallFailure::NoAnswer(why))
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
                    .with_kind(WorkErrorKind::Invalid)
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
            let answer = async {
                let (answer, writes) = call.perform(&talk).await?;
                talk.store()
                    .apply(writes)
                    .await
                    .map_err(|err| CallFailure::Agent(err.into()))?;
                Ok::<_, CallFailure>(answer)
            }
            .instrument(span)
            .await
            .map_err(|failure| failure.to_work_error())?;
            Ok(serde_json::json!({ "answer": answer }))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use troupe_runtime::pool::WorkFailure;

    use super::*;
    use crate::error::WorkflowError;

    #[test]
    fn a_failed_call_crosses_the_pool_with_its_kind_and_retry_decision() {
        let limited = CallFailure::Agent(AgentError::Model(ModelError::RateLimited {
            model: "m".into(),
            retry_after: Some(Duration::from_secs(3)),
        }));
        let error = limited.to_work_error();
        assert!(error.is_retryable());
        assert_eq!(error.kind(), WorkErrorKind::RateLimited);
        assert_eq!(error.message(), limited.to_string());
        // The pool's backoff paces a call's retries, as before kinds were kept.
        assert_eq!(Transient::retry_after(&error), None);

        let invalid = CallFailure::Agent(AgentError::Invalid {
            what: "message",
            message: "empty".into(),
        });
        let error = invalid.to_work_error();
        assert!(!error.is_retryable());
        assert_eq!(error.kind(), WorkErrorKind::Invalid);

        let timeout = CallFailure::Timeout(Duration::from_secs(1)).to_work_error();
        assert!(timeout.is_retryable());
        assert_eq!(timeout.kind(), WorkErrorKind::Timeout);
        let no_answer = CallFailure::NoAnswer("step limit").to_work_error();
        assert!(!no_answer.is_retryable());
        assert_eq!(no_answer.kind(), WorkErrorKind::NoAnswer);
        let budget = CallFailure::Agent(AgentError::Model(ModelError::BudgetExceeded {
            scope: "g".into(),
            message: "spent".into(),
        }));
        assert_eq!(budget.kind(), WorkErrorKind::Budget);
    }

    #[test]
    fn a_pool_call_error_keeps_the_kind_and_reads_as_before() {
        let error = WorkflowError::PoolCall {
            step: "ask".into(),
            pool: "llm".into(),
            error: WorkFailure::new(WorkErrorKind::RateLimited, "model m: rate limited"),
        };
        assert_eq!(
            error.to_string(),
            "step \"ask\" in pool \"llm\": model m: rate limited"
        );
        assert!(!error.is_retryable(), "the pool retried it already");
        assert!(!error.leaves_run_open());
        let WorkflowError::PoolCall { error, .. } = error else {
            unreachable!()
        };
        assert_eq!(error.kind, WorkErrorKind::RateLimited);
    }
}
