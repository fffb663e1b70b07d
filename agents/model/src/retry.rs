//! Retries of model calls, on the runtime's one retry loop ([`troupe_runtime::retry`]):
//! exponential backoff with equal jitter (or the server's Retry-After), bounded in attempts and
//! in total time; one `model.attempt` span per attempt with `model` and `attempt`.

use std::future::Future;

use tracing::Instrument;
use troupe_config::ModelSettings;
use troupe_runtime::retry::{self, Backoff, Jitter, Next, RetryPolicy, Stop, Transient};

use super::ModelError;

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

impl Transient for Failure {
    /// The error's decision, unless deltas were sent: a caller has seen part of the answer.
    fn is_retryable(&self) -> bool {
        !self.streamed && self.error.is_retryable()
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        self.error.retry_after()
    }
}

/// The retry policy of a configured model: `max_retries` after the first attempt;
/// `initial_backoff * 2^retry` capped at `max_backoff`, with equal jitter (between half and
/// all of it), or the server's `retry_after` when it gave one (at most `max_retry_time`: no
/// server makes a call wait longer); no retry starts whose wait would end later than
/// `max_retry_time` after the first attempt began (an attempt in progress is not cut:
/// streams are bounded by the idle timeout instead).
pub(super) fn policy(settings: &ModelSettings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: settings.max_retries.saturating_add(1),
        backoff: Backoff {
            initial: settings.initial_backoff,
            factor: 2.0,
            max: settings.max_backoff,
            jitter: Jitter::Equal,
        },
        max_total: Some(settings.max_retry_time),
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
    retry::retry_with(
        policy,
        |number| {
            let span = tracing::info_span!("model.attempt", model = %model, attempt = number);
            attempt().instrument(span)
        },
        |failure, number, next| {
            let error = &failure.error;
            let wait = match next {
                Next::Retry(wait) => {
                    tracing::warn!(
                        model,
                        attempt = number,
                        error = %error,
                        wait_ms = wait.as_millis() as u64,
                        "model call failed; retrying"
                    );
                    Some(wait)
                }
                Next::Stop(Stop::Time) => {
                    tracing::warn!(model, attempt = number, error = %error, "model call failed; retry time spent");
                    None
                }
                Next::Stop(Stop::Permanent | Stop::Attempts) => None,
            };
            async move {
                if let Some(wait) = wait {
                    tokio::time::sleep(wait).await;
                }
                Ok(())
            }
        },
    )
    .await
    .map_err(|failure| failure.error)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn policy(max_retries: u32, max_total: Duration) -> RetryPolicy {
        super::policy(&ModelSettings {
            provider: troupe_config::Provider::Scripted {
                script: None,
                cassette: None,
                latency: Duration::ZERO,
            },
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_retries,
            max_retry_time: max_total,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            input_cost_per_million: 0.0,
            output_cost_per_million: 0.0,
            max_response_bytes: 1 << 20,
        })
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
            // Retry number `retry` (from 0) follows failed attempt `retry + 1`.
            let delay = policy.delay(retry + 1, None);
            assert!(delay >= base / 2 && delay <= base, "{retry}: {delay:?}");
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        // A server's wait never exceeds the total retry time.
        assert_eq!(
            policy.delay(1, Some(Duration::MAX)),
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

    #[tokio::test(start_paused = true)]
    async fn a_servers_retry_after_replaces_the_backoff() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = run(&policy(2, Duration::from_secs(60)), "m", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(Failure::from(ModelError::RateLimited {
                    model: "m".into(),
                    retry_after: Some(Duration::from_secs(5)),
                }))
            }
        })
        .await;
        assert!(matches!(result, Err(ModelError::RateLimited { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
