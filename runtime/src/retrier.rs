//! The [`Retrier`]: actions run with a persistent status, retried with backoff, cancelable,
//! notified exactly once, and retried when their runner dies. The backoff policy it (and every
//! pool) uses is [`RetryPolicy`], which lives in the pool (`pool/retry.rs`) and is re-exported
//! here.
//!
//! A retrier *is* a work pool with one kind of work per action, so it shares the pool's
//! persistence, crash detection and notification code instead of repeating it: run ids are
//! work ids, statuses are work records. It is supervised like any pool (see
//! [`Pool::child_of`]). It is a pure client of [`crate::pool`].

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use serde_json::Value;
use troupe_config::PoolSettings;

use crate::pool::{
    CancelOutcome, Pool, PoolError, PoolOptions, WorkCompletedEvent, WorkHandler, WorkId, WorkSpec,
    WorkStatus,
};
pub use crate::pool::{RetryDecision, RetryPolicy};
use crate::store::Store;
use crate::supervisor::{ChildOptions, SupervisorSpec};

/// A run's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for, or running, its `attempt`-th attempt (0: not started yet).
    InProgress {
        /// Attempts started so far.
        attempt: u32,
    },
    /// Succeeded.
    Succeeded,
    /// Failed for good.
    Failed {
        /// Why.
        error: String,
    },
    /// Canceled.
    Canceled,
}

/// How a [`Retrier`] runs its actions.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrierSettings {
    /// Attempts and backoff.
    pub policy: RetryPolicy,
    /// Actions running at once.
    pub parallelism: usize,
    /// How long a run's status is kept after it ends.
    pub retention: Duration,
}

impl Default for RetrierSettings {
    fn default() -> Self {
        let pool = PoolSettings::default();
        RetrierSettings {
            policy: RetryPolicy::from(&pool),
            parallelism: pool.max_parallelism,
            retention: pool.retention,
        }
    }
}

/// Runs actions with persistent status and retries. Cheap to clone.
#[derive(Clone)]
pub struct Retrier {
    pool: Pool,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("name", &self.pool.name())
            .finish()
    }
}

impl Retrier {
    /// A retrier called `name` supervised by `supervisor`.
    pub fn child_of(
        supervisor: &mut SupervisorSpec,
        name: &str,
        settings: RetrierSettings,
        store: Arc<dyn Store>,
        options: PoolOptions,
        child: ChildOptions,
    ) -> Retrier {
        let RetrierSettings {
            policy,
            parallelism,
            retention,
        } = settings;
        let settings = PoolSettings {
            max_parallelism: parallelism,
            max_attempts: policy.max_attempts.max(1),
            initial_backoff: policy.initial_backoff,
            backoff_base: policy.backoff_base,
            max_backoff: policy.max_backoff,
            jitter: policy.jitter,
            retention,
        };
        Retrier {
            pool: Pool::child_of(supervisor, name, &settings, store, options, child),
        }
    }

    /// Registers the action `name`; runs of it persisted by an earlier daemon start once it
    /// is registered.
    pub fn register_action(&self, name: &str, action: Arc<dyn WorkHandler>) {
        self.pool.register_handler(name, action);
    }

    /// Starts a run of `action` with `input`; `notify` gets a [`WorkCompletedEvent`] exactly
    /// once when it ends. Returns the run id once the run is persisted.
    pub async fn run(
        &self,
        action: &str,
        input: Value,
        notify: Option<Recipient<WorkCompletedEvent>>,
    ) -> Result<WorkId, PoolError> {
        let mut spec = WorkSpec::new(action, input);
        if let Some(recipient) = notify {
            spec = spec.notify(recipient);
        }
        self.pool.enqueue(spec).await
    }

    /// The run's status; `None` if unknown or expired.
    pub async fn status(&self, run: &str) -> Result<Option<RunStatus>, PoolError> {
        let Some(record) = self.pool.record(run).await? else {
            return Ok(None);
        };
        Ok(Some(match record.status() {
            WorkStatus::Pending | WorkStatus::Running { .. } => RunStatus::InProgress {
                attempt: record.attempts,
            },
            WorkStatus::Succeeded => RunStatus::Succeeded,
            WorkStatus::Failed { error } => RunStatus::Failed { error },
            WorkStatus::Canceled => RunStatus::Canceled,
        }))
    }

    /// Cancels a run (best-effort when it is running).
    pub async fn cancel(&self, run: &str) -> Result<CancelOutcome, PoolError> {
        self.pool.cancel(run).await
    }

    /// The pool underneath (for subscribers and counters).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
