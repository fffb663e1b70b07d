//! Errors of the agents crate.

use troupe_runtime::store::StoreError;
use troupe_runtime::ActorError;

/// What can go wrong in a thread or an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The store failed; `is_retryable` says whether to try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The actor that owns the work failed or stopped.
    #[error(transparent)]
    Actor(#[from] ActorError),
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
}
