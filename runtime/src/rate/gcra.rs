//! Token-bucket arithmetic (GCRA, the generic cell rate algorithm), shared by the local limiter,
//! the memory store and — transcribed to Lua — the Redis script, so all three agree.
//!
//! A bucket's whole state is one time, the *theoretical arrival time* (TAT): when the bucket
//! will be full again. Here it is handled relative to now, as `ahead = max(TAT - now, 0)`, in
//! abstract ticks (nanoseconds locally, microseconds in the stores). With `interval` ticks to
//! earn one unit back and room for `capacity` units, taking `count` units moves the TAT by
//! `count × interval`; the units may run now when the TAT stays within `capacity × interval`
//! of now. A TAT further ahead is a *reservation*: its units run once enough time has passed.

/// A bucket's parameters, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Ticks to earn one unit back (`period / rate`, at least 1).
    pub interval: u64,
    /// Units the bucket holds (at least 1).
    pub capacity: u64,
}

/// One operation on a bucket, with counts in units and times in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Take `count` units; when they cannot run now, reserve them if at most `max_ahead`
    /// units would then be promised beyond the bucket.
    Take { count: u64, max_ahead: u64 },
    /// What `Take { count, max_ahead: 0 }` would answer, changing nothing.
    Peek { count: u64 },
    /// Give `count` units back (the bucket never holds more than its capacity).
    Refund { count: u64 },
    /// Nothing may run before `delay` ticks from now (no effect when zero).
    Penalize { delay: u64 },
}

/// What an operation found, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Take: the units were taken (to run now, or after `wait` when reserved). Peek: they
    /// could run now. Always true for refunds and penalties.
    pub allowed: bool,
    /// Ticks until the asked units can run: when allowed, the wait before running them;
    /// when refused, the time until they could run at once.
    pub wait: u64,
    /// Units that could run right now after the operation.
    pub remaining: u64,
    /// Ticks until the bucket is full again.
    pub reset_after: u64,
}

impl Gcra {
    /// Applies `op` to a bucket whose TAT is `ahead` ticks from now. Returns the outcome and
    /// the new `ahead` (0: the bucket is full and its state can be dropped).
    pub(crate) fn step(self, ahead: u64, op: Op) -> (Outcome, u64) {
        let interval = u128::from(self.interval.max(1));
        let capacity = u128::from(self.capacity.max(1));
        let full = capacity * interval;
        let ahead_now = u128::from(ahead);
        let (allowed, wait, next) = match op {
            Op::Take { count, max_ahead } => {
                let end = ahead_now + u128::from(count) * interval;
                let allowed = end <= (capacity + u128::from(max_ahead)).saturating_mul(interval);
                let next = if allowed { end } else { ahead_now };
                (allowed, end.saturating_sub(full), next)
            }
            Op::Peek { count } => {
                let end = ahead_now + u128::from(count) * interval;
                (end <= full, end.saturating_sub(full), ahead_now)
            }
            Op::Refund { count } => (
                true,
                0,
                ahead_now.saturating_sub(u128::from(count) * interval),
            ),
            Op::Penalize { delay: 0 } => (true, 0, ahead_now),
            Op::Penalize { delay } => (
                true,
                0,
                ahead_now.max(u128::from(delay) + (capacity - 1) * interval),
            ),
        };
        let remaining = (full.saturating_sub(next) / interval).min(capacity);
        let outcome = Outcome {
            allowed,
            wait: saturate(wait),
            remaining: saturate(remaining),
            reset_after: saturate(next),
        };
        (outcome, saturate(next))
    }
}

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Gcra = Gcra {
        interval: 10,
        capacity: 3,
    };

    fn take(count: u64) -> Op {
        Op::Take {
            count,
            max_ahead: 0,
        }
    }

    /// Runs `ops` from a full bucket, advancing time by `dt` before each; returns
    /// `(allowed, wait, remaining)` per op.
    fn check(ops: &[(u64, Op)], expected: &[(bool, u64, u64)]) {
        let mut ahead = 0u64;
        let got: Vec<_> = ops
            .iter()
            .map(|&(dt, op)| {
                ahead = ahead.saturating_sub(dt);
                let (o, next) = B.step(ahead, op);
                ahead = next;
                (o.allowed, o.wait, o.remaining)
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn burst_of_capacity_then_one_per_interval() {
        check(
            &[
                (0, take(1)),
                (0, take(1)),
                (0, take(1)),
                (0, take(1)),
                (9, take(1)),
                (1, take(1)),
            ],
            &[
                (true, 0, 2),
                (true, 0, 1),
                (true, 0, 0),
                (false, 10, 0),
                (false, 1, 0),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn take_many_is_all_or_nothing() {
        check(
            &[(0, take(2)), (0, take(2)), (10, take(2))],
            &[(true, 0, 1), (false, 10, 1), (true, 0, 0)],
        );
    }

    #[test]
    fn reservations_queue_up_to_max_ahead() {
        let reserve = |count| Op::Take {
            count,
            max_ahead: 2,
        };
        check(
            &[
                (0, take(3)),
                (0, reserve(1)),
                (0, reserve(1)),
                (0, reserve(1)),
                (10, reserve(1)),
            ],
            &[
                (true, 0, 0),
                (true, 10, 0),
                (true, 20, 0),
                (false, 30, 0),
                (true, 20, 0),
            ],
        );
    }

    #[test]
    fn refunds_never_exceed_capacity() {
        check(
            &[
                (0, take(3)),
                (0, Op::Refund { count: 2 }),
                (0, Op::Refund { count: 5 }),
                (0, Op::Peek { count: 3 }),
                (0, take(3)),
            ],
            &[
                (true, 0, 0),
                (true, 0, 2),
                (true, 0, 3),
                (true, 0, 3),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn penalty_holds_everything_until_it_ends_then_refills_at_rate() {
        check(
            &[
                (0, Op::Penalize { delay: 25 }),
                (0, Op::Peek { count: 1 }),
                (24, take(1)),
                (1, take(1)),
                (0, take(1)),
                (0, Op::Penalize { delay: 0 }),
                (10, take(1)),
            ],
            &[
                (true, 0, 0),
                (false, 25, 0),
                (false, 1, 0),
                (true, 0, 0),
                (false, 10, 0),
                (true, 0, 0),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn state_is_dropped_when_full_and_huge_numbers_saturate() {
        let (_, ahead) = B.step(0, take(1));
        assert_eq!(ahead, 10);
        let (o, ahead) = B.step(0, Op::Refund { count: 1 });
        assert_eq!((o.reset_after, ahead), (0, 0));
        let big = Gcra {
            interval: u64::MAX,
            capacity: u64::MAX,
        };
        let (o, _) = big.step(u64::MAX, take(u64::MAX));
        assert!(!o.allowed);
        assert_eq!((o.wait, o.reset_after), (u64::MAX, u64::MAX));
        let reserve = Op::Take {
            count: 1,
            max_ahead: u64::MAX,
        };
        assert!(big.step(0, reserve).0.allowed);
    }
}
