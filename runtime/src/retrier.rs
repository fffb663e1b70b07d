//! Retries: the backoff policy every pool uses ([`RetryPolicy`]), an in-memory retry loop for
//! calls made inline ([`RetryPolicy::run`]), and the [`Retrier`]: actions run with a persistent
//! status, retried with backoff, cancelable, notified exactly once, and retried when their
//! runner dies.
//!
//! A retrier *is* a work pool with one kind of work per action, so it shares the pool's
//! persistence, crash detection and notification code instead of repeating it: run ids are
//! work ids, statuses are work records. It is supervised like any pool (see
//! [`Pool::child_of`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use rand::Rng;
use serde_json::Value;
use troupe_config::PoolSettings;

use crate::pool::{
    CancelOutcome, Pool, PoolError, PoolOptions, WorkCompletedEvent, WorkError, WorkHandler,
    WorkId, WorkSpec, WorkStatus,
};
use crate::store::Store;
use crate::supervisor::{ChildOptions, SupervisorSpec};

/// When and how often failed work is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Factor applied to the delay per further retry (>= 1).
    pub backoff_base: f64,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Full jitter: each delay is drawn uniformly from zero to the computed delay.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from(&PoolSettings::default())
    }
}

impl From<&PoolSettings> for RetryPolicy {
    fn from(settings: &PoolSettings) -> Self {
        RetryPolicy {
            max_attempts: settings.max_attempts.max(1),
            initial_backoff: settings.initial_backoff,
            backoff_base: settings.backoff_base,
            max_backoff: settings.max_backoff,
            jitter: settings.jitter,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: the work fails with this error.
    GiveUp(String),
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1) before jitter:
    /// `initial_backoff * backoff_base^(attempt - 1)`, at most `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let factor = self.backoff_base.max(1.0).powi(exponent);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        let max = self.max_backoff.max(self.initial_backoff);
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay to wait after failed attempt `attempt`: the server's `retry_after` when
    /// given, else the backoff with jitter applied.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let backoff = self.backoff(attempt);
        if self.jitter && !backoff.is_zero() {
            let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::rng().random_range(0..=nanos))
        } else {
            backoff
        }
    }

    /// Retry or give up after attempt `attempt` (from 1) failed with `error`.
    pub fn decide(&self, attempt: u32, error: &WorkError) -> RetryDecision {
        match error {
            WorkError::NonRetryable { message } => RetryDecision::GiveUp(message.clone()),
            WorkError::Retryable { message, .. } if attempt >= self.max_attempts => {
                RetryDecision::GiveUp(format!("{message} (gave up after {attempt} attempts)"))
            }
            WorkError::Retryable { retry_after, .. } => {
                RetryDecision::Retry(self.delay(attempt, *retry_after))
            }
        }
    }

    /// Runs `op(attempt)` until it succeeds, fails with a non-retryable error, or runs out of
    /// attempts; sleeps between attempts per the policy. Nothing is persisted: for inline
    /// calls (a model request inside a handler). Use a [`Retrier`] for work that must survive
    /// a restart.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, WorkError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, WorkError>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => match self.decide(attempt, &error) {
                    RetryDecision::Retry(delay) => {
                        tracing::debug!(attempt, ?delay, error = %error, "retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    RetryDecision::GiveUp(message) => {
                        return Err(match error {
                            WorkError::Retryable { .. } => WorkError::non_retryable(message),
                            other => other,
                        })
                    }
                },
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            backoff_base: 2.0,
            max_backoff: Duration::from_millis(300),
            jitter,
        }
    }

    #[test]
    fn backoff_grows_geometrically_up_to_the_cap() {
        let p = policy(false);
        let got: Vec<u128> = (1..=5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 300, 300, 300]);
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(
            p.delay(2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn jitter_stays_within_the_backoff() {
        let p = policy(true);
        for attempt in 1..=4 {
            for _ in 0..50 {
                assert!(p.delay(attempt, None) <= p.backoff(attempt));
            }
        }
    }

    #[test]
    fn decisions_follow_the_error() {
        let p = policy(false);
        assert_eq!(
            p.decide(1, &WorkError::retryable("503")),
            RetryDecision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            p.decide(4, &WorkError::retryable("503")),
            RetryDecision::GiveUp("503 (gave up after 4 attempts)".into())
        );
        assert_eq!(
            p.decide(1, &WorkError::non_retryable("bad input")),
            RetryDecision::GiveUp("bad input".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_until_success_with_paused_time() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let got = policy(false)
            .run(|attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 3 {
                        Err(WorkError::retryable("flaky"))
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await;
        assert_eq!(got, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 100 ms after the first failure, 200 ms after the second.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_at_a_non_retryable_error_and_after_max_attempts() {
        let got: Result<(), _> = policy(false)
            .run(|_| async { Err(WorkError::non_retryable("no quota")) })
            .await;
        assert_eq!(got, Err(WorkError::non_retryable("no quota")));
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = policy(false)
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(WorkError::retryable("503")) }
            })
            .await;
        assert_eq!(
            got,
            Err(WorkError::non_retryable("503 (gave up after 4 attempts)"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
