//! Waiting for something to become true: one poll interval and one budget for the whole suite,
//! instead of a deadline loop per test.
//!
//! A check that should succeed promptly gets [`WAIT`]: long enough for a loaded CI machine,
//! short enough that a broken test fails in seconds, not at the harness's timeout. A check
//! that waits for a deliberate delay (a lease, a retention) passes a budget of its own.
//!
//! A failed wait says what it waited for (`what`) and, if the check said so, what it saw last:
//! a check returns `Err(seen)` while it does not hold. State read only on failure (a process's
//! log) goes into `what` through [`lazy`].

use std::cell::Cell;
use std::fmt::{self, Display};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(10);

/// What a check returns: `true`, `Some(value)` or `Ok(value)` once it holds; an `Err` holds
/// what it saw instead (shown if the wait fails).
pub trait Check {
    /// What [`eventually`] returns once the check holds.
    type Output;
    /// `Ok` once the check holds; otherwise what it saw, if it says.
    fn done(self) -> Result<Self::Output, Option<String>>;
}

impl Check for bool {
    type Output = ();
    fn done(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err(seen)`: not yet, and what the check saw.
impl<T> Check for Result<T, String> {
    type Output = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// A `what` written only if the wait fails, by calling `describe` (once: formatting it again
/// writes nothing). For state worth reading only then, such as a process's log.
pub fn lazy<F: FnOnce() -> String>(describe: F) -> Lazy<F> {
    Lazy(Cell::new(Some(describe)))
}

/// See [`lazy`].
pub struct Lazy<F>(Cell<Option<F>>);

impl<F: FnOnce() -> String> Display for Lazy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.take() {
            Some(describe) => f.write_str(&describe()),
            None => Ok(()),
        }
    }
}

/// The panic of a wait that did not succeed within `budget`.
fn give_up(what: impl Display, budget: Duration, seen: Option<String>) -> ! {
    match seen {
        Some(seen) => panic!("not within {budget:?}: {what}; last seen: {seen}"),
        None => panic!("not within {budget:?}: {what}"),
    }
}

/// Polls `check` until it holds (returns `true`, `Some` or `Ok`), and returns what it held;
/// panics naming `what` (and what the check saw last, if it said) once `budget` has passed.
pub async fn eventually<C, F, Fut>(what: impl Display, budget: Duration, mut check: F) -> C::Output
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    // Tokio's clock, so a test with paused time waits in virtual time.
    let deadline = TokioInstant::now() + budget;
    loop {
        let seen = match check().await.done() {
            Ok(out) => return out,
            Err(seen) => seen,
        };
        if TokioInstant::now() >= deadline {
            give_up(what, budget, seen);
        }
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
        let seen = match check().done() {
            Ok(out) => return out,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            give_up(what, budget, seen);
        }
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

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "not within 1s: n to reach 10; last seen: n is 3")]
    async fn a_failed_wait_shows_what_the_check_saw_last() {
        let mut n = 0;
        eventually("n to reach 10", Duration::from_secs(1), || {
            n = (n + 1).min(3);
            let seen = if n >= 10 {
                Ok(n)
            } else {
                Err(format!("n is {n}"))
            };
            async move { seen }
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "not within 1s: the log was: started")]
    async fn a_lazy_what_is_written_when_the_wait_fails() {
        let log = String::from("started");
        let what = lazy(|| format!("the log was: {log}"));
        eventually(what, Duration::from_secs(1), || async { false }).await;
    }

    #[test]
    fn a_lazy_what_is_not_written_while_the_wait_holds() {
        let written = Cell::new(false);
        let what = lazy(|| {
            written.set(true);
            String::new()
        });
        eventually_blocking(what, WAIT, || true);
        assert!(!written.get());
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
