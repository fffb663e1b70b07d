//! Errors of the cron scheduler's operations (register, delete, list, history).

use crate::error::ActorError;
use crate::retry::Transient;
use crate::store::StoreError;

/// Why a cron operation failed. A target that fails is not an error of the scheduler: it is
/// recorded in the cron's history.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The schedule (cron expression, interval or time zone) is not valid.
    #[error("cron {cron}: {message}")]
    InvalidSchedule {
        /// The cron.
        cron: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed; [`CronError::is_retryable`] says whether trying again may help.
    #[error("crons: {0}")]
    Store(#[from] StoreError),
    /// The scheduler actor did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl CronError {
    /// Whether the same call may succeed later: the [`Transient`] decision, callable without
    /// importing the trait.
    pub fn is_retryable(&self) -> bool {
        Transient::is_retryable(self)
    }
}

impl Transient for CronError {
    /// A store or actor failure that may pass; never an invalid schedule.
    fn is_retryable(&self) -> bool {
        match self {
            CronError::InvalidSchedule { .. } => false,
            CronError::Store(err) => err.is_retryable(),
            CronError::Actor(err) => err.is_retryable(),
        }
    }
}
