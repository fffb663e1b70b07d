//! Errors of the cron scheduler's operations (register, delete, list, history), and of firing
//! a cron's target ([`CronFireError`]).

use troupe_config::CronTarget;

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

/// Why firing a cron's target failed. The scheduler records the tick as failed, with this
/// error's text as the history entry's detail.
#[derive(Debug, thiserror::Error)]
pub enum CronFireError {
    /// The cron names an agent or workflow that does not exist.
    #[error("no {} {:?}", target_kind(.target), target_name(.target))]
    UnknownTarget {
        /// The target as the cron names it.
        target: CronTarget,
    },
    /// The target ran and failed with an error of its own (its text is this error's text).
    #[error("{source}")]
    Target {
        /// The target's error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether firing again may succeed, as the target's error decides it.
        retryable: bool,
    },
    /// The store failed on the way.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target panicked; the scheduler caught the panic.
    #[error(transparent)]
    Panicked(ActorError),
}

impl Transient for CronFireError {
    fn is_retryable(&self) -> bool {
        match self {
            CronFireError::UnknownTarget { .. } => false,
            CronFireError::Target { retryable, .. } => *retryable,
            CronFireError::Store(err) => err.is_retryable(),
            CronFireError::Panicked(err) => err.is_retryable(),
        }
    }
}

fn target_kind(target: &CronTarget) -> &'static str {
    match target {
        CronTarget::Agent(_) => "agent",
        CronTarget::Workflow(_) => "workflow",
    }
}

fn target_name(target: &CronTarget) -> &str {
    match target {
        CronTarget::Agent(name) | CronTarget::Workflow(name) => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_errors_keep_their_source_text_and_retry_decision() {
        let unknown = CronFireError::UnknownTarget {
            target: CronTarget::Agent("nope".to_owned()),
        };
        assert_eq!(unknown.to_string(), "no agent \"nope\"");
        assert!(!unknown.is_retryable());
        let failed = CronFireError::Target {
            source: "the target failed".into(),
            retryable: true,
        };
        assert_eq!(failed.to_string(), "the target failed");
        assert!(failed.is_retryable());
        assert!(std::error::Error::source(&failed).is_some());
    }
}
