//! Fixed windows: at most `limit` units per window of `period`, windows aligned to an origin
//! (the limit's `start`, or the Unix epoch). The arithmetic here is shared by the local
//! limiter (`limit/window.rs`), the memory store and — transcribed to Lua — the Redis script.
//!
//! State per key: the window it was last written in, the units `used` counted from that
//! window's start, and the end of a penalty. `used` may exceed `limit`: the excess is units
//! reserved in the following windows, so moving to a later window subtracts `limit` per window
//! passed. A reservation never straddles a window boundary: if it does not fit in what is left
//! of a window, it starts at the next one (the rest of that window stays unused, so no window
//! ever runs more than `limit`). A refund credits the current window.

use super::gcra::{Op, Outcome};

/// A fixed-window limit's parameters, in ticks (nanoseconds locally, microseconds in stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Length of a window (at least 1).
    pub period: u64,
    /// A window start, in ticks since the Unix epoch; the others are `origin + k × period`.
    pub origin: i64,
    /// Units per window (at least 1).
    pub limit: u64,
}

/// One key's window state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowState {
    /// The window `used` is counted from.
    pub index: i64,
    /// Units taken from that window on (beyond `limit`: reserved in later windows).
    pub used: u64,
    /// Nothing runs before this time (ticks since the epoch; 0: no penalty).
    pub until: i64,
}

impl Window {
    /// Applies `op` at time `now` (ticks since the epoch). Returns the outcome and the new
    /// state (`None`: nothing left to remember; the key can be dropped).
    pub(crate) fn step(
        self,
        state: Option<WindowState>,
        now: i64,
        op: Op,
    ) -> (Outcome, Option<WindowState>) {
        let period = i128::from(self.period.max(1));
        let limit = i128::from(self.limit.max(1));
        let now = i128::from(now);
        let index = (now - i128::from(self.origin)).div_euclid(period);
        let start = i128::from(self.origin) + index * period;
        let (mut used, mut until) = match state {
            None => (0, 0),
            Some(s) => {
                let passed = (index - i128::from(s.index)).max(0);
                (
                    (i128::from(s.used) - passed.saturating_mul(limit)).max(0),
                    i128::from(s.until),
                )
            }
        };
        let at = At { now, index, start };
        let (allowed, wait) = match op {
            Op::Take { count, max_ahead } => {
                let (allowed, wait, end) = self.place(at, used, until, count, max_ahead);
                if allowed {
                    used = end;
                }
                (allowed, wait)
            }
            Op::Peek { count } => {
                let (allowed, wait, _) = self.place(at, used, until, count, 0);
                (allowed, wait)
            }
            Op::Refund { count } => {
                used = (used - i128::from(count)).max(0);
                (true, 0)
            }
            Op::Penalize { delay } => {
                if delay > 0 {
                    until = until.max(now + i128::from(delay));
                }
                (true, 0)
            }
        };
        let penalty = (until - now).max(0);
        let busy_windows = (used + limit - 1).div_euclid(limit);
        let free_in = (start + busy_windows * period - now).max(0);
        let reset_after = free_in.max(penalty);
        let remaining = if penalty > 0 {
            0
        } else {
            (limit - used).max(0)
        };
        let outcome = Outcome {
            allowed,
            wait: wait_ticks(wait),
            remaining: wait_ticks(remaining),
            reset_after: wait_ticks(reset_after),
        };
        let state = (reset_after > 0).then(|| WindowState {
            index: i64::try_from(index).unwrap_or(i64::MAX),
            used: wait_ticks(used),
            until: if penalty > 0 {
                i64::try_from(until).unwrap_or(i64::MAX)
            } else {
                0
            },
        });
        (outcome, state)
    }

    /// Where `count` units go, given `used` and the penalty end `until` at `at`:
    /// `(allowed, wait, used after placing them)`.
    fn place(
        self,
        at: At,
        used: i128,
        until: i128,
        count: u64,
        max_ahead: u64,
    ) -> (bool, i128, i128) {
        let At { now, index, start } = at;
        let period = i128::from(self.period.max(1));
        let limit = i128::from(self.limit.max(1));
        let count = i128::from(count);
        let penalty = (until - now).max(0);
        let mut first = used;
        if penalty > 0 {
            let penalty_window = (until - i128::from(self.origin)).div_euclid(period) - index;
            first = first.max(penalty_window * limit);
        }
        if count > 0 && first.rem_euclid(limit) + count > limit {
            first = (first + limit - 1).div_euclid(limit) * limit;
        }
        let window = first.div_euclid(limit);
        let end = first + count;
        let until_window = if window == 0 {
            0
        } else {
            start + window * period - now
        };
        let wait = until_window.max(penalty);
        let allowed = wait == 0 || (max_ahead > 0 && end <= limit + i128::from(max_ahead));
        (allowed, wait, end)
    }
}

/// The current time and the window it falls in.
#[derive(Debug, Clone, Copy)]
struct At {
    now: i128,
    index: i128,
    start: i128,
}

/// A state that reads as no state (kept until the next prune rather than removed under a
/// shard lock).
pub(crate) const EMPTY: WindowState = WindowState {
    index: 0,
    used: 0,
    until: 0,
};

fn wait_ticks(n: i128) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        period: 100,
        origin: 0,
        limit: 3,
    };

    fn take(count: u64) -> Op {
        Op::Take {
            count,
            max_ahead: 0,
        }
    }

    fn reserve(count: u64) -> Op {
        Op::Take {
            count,
            max_ahead: 5,
        }
    }

    /// Runs `(now, op)` in order from no state; compares `(allowed, wait, remaining)`.
    fn check(window: Window, ops: &[(i64, Op)], expected: &[(bool, u64, u64)]) {
        let mut state = None;
        let got: Vec<_> = ops
            .iter()
            .map(|&(now, op)| {
                let (o, next) = window.step(state, now, op);
                state = next;
                (o.allowed, o.wait, o.remaining)
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn limit_per_window_then_the_next_window() {
        check(
            W,
            &[
                (10, take(1)),
                (20, take(2)),
                (30, take(1)),
                (99, take(1)),
                (100, take(3)),
                (150, take(1)),
            ],
            &[
                (true, 0, 2),
                (true, 0, 0),
                (false, 70, 0),
                (false, 1, 0),
                (true, 0, 0),
                (false, 50, 0),
            ],
        );
    }

    #[test]
    fn windows_align_to_the_origin_even_before_it() {
        let w = Window { origin: 1_050, ..W };
        check(
            w,
            &[
                (940, take(3)),
                (949, take(1)),
                (950, take(1)),
                (1_049, take(3)),
            ],
            &[(true, 0, 0), (false, 1, 0), (true, 0, 2), (false, 1, 2)],
        );
    }

    #[test]
    fn reservations_fill_later_windows_without_straddling() {
        check(
            W,
            &[
                (10, take(2)),
                (10, reserve(2)),
                (10, reserve(2)),
                (10, reserve(2)),
                (100, Op::Peek { count: 1 }),
                (200, Op::Peek { count: 1 }),
                (200, take(1)),
            ],
            &[
                (true, 0, 1),
                (true, 90, 0),
                (true, 190, 0),
                (false, 290, 0),
                (false, 100, 0),
                (true, 0, 1),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn refunds_credit_the_current_window_only() {
        check(
            W,
            &[
                (10, take(3)),
                (20, Op::Refund { count: 2 }),
                (30, take(2)),
                (110, Op::Refund { count: 5 }),
                (120, take(3)),
            ],
            &[
                (true, 0, 0),
                (true, 0, 2),
                (true, 0, 0),
                (true, 0, 3),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn penalty_blocks_until_it_ends() {
        check(
            W,
            &[
                (10, Op::Penalize { delay: 150 }),
                (20, take(1)),
                (120, reserve(1)),
                (160, take(1)),
                (170, Op::Penalize { delay: 0 }),
                (180, take(1)),
            ],
            &[
                (true, 0, 0),
                (false, 140, 0),
                (true, 40, 0),
                (true, 0, 1),
                (true, 0, 1),
                (true, 0, 0),
            ],
        );
    }

    #[test]
    fn state_is_dropped_once_its_windows_are_over() {
        let (o, state) = W.step(None, 10, take(1));
        assert_eq!(o.reset_after, 90);
        let state = state.expect("a used window is remembered");
        assert!(W.step(Some(state), 99, Op::Peek { count: 0 }).1.is_some());
        assert!(W.step(Some(state), 100, Op::Peek { count: 0 }).1.is_none());
        assert!(W.step(None, 10, Op::Refund { count: 1 }).1.is_none());
        assert!(W.step(Some(EMPTY), 10, Op::Peek { count: 0 }).1.is_none());
    }
}
