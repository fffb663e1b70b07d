//! Errors of pool operations (enqueue, cancel, status), as callers see them.

use crate::error::ActorError;
use crate::retry::Transient;
use crate::store::StoreError;

/// Why a pool operation failed. Work failures are not errors of the pool: they are the
/// item's [`WorkStatus`](super::WorkStatus).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The store failed; [`PoolError::is_retryable`] says whether trying again may help.
    #[error("pool {pool}: {source}")]
    Store {
        /// The pool.
        pool: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The pool actor did not answer (restarting, stopped, overloaded).
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// An item with this id already exists (enqueueing is idempotent per id).
    #[error("pool {pool}: work {id} already exists")]
    Duplicate {
        /// The pool.
        pool: String,
        /// The id.
        id: String,
    },
    /// A stored record could not be decoded (written by an incompatible version?).
    #[error("pool {pool}: work {id} has an unreadable record: {message}")]
    Corrupt {
        /// The pool.
        pool: String,
        /// The item.
        id: String,
        /// The decoder's message.
        message: String,
    },
    /// The pool is stopping and takes no new work.
    #[error("pool {pool} is stopping")]
    Stopping {
        /// The pool.
        pool: String,
    },
}

impl PoolError {
    pub(crate) fn store(pool: &str) -> impl FnOnce(StoreError) -> PoolError + '_ {
        move |source| PoolError::Store {
            pool: pool.to_owned(),
            source,
        }
    }
}

impl Transient for PoolError {
    /// A store or actor failure that may pass, or a pool that is stopping (its successor
    /// takes the call); never a duplicate id or an unreadable record.
    fn is_retryable(&self) -> bool {
        match self {
            PoolError::Store { source, .. } => source.is_retryable(),
            PoolError::Actor(err) => err.is_retryable(),
            PoolError::Stopping { .. } => true,
            PoolError::Duplicate { .. } | PoolError::Corrupt { .. } => false,
        }
    }
}
