//! The one transient-error and retry vocabulary of troupe: [`Transient`] (is an error worth
//! another try, and when), [`Backoff`] (the delay after each failed attempt, with its
//! [`Jitter`]), [`RetryPolicy`] (attempts, backoff and a time bound, deciding [`Next`] after
//! each failure) and [`retry`]/[`retry_with`] (the loop that runs an operation under a policy).
//!
//! Every error enum with a retry decision implements [`Transient`] with an exhaustive match,
//! so a new variant has to be classified. The model client and the workflow engine retry
//! inline with [`retry_with`]; a work pool is driven by its actor, so it asks the same
//! [`RetryPolicy::next`] after each attempt and schedules the next one itself.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// An error that says whether trying the same thing again may succeed, and when.
pub trait Transient {
    /// Whether the same operation may succeed later (a timeout, a busy or unreachable
    /// service, a rate limit). Permanent errors (bad input, a refusal) return `false`.
    fn is_retryable(&self) -> bool;

    /// How long the other side asked to wait before the next try (a server's
    /// `Retry-After`, a limiter's refill), when it said. `None`: the caller's backoff.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// How a [`Backoff`] randomises its delays (so that failed callers do not retry in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The computed delay as it is.
    None,
    /// Uniformly between zero and the computed delay.
    Full,
    /// Uniformly between half the computed delay and all of it.
    Equal,
}

/// Exponential backoff: after failed attempt `n` (from 1), `initial * factor^(n-1)`, at most
/// `max`, randomised by `jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The factor applied per further failure (values below 1 count as 1).
    pub factor: f64,
    /// The largest delay (when shorter than `initial`, `initial` is the largest).
    pub max: Duration,
    /// How each delay is randomised.
    pub jitter: Jitter,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (from 1) before jitter:
    /// `initial * factor^(attempt - 1)`, at most `max`.
    pub fn base(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1).min(1_000)).unwrap_or(1_000);
        let factor = self.factor.max(1.0).powi(exponent);
        let cap = self.max.max(self.initial);
        // In nanoseconds, exact for every delay shorter than about a hundred days.
        let nanos = self.initial.as_nanos() as f64 * factor;
        if !nanos.is_finite() || nanos >= cap.as_nanos() as f64 {
            cap
        } else {
            Duration::from_nanos(nanos as u64)
        }
    }

    /// The delay to wait after failed attempt `attempt` (from 1): [`base`](Self::base) with
    /// the jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base(attempt);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full if base.is_zero() => base,
            Jitter::Full => {
                let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rand::rng().random_range(0..=nanos))
            }
            Jitter::Equal => {
                let half = base / 2;
                half + rand::rng().random_range(Duration::ZERO..=half)
            }
        }
    }
}

/// When and how often a failed operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// The delay after each failed attempt, unless the error says how long to wait.
    pub backoff: Backoff,
    /// No retry starts whose wait would end later than this after the first attempt began,
    /// and no error's `retry_after` is waited longer than this. `None`: no time bound.
    pub max_total: Option<Duration>,
}

/// What follows a failed attempt, as [`RetryPolicy::next`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Try no more: the attempt's error is the result.
    Stop(Stop),
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The error is not retryable.
    Permanent,
    /// The attempt was the last the policy allows.
    Attempts,
    /// The wait would end past the policy's `max_total`.
    Time,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1): the error's `retry_after` when it
    /// gave one (at most `max_total`: nobody makes a caller wait longer than its bound), else
    /// the backoff's delay.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => self.max_total.map_or(wait, |total| wait.min(total)),
            None => self.backoff.delay(attempt),
        }
    }

    /// What follows failed attempt `attempt` (from 1) with `error`, `elapsed` after the first
    /// attempt began: a permanent error stops, so does the last allowed attempt, and so does a
    /// wait that would end past `max_total`; otherwise retry after [`delay`](Self::delay).
    pub fn next(&self, attempt: u32, error: &impl Transient, elapsed: Duration) -> Next {
        if !error.is_retryable() {
            return Next::Stop(Stop::Permanent);
        }
        if attempt >= self.max_attempts {
            return Next::Stop(Stop::Attempts);
        }
        let wait = self.delay(attempt, error.retry_after());
        match self.max_total {
            Some(total) if elapsed.saturating_add(wait) > total => Next::Stop(Stop::Time),
            _ => Next::Retry(wait),
        }
    }
}

/// Runs `op(attempt)` (from 1) until it succeeds or `policy` says [`Next::Stop`], sleeping
/// the policy's wait between attempts. The error returned is the last attempt's. Nothing is
/// persisted: for calls made inline (a work pool retries across restarts).
pub async fn retry<T, E, Op, OpFut>(policy: &RetryPolicy, op: Op) -> Result<T, E>
where
    E: Transient,
    Op: FnMut(u32) -> OpFut,
    OpFut: Future<Output = Result<T, E>>,
{
    retry_with(policy, op, |_, _, next| async move {
        if let Next::Retry(wait) = next {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    })
    .await
}

/// [`retry`] with a say in what happens after each failed attempt: `after(error, attempt,
/// next)` runs after every failure with the policy's decision. On [`Next::Retry`] it is what
/// waits the given time (`tokio::time::sleep`, or a sleep that a stop request cuts short),
/// and it may do more (log, journal the failure); an error it returns ends the retries and is
/// returned instead. On [`Next::Stop`], the attempt's error is returned once it has run.
pub async fn retry_with<T, E, Op, OpFut, After, AfterFut>(
    policy: &RetryPolicy,
    mut op: Op,
    mut after: After,
) -> Result<T, E>
where
    E: Transient,
    Op: FnMut(u32) -> OpFut,
    OpFut: Future<Output = Result<T, E>>,
    After: FnMut(&E, u32, Next) -> AfterFut,
    AfterFut: Future<Output = Result<(), E>>,
{
    let started = Instant::now();
    let mut attempt = 1_u32;
    loop {
        let error = match op(attempt).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let next = policy.next(attempt, &error, started.elapsed());
        after(&error, attempt, next).await?;
        match next {
            Next::Retry(wait) => {
                tracing::debug!(attempt, ?wait, "retrying");
                attempt = attempt.saturating_add(1);
            }
            Next::Stop(_) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// A test error: retryable or not, with an optional wait.
    #[derive(Debug, Clone, PartialEq)]
    struct Flaky {
        retryable: bool,
        after: Option<Duration>,
    }

    impl Transient for Flaky {
        fn is_retryable(&self) -> bool {
            self.retryable
        }

        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    const TRANSIENT: Flaky = Flaky {
        retryable: true,
        after: None,
    };
    const PERMANENT: Flaky = Flaky {
        retryable: false,
        after: None,
    };

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(300),
            jitter,
        }
    }

    fn policy(max_attempts: u32, max_total: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: backoff(Jitter::None),
            max_total,
        }
    }

    #[test]
    fn backoff_grows_geometrically_up_to_the_cap() {
        let b = backoff(Jitter::None);
        let got: Vec<u128> = (1..=5).map(|a| b.base(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 300, 300, 300]);
        assert_eq!(b.delay(2), Duration::from_millis(200));
        // Attempt 0 counts as the first; a huge attempt number stays at the cap.
        assert_eq!(b.base(0), Duration::from_millis(100));
        assert_eq!(b.base(u32::MAX), Duration::from_millis(300));
        // A factor below 1 counts as 1; a cap below the first delay is that delay.
        let flat = Backoff {
            factor: 0.5,
            max: Duration::from_millis(10),
            ..b
        };
        assert_eq!(flat.base(3), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_within_the_backoff() {
        let b = backoff(Jitter::Full);
        for attempt in 1..=4 {
            for _ in 0..50 {
                assert!(b.delay(attempt) <= b.base(attempt));
            }
        }
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            ..b
        };
        assert_eq!(zero.delay(1), Duration::ZERO);
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let b = backoff(Jitter::Equal);
        for attempt in 1..=4 {
            let base = b.base(attempt);
            for _ in 0..50 {
                let delay = b.delay(attempt);
                assert!(delay >= base / 2 && delay <= base, "{attempt}: {delay:?}");
            }
        }
    }

    #[test]
    fn the_errors_wait_replaces_the_backoff_within_the_time_bound() {
        let unbounded = policy(4, None);
        assert_eq!(
            unbounded.delay(2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(unbounded.delay(2, None), Duration::from_millis(200));
        let bounded = policy(4, Some(Duration::from_secs(60)));
        assert_eq!(
            bounded.delay(1, Some(Duration::MAX)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn next_stops_at_a_permanent_error_the_last_attempt_and_the_time_bound() {
        let p = policy(4, Some(Duration::from_secs(1)));
        assert_eq!(
            p.next(1, &TRANSIENT, Duration::ZERO),
            Next::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            p.next(1, &PERMANENT, Duration::ZERO),
            Next::Stop(Stop::Permanent)
        );
        assert_eq!(
            p.next(4, &TRANSIENT, Duration::ZERO),
            Next::Stop(Stop::Attempts)
        );
        // 900 ms spent + 200 ms of backoff would end past the 1 s bound.
        assert_eq!(
            p.next(2, &TRANSIENT, Duration::from_millis(900)),
            Next::Stop(Stop::Time)
        );
        let waits = Flaky {
            retryable: true,
            after: Some(Duration::from_millis(40)),
        };
        assert_eq!(
            p.next(3, &waits, Duration::ZERO),
            Next::Retry(Duration::from_millis(40))
        );
        // Zero attempts allowed is one attempt.
        assert_eq!(
            policy(0, None).next(1, &TRANSIENT, Duration::ZERO),
            Next::Stop(Stop::Attempts)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_retries_until_success_with_the_backoff_between() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = retry(&policy(4, None), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 3 {
                    Err(TRANSIENT)
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
    async fn retry_returns_the_last_error_at_a_permanent_one_and_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(&policy(4, None), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(PERMANENT) }
        })
        .await;
        assert_eq!(got, Err(PERMANENT));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
        let got: Result<(), _> = retry(&policy(4, None), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                Err(Flaky {
                    retryable: true,
                    after: Some(Duration::from_millis(u64::from(attempt))),
                })
            }
        })
        .await;
        assert_eq!(
            got,
            Err(Flaky {
                retryable: true,
                after: Some(Duration::from_millis(4)),
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_honours_retry_after_and_the_time_bound() {
        let started = Instant::now();
        let waits = Flaky {
            retryable: true,
            after: Some(Duration::from_secs(2)),
        };
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(&policy(100, Some(Duration::from_secs(5))), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let waits = waits.clone();
            async move { Err(waits) }
        })
        .await;
        assert!(got.is_err());
        // Waits of 2 s at 0 s and 2 s; a third would end at 6 s, past the 5 s bound.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_with_sees_every_failure_and_can_end_the_retries() {
        let seen = Mutex::new(Vec::new());
        let got: Result<(), _> = retry_with(
            &policy(3, None),
            |_| async { Err(TRANSIENT) },
            |_, attempt, next| {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((attempt, next));
                async move {
                    if let Next::Retry(wait) = next {
                        tokio::time::sleep(wait).await;
                    }
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(got, Err(TRANSIENT));
        assert_eq!(
            *seen.lock().unwrap_or_else(|e| e.into_inner()),
            [
                (1, Next::Retry(Duration::from_millis(100))),
                (2, Next::Retry(Duration::from_millis(200))),
                (3, Next::Stop(Stop::Attempts)),
            ]
        );
        // The hook's error ends the retries at once (a stop request during the wait).
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry_with(
            &policy(3, None),
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(TRANSIENT) }
            },
            |_, _, _| async { Err(PERMANENT) },
        )
        .await;
        assert_eq!(got, Err(PERMANENT));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
