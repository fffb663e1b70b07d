//! Waiting for something to become true: one poll interval and one budget for the whole suite,
//! instead of a deadline loop per test.
//!
//! A check that should succeed promptly gets [`WAIT`]: long enough for a loaded CI machine,
//! short enough that a broken test fails in seconds, not at the harness's timeout. A check
//! that waits for a deliberate delay (a lease, a retention) passes a budget of its own.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(10);

/// What a check returns: `true`, or `Some(value)`, once it holds.
pub trait Check {
    /// What [`eventually`] returns once the check holds.
    type Output;
    /// `Some` once the check holds.
    fn done(self) -> Option<Self::Output>;
}

impl Check for bool {
    type Output = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it holds (returns `true` or `Some`), and returns what it held;
/// panics naming `what` once `budget` has passed.
pub async fn eventually<C, F, Fut>(what: impl Display, budget: Duration, mut check: F) -> C::Output
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    // Tokio's clock, so a test with paused time waits in virtual time.
    let deadline = TokioInstant::now() + budget;
    loop {
        if let Some(out) = check().await.done() {
            return out;
        }
        assert!(
            TokioInstant::now() < deadline,
            "not within {budget:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`eventually`], for a blocking check (a test of processes, without a runtime).
pub fn eventually_blocking<C: Check>(
    what: impl Display,
    budget: Duration,
    mut check: impl FnMut() -> C,
) -> C::Output {
    let deadline = Instant::now() + budget;
    loop {
        if let Some(out) = check().done() {
            return out;
        }
        assert!(Instant::now() < deadline, "not within {budget:?}: {what}");
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_what_the_check_held() {
        let mut n = 0;
        let got = eventually("n reaches 3", WAIT, || {
            n += 1;
            let value = (n >= 3).then_some(n);
            async move { value }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "not within 1s: never")]
    async fn eventually_panics_with_what_after_its_budget() {
        eventually("never", Duration::from_secs(1), || async { false }).await;
    }

    #[test]
    fn eventually_blocking_polls_until_true() {
        let mut n = 0;
        eventually_blocking("n reaches 2", WAIT, || {
            n += 1;
            n >= 2
        });
        assert_eq!(n, 2);
    }
}
