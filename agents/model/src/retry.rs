//! Retries of model calls: exponential backoff with jitter (or the server's Retry-After),
//! bounded in attempts and in total time; one `model.attempt` span per attempt with `model` and
//! `attempt`.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::Instrument;

use super::{ModelError, ModelSettings, RetryPolicy};

/// A failed attempt: the error, and whether text deltas were already sent (a streamed call is
/// only retried when none were).
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) error: ModelError,
    pub(super) streamed: bool,
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Failure {
            error,
            streamed: false,
        }
    }
}

impl RetryPolicy {
    /// The policy of a configured model.
    pub fn from_settings(settings: &ModelSettings) -> RetryPolicy {
        RetryPolicy {
            max_retries: settings.max_retries,
            max_total: settings.max_retry_time,
            initial_backoff: settings.initial_backoff,
            max_backoff: settings.max_backoff,
        }
    }

    /// The wait before retry number `retry` (0 for the first retry): the server's
    /// `retry_after` when it gave one (at most `max_total`: no server makes a call wait
    /// longer), else `initial_backoff * 2^retry` capped at `max_backoff`, with equal jitter
    /// (between half and all of it).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_total);
        }
        let base = self
            .initial_backoff
            .saturating_mul(2_u32.saturating_pow(retry.min(31)))
            .min(self.max_backoff);
        let half = base / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

/// Runs `attempt` until it succeeds, fails permanently, has streamed deltas, or the policy's
/// attempts or total time are spent (no retry starts whose wait would end past `max_total`).
/// The error returned is the last one.
pub(super) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    model: &str,
    mut attempt: F,
) -> Result<T, ModelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut retries = 0_u32;
    loop {
        let span = tracing::info_span!("model.attempt", model = %model, attempt = retries + 1);
        let failure = match attempt().instrument(span).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let error = failure.error;
        if failure.streamed || !error.is_retryable() || retries >= policy.max_retries {
            return Err(error);
        }
        let wait = policy.delay(retries, error.retry_after());
        if started.elapsed().saturating_add(wait) > policy.max_total {
            tracing::warn!(model, attempt = retries + 1, error = %error, "model call failed; retry time spent");
            return Err(error);
        }
        tracing::warn!(
            model,
            attempt = retries + 1,
            error = %error,
            wait_ms = wait.as_millis() as u64,
            "model call failed; retrying"
        );
        tokio::time::sleep(wait).await;
        retries += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_retries: u32, max_total: Duration) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            max_total,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        }
    }

    fn connection() -> ModelError {
        ModelError::Connection {
            model: "m".into(),
            message: "reset".into(),
        }
    }

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let policy = policy(5, Duration::from_secs(60));
        for retry in 0..6 {
            let base =
                Duration::from_millis(100 * 2_u64.pow(retry)).min(Duration::from_millis(400));
            let delay = policy.delay(retry, None);
            assert!(delay >= base / 2 && delay <= base, "{retry}: {delay:?}");
        }
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        // A server's wait never exceeds the total retry time.
        assert_eq!(
            policy.delay(0, Some(Duration::MAX)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_count_and_by_time() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&policy(3, Duration::from_secs(60)), "m", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::from(connection())) }
        })
        .await;
        assert!(matches!(result, Err(ModelError::Connection { .. })));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 4);

        let started = tokio::time::Instant::now();
        let result: Result<(), _> = run(&policy(100, Duration::from_secs(1)), "m", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::from(connection())) }
        })
        .await;
        assert!(result.is_err());
        assert!(started.elapsed() <= Duration::from_secs(1));
        assert!(calls.load(Ordering::SeqCst) < 100);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_and_streamed_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let quota = || ModelError::QuotaExceeded {
            model: "m".into(),
            message: "pay".into(),
        };
        let _: Result<(), _> = run(&policy(3, Duration::from_secs(60)), "m", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Err(Failure::from(quota())) }
        })
        .await;
        let _: Result<(), _> = run(&policy(3, Duration::from_secs(60)), "m", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(Failure {
                    error: connection(),
                    streamed: true,
                })
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
