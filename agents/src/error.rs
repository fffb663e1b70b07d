//! Errors of the agents crate: threads, agent runs and the services they call.

use troupe_runtime::error_kind::ErrorKind;
use troupe_runtime::retry::Transient;
use troupe_runtime::store::StoreError;
use troupe_runtime::ActorError;

use crate::model::ModelError;

/// What can go wrong in a thread or an agent run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The store failed; `is_retryable` says whether to try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The actor that owns the work failed or stopped.
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// The model call failed (after its own bounded retries).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A rate limit refused the call (after waiting up to its bound).
    #[error(transparent)]
    Limit(#[from] troupe_runtime::limit::LimitError),
    /// Tools could not be set up (a tool call's failure is a message to the model instead).
    #[error(transparent)]
    Tool(#[from] troupe_tools::ToolError),
    /// A persisted record could not be decoded.
    #[error("corrupt record at {key}: {message}")]
    Corrupt {
        /// The store key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// Invalid input from a caller.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// No such thing (thread, agent, approval).
    #[error("no {what} {id:?}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// It belongs to another group.
    #[error("group {group:?} may not access {what} {id:?}")]
    Forbidden {
        /// The caller's group.
        group: String,
        /// What was asked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// An explicit id is already taken.
    #[error("{what} {id:?} already exists")]
    Conflict {
        /// What.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The thread is archived and takes no new messages.
    #[error("thread {thread:?} is archived")]
    Archived {
        /// The thread id.
        thread: String,
    },
    /// The thread waits for an approval; it takes no new message until it is resolved.
    #[error("thread {thread:?} is waiting for approval {approval:?}")]
    AwaitingApproval {
        /// The thread id.
        thread: String,
        /// The pending approval.
        approval: String,
    },
    /// Another daemon's change of the thread did not end within the wait (retryable).
    #[error("thread {thread:?} is busy with a turn on another daemon")]
    Busy {
        /// The thread id.
        thread: String,
    },
    /// The thread's turn lease lapsed before the turn could write (the store was unreachable
    /// for longer than the lease); nothing was written after it lapsed (retryable).
    #[error("the turn lease of thread {thread:?} lapsed")]
    LeaseLost {
        /// The thread id.
        thread: String,
    },
}

impl AgentError {
    /// A short stable name of the error kind, for results and events.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AgentError::Store(_) => ErrorKind::Store,
            AgentError::Actor(_) => ErrorKind::Actor,
            AgentError::Model(ModelError::BudgetExceeded { .. }) => ErrorKind::BudgetExceeded,
            AgentError::Model(ModelError::RateLimited { .. }) => ErrorKind::RateLimited,
            AgentError::Model(_) => ErrorKind::Model,
            AgentError::Tool(_) => ErrorKind::Tool,
            AgentError::Limit(_) => ErrorKind::RateLimited,
            AgentError::Corrupt { .. } => ErrorKind::Corrupt,
            AgentError::Invalid { .. } => ErrorKind::Invalid,
            AgentError::NotFound { .. } => ErrorKind::NotFound,
            AgentError::Forbidden { .. } => ErrorKind::Forbidden,
            AgentError::Conflict { .. } => ErrorKind::Conflict,
            AgentError::Archived { .. } => ErrorKind::Archived,
            AgentError::AwaitingApproval { .. } => ErrorKind::AwaitingApproval,
            AgentError::Busy { .. } => ErrorKind::Busy,
            AgentError::LeaseLost { .. } => ErrorKind::LeaseLost,
        }
    }
}

impl Transient for AgentError {
    /// The store's, the actor's, the model's and the limit's own decisions; a thread busy on
    /// another daemon or a lapsed turn lease pass. Tool setup errors and the caller's
    /// mistakes (bad input, a missing or foreign thread, an archived or waiting one) do not.
    fn is_retryable(&self) -> bool {
        match self {
            AgentError::Store(err) => err.is_retryable(),
            AgentError::Actor(err) => err.is_retryable(),
            AgentError::Model(err) => err.is_retryable(),
            AgentError::Limit(err) => err.is_retryable(),
            AgentError::Busy { .. } | AgentError::LeaseLost { .. } => true,
            AgentError::Tool(_)
            | AgentError::Corrupt { .. }
            | AgentError::Invalid { .. }
            | AgentError::NotFound { .. }
            | AgentError::Forbidden { .. }
            | AgentError::Conflict { .. }
            | AgentError::Archived { .. }
            | AgentError::AwaitingApproval { .. } => false,
        }
    }
}

impl From<troupe_runtime::key_name::InvalidKeyName> for AgentError {
    fn from(err: troupe_runtime::key_name::InvalidKeyName) -> Self {
        AgentError::Invalid {
            what: err.what,
            message: err.detail(),
        }
    }
}
