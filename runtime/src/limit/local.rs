//! Token buckets enforced in this process with governor: GCRA on keyed state in a `DashMap`,
//! one lock-free compare-and-swap per check, and the clock the limiter reads ([`LimitClock`]).
//!
//! Admissions go through governor's own `check_key_n`. The operations governor has no call for
//! (peek, reserve, refund, penalize) run the same GCRA arithmetic ([`crate::rate::gcra`]) on the same
//! per-key state through governor's `StateStore::measure_and_replace`, so every operation sees
//! and updates one theoretical arrival time per key.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, FakeRelativeClock, QuantaClock, QuantaInstant, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::rate::gcra::{Gcra, Op, Outcome};

/// The clock of local limiters: nanoseconds since the Unix epoch, read from a fast monotonic
/// source anchored to the wall clock once (or from governor's fake clock in tests, whose zero
/// is the epoch).
#[derive(Debug, Clone)]
pub(crate) enum LimitClock {
    /// The real clock.
    Real {
        clock: QuantaClock,
        origin: QuantaInstant,
        unix_origin: u64,
    },
    /// A clock that moves only when told to (tests).
    Fake(FakeRelativeClock),
}

impl LimitClock {
    /// The real clock.
    pub(crate) fn real() -> Self {
        let clock = QuantaClock::default();
        let origin = clock.now();
        let unix_origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        LimitClock::Real {
            clock,
            origin,
            unix_origin,
        }
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            LimitClock::Real {
                clock,
                origin,
                unix_origin,
            } => {
                Nanos::new(unix_origin.saturating_add(clock.now().duration_since(*origin).as_u64()))
            }
            LimitClock::Fake(clock) => clock.now(),
        }
    }
}

/// governor's keyed state, shared: the limiter owns one handle, [`LocalBucket`] another for
/// the operations governor has no call for.
#[derive(Debug, Clone, Default)]
struct SharedState(Arc<DashMapStateStore<String>>);

impl StateStore for SharedState {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for SharedState {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

/// A keyed token bucket in this process.
#[derive(Debug)]
pub(crate) struct LocalBucket {
    limiter: RateLimiter<String, SharedState, LimitClock, NoOpMiddleware<Nanos>>,
    state: SharedState,
    clock: LimitClock,
    /// The limiter's time origin: stored times are nanoseconds since it. Read just before the
    /// limiter reads its own, so it may precede that by the few nanoseconds in between (zero
    /// on the fake clock).
    start: Nanos,
    gcra: Gcra,
}

impl LocalBucket {
    /// A bucket of `capacity` units earning one back every `interval` nanoseconds.
    /// `capacity` is at most `u32::MAX` (governor's burst size).
    pub(crate) fn new(gcra: Gcra, capacity: NonZeroU32, clock: LimitClock) -> Option<Self> {
        let quota = Quota::with_period(std::time::Duration::from_nanos(gcra.interval))?
            .allow_burst(capacity);
        let state = SharedState::default();
        let start = clock.now();
        let limiter = RateLimiter::new(quota, state.clone(), clock.clone());
        Some(LocalBucket {
            limiter,
            state,
            clock,
            start,
            gcra,
        })
    }

    /// The hot path: takes `count` units now from `key` (or its shard `key#n`) if the bucket
    /// holds them (governor's GCRA). `Ok(())` when admitted, else the wait until they would
    /// be. The key is spelled into a reused thread-local buffer: no allocation unless the key
    /// is new (governor then clones it into the map).
    pub(crate) fn take_now(
        &self,
        key: &str,
        shard: Option<u32>,
        count: NonZeroU32,
    ) -> Result<(), u64> {
        thread_local! {
            static KEY: RefCell<String> = const { RefCell::new(String::new()) };
        }
        KEY.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.push_str(key);
                if let Some(shard) = shard {
                    let _ = write!(buf, "#{shard}");
                }
                self.check(&buf, count)
            }
            // Unreachable (nothing here re-enters), but never worth a panic.
            Err(_) => {
                let key = match shard {
                    Some(shard) => format!("{key}#{shard}"),
                    None => key.to_owned(),
                };
                self.check(&key, count)
            }
        })
    }

    fn check(&self, key: &String, count: NonZeroU32) -> Result<(), u64> {
        match self.limiter.check_key_n(key, count) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until
                .wait_time_from(self.clock.now())
                .as_nanos()
                .try_into()
                .unwrap_or(u64::MAX)),
            // The caller checks counts against the capacity first; this is the same refusal.
            Err(_insufficient) => Err(u64::MAX),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Applies any operation to `key`'s bucket.
    pub(crate) fn apply(&self, key: &str, op: Op) -> Outcome {
        let gcra = self.gcra;
        if let Op::Peek { .. } = op {
            // Read without inserting: an unknown key is a full bucket.
            let now = self.now();
            return match self.state.0.get(key) {
                None => gcra.step(0, op).0,
                Some(tat) => tat
                    .measure_and_replace(&NotKeyed::NonKey, |tat| {
                        let ahead = tat.map_or(0, |t| t.as_u64().saturating_sub(now));
                        Err::<((), Nanos), Outcome>(gcra.step(ahead, op).0)
                    })
                    .err()
                    .unwrap_or_else(|| gcra.step(0, op).0),
            };
        }
        let now = self.now();
        let result = self.state.measure_and_replace(&key.to_owned(), |tat| {
            let ahead = tat.map_or(0, |t| t.as_u64().saturating_sub(now));
            let (outcome, next) = gcra.step(ahead, op);
            if next == ahead {
                Err(outcome)
            } else {
                Ok((outcome, Nanos::new(now.saturating_add(next))))
            }
        });
        result.unwrap_or_else(|unchanged| unchanged)
    }

    /// Forgets `key` (a full bucket).
    pub(crate) fn reset(&self, key: &str) {
        self.state.0.remove(key);
    }

    /// Drops keys whose bucket has been full for at least one interval (governor's
    /// `retain_recent`), then gives the memory back (`shrink_to_fit`).
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys held, and the slots allocated for them.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.limiter.len(), self.state.0.capacity())
    }
}
