//! Errors of workflow runs and of the API that submits and inspects them.

use troupe_runtime::pool::{PoolError, WorkFailure};
use troupe_runtime::retry::Transient;
use troupe_runtime::store::StoreError;

use super::template::RenderError;
use troupe_agents::error::AgentError;

/// What can go wrong with a workflow run.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The store failed; `is_retryable` says whether to try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An agent call failed (after the step's retries).
    #[error("step {step:?}: {source}")]
    Agent {
        /// The journal key of the call (`step` or `step/branch`).
        step: String,
        /// Why.
        source: AgentError,
    },
    /// A call could not be handed to its step's pool, or its item read back.
    #[error("step {step:?}: {source}")]
    Pool {
        /// The journal key of the call.
        step: String,
        /// Why.
        source: PoolError,
    },
    /// A call run as a work item ended without an answer (after the pool's retries).
    #[error("step {step:?} in pool {pool:?}: {error}")]
    PoolCall {
        /// The journal key of the call.
        step: String,
        /// The pool.
        pool: String,
        /// How the item ended: the kind of failure (a rate limit, bad input, a timeout…),
        /// its message and causes, as they crossed the pool.
        error: WorkFailure,
    },
    /// A knowledge step's search failed.
    #[error("step {step:?}: {source}")]
    Knowledge {
        /// The step.
        step: String,
        /// Why.
        source: troupe_agents::rag::RagError,
    },
    /// A step's input template could not be rendered.
    #[error("step {step:?}: {source}")]
    Template {
        /// The step.
        step: String,
        /// Why.
        source: RenderError,
    },
    /// An agent call of a step ran longer than the step's `timeout`.
    #[error("step {step:?} timed out after {after:?}")]
    Timeout {
        /// The journal key of the call.
        step: String,
        /// The step's timeout.
        after: std::time::Duration,
    },
    /// The agent did not finish its turn with an answer (it wanted an approval of a tool
    /// call, or hit its step limit): a workflow step needs an answer.
    #[error("step {step:?}: the agent ended without an answer ({status})")]
    NoAnswer {
        /// The journal key of the call.
        step: String,
        /// How the turn ended.
        status: String,
    },
    /// A route step got a label that matches no route and the step has no `default`.
    #[error("step {step:?}: no route for {answer:?} and no default")]
    NoRoute {
        /// The route step.
        step: String,
        /// The classifier's answer.
        answer: String,
    },
    /// A `wait_event` step's timeout passed without the event.
    #[error("step {step:?}: event {event:?} did not arrive in time")]
    EventTimeout {
        /// The step.
        step: String,
        /// The awaited event.
        event: String,
    },
    /// The run was canceled.
    #[error("canceled")]
    Canceled,
    /// This daemon stopped running the run (it is shutting down or lost the run's lease); the
    /// run is left in the store for another daemon.
    #[error("interrupted: {0}")]
    Interrupted(&'static str),
    /// No such thing (workflow, run, step) for this group.
    #[error("no {what} {id:?}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The run belongs to another group: nothing about it is shown or changed.
    #[error("run {run:?} belongs to another group")]
    Forbidden {
        /// The run.
        run: String,
    },
    /// Invalid input from a caller.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The run is still going: the request needs a finished run (restart from a step).
    #[error("run {run:?} is still unfinished")]
    Active {
        /// The run.
        run: String,
    },
    /// A persisted record could not be decoded.
    #[error("corrupt record at {key}: {message}")]
    Corrupt {
        /// The store key.
        key: String,
        /// What was wrong.
        message: String,
    },
}

impl WorkflowError {
    /// Whether the run should stay unfinished in the store (for this or another daemon to
    /// continue) rather than be marked failed.
    pub fn leaves_run_open(&self) -> bool {
        match self {
            WorkflowError::Interrupted(_) => true,
            WorkflowError::Store(err) => err.is_retryable(),
            // The pool is stopping or restarting: a later adoption hands the call over again.
            WorkflowError::Pool { source, .. } => source.is_retryable(),
            WorkflowError::Agent { .. }
            | WorkflowError::PoolCall { .. }
            | WorkflowError::Knowledge { .. }
            | WorkflowError::Template { .. }
            | WorkflowError::Timeout { .. }
            | WorkflowError::NoAnswer { .. }
            | WorkflowError::NoRoute { .. }
            | WorkflowError::EventTimeout { .. }
            | WorkflowError::Canceled
            | WorkflowError::NotFound { .. }
            | WorkflowError::Forbidden { .. }
            | WorkflowError::Invalid { .. }
            | WorkflowError::Active { .. }
            | WorkflowError::Corrupt { .. } => false,
        }
    }
}

impl Transient for WorkflowError {
    /// The store's, the agent's, the search's and the pool's own decisions, and a step's
    /// timeout. A call that failed in its pool was retried there already; the rest are
    /// decisions of the run (no route, no answer, canceled, interrupted) or the caller's
    /// mistakes.
    fn is_retryable(&self) -> bool {
        match self {
            WorkflowError::Store(err) => err.is_retryable(),
            WorkflowError::Agent { source, .. } => source.is_retryable(),
            WorkflowError::Timeout { .. } => true,
            WorkflowError::Knowledge { source, .. } => source.is_retryable(),
            WorkflowError::Pool { source, .. } => source.is_retryable(),
            WorkflowError::PoolCall { .. }
            | WorkflowError::Template { .. }
            | WorkflowError::NoAnswer { .. }
            | WorkflowError::NoRoute { .. }
            | WorkflowError::EventTimeout { .. }
            | WorkflowError::Canceled
            | WorkflowError::Interrupted(_)
            | WorkflowError::NotFound { .. }
            | WorkflowError::Forbidden { .. }
            | WorkflowError::Invalid { .. }
            | WorkflowError::Active { .. }
            | WorkflowError::Corrupt { .. } => false,
        }
    }
}

impl From<troupe_runtime::key_name::InvalidKeyName> for WorkflowError {
    fn from(err: troupe_runtime::key_name::InvalidKeyName) -> Self {
        WorkflowError::Invalid {
            what: err.what,
            message: err.detail(),
        }
    }
}
