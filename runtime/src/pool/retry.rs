//! The backoff policy every pool uses ([`RetryPolicy`]): the delay after each failed attempt
//! (with full jitter), the decision per [`WorkError`] ([`RetryDecision`]), and an in-memory
//! retry loop for calls made inline ([`RetryPolicy::run`]).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use troupe_config::PoolSettings;

use super::work::WorkError;

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
    /// calls (a model request inside a handler). Use a [`Retrier`](crate::retrier::Retrier) for work that must survive
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
