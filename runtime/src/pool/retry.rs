//! A pool's retry policy: its [`RetryPolicy`] from `[pools.NAME]` (exponential backoff with
//! full jitter, no time bound) and the decision after each failed attempt
//! ([`RetryDecision`]), which the pool actor schedules itself (its retries are persisted, so
//! it cannot sleep in a [`retry`](crate::retry::retry) loop).

use std::time::Duration;

use troupe_config::PoolSettings;

use super::work::{WorkError, WorkFailure};
use crate::retry::{Backoff, Jitter, Next, RetryPolicy, Stop};

/// The retry policy of a pool configured with `settings`.
pub(crate) fn policy(settings: &PoolSettings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: settings.max_attempts.max(1),
        backoff: Backoff {
            initial: settings.initial_backoff,
            factor: settings.backoff_base,
            max: settings.max_backoff,
            jitter: if settings.jitter {
                Jitter::Full
            } else {
                Jitter::None
            },
        },
        max_total: None,
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RetryDecision {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: the work fails with this failure.
    GiveUp(WorkFailure),
}

/// Retry or give up after attempt `attempt` (from 1) failed with `error`: a retryable error
/// is tried again after its `retry_after` or the backoff while attempts remain.
pub(crate) fn decide(policy: &RetryPolicy, attempt: u32, error: &WorkError) -> RetryDecision {
    match policy.next(attempt, error, Duration::ZERO) {
        Next::Retry(delay) => RetryDecision::Retry(delay),
        Next::Stop(Stop::Permanent) => RetryDecision::GiveUp(error.failure().clone()),
        Next::Stop(Stop::Attempts | Stop::Time) => {
            let mut failure = error.failure().clone();
            failure.message = format!("{} (gave up after {attempt} attempts)", failure.message);
            RetryDecision::GiveUp(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::WorkErrorKind;

    fn policy(jitter: bool) -> RetryPolicy {
        super::policy(&PoolSettings {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            backoff_base: 2.0,
            max_backoff: Duration::from_millis(300),
            jitter,
            ..PoolSettings::default()
        })
    }

    #[test]
    fn backoff_grows_geometrically_up_to_the_cap() {
        let p = policy(false);
        let got: Vec<u128> = (1..=5).map(|a| p.backoff.base(a).as_millis()).collect();
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
                assert!(p.delay(attempt, None) <= p.backoff.base(attempt));
            }
        }
    }

    #[test]
    fn decisions_follow_the_error() {
        let p = policy(false);
        assert_eq!(
            decide(&p, 1, &WorkError::retryable("503")),
            RetryDecision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&p, 4, &WorkError::retryable("503")),
            RetryDecision::GiveUp("503 (gave up after 4 attempts)".into())
        );
        assert_eq!(
            decide(&p, 1, &WorkError::non_retryable("bad input")),
            RetryDecision::GiveUp("bad input".into())
        );
        assert_eq!(
            decide(
                &p,
                1,
                &WorkError::retry_after("429", Duration::from_secs(9))
            ),
            RetryDecision::Retry(Duration::from_secs(9))
        );
    }

    #[test]
    fn giving_up_keeps_the_kind_and_causes() {
        let error = WorkError::Retryable {
            failure: WorkFailure {
                message: "429".into(),
                kind: WorkErrorKind::RateLimited,
                causes: vec!["slow down".into()],
            },
            retry_after: None,
        };
        assert_eq!(
            decide(&policy(false), 4, &error),
            RetryDecision::GiveUp(WorkFailure {
                message: "429 (gave up after 4 attempts)".into(),
                kind: WorkErrorKind::RateLimited,
                causes: vec!["slow down".into()],
            })
        );
    }
}
