//! Rate limits as both store backends apply them, in the same (microsecond) units: a
//! [`RateLimit`] checked and converted to ticks ([`Micros`], and the Redis scripts' arguments),
//! the outcome back, and the memory backend's clocks and window hash fields. The arithmetic
//! itself is [`crate::rate`].

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{StoreError, StoreResult};
use crate::rate::gcra::{Gcra, Op, Outcome};
use crate::rate::window::{Window, WindowState};
use crate::rate::{RateAlgorithm, RateLimit, RateOp, RateOutcome};

/// Largest count or time the stores accept, so that the Redis script's numbers (doubles) stay
/// exact; anything larger means "unbounded" in practice.
const MAX_TICKS: u64 = 1 << 50;

/// A [`RateLimit`] checked and converted to microsecond ticks, as both stores apply it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Micros {
    /// The algorithm.
    pub algorithm: MicrosAlgorithm,
    /// The operation.
    pub op: Op,
}

/// A [`RateAlgorithm`] in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MicrosAlgorithm {
    /// A token bucket.
    Gcra(Gcra),
    /// Fixed windows.
    Window(Window),
}

fn micros_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000))
        .unwrap_or(u64::MAX)
        .min(MAX_TICKS)
}

fn invalid(message: &str) -> StoreError {
    StoreError::InvalidArgument {
        op: "rate_limit",
        message: message.to_owned(),
    }
}

impl Micros {
    /// Checks `limit` and converts it; zero sizes are [`StoreError::InvalidArgument`].
    pub(crate) fn new(limit: &RateLimit) -> StoreResult<Micros> {
        let algorithm = match limit.algorithm {
            RateAlgorithm::Gcra { interval, capacity } => {
                if interval.is_zero() || capacity == 0 {
                    return Err(invalid(
                        "a token bucket needs an interval and a capacity above 0",
                    ));
                }
                MicrosAlgorithm::Gcra(Gcra {
                    interval: micros_ceil(interval).max(1),
                    capacity: capacity.min(MAX_TICKS),
                })
            }
            RateAlgorithm::FixedWindow {
                period,
                origin,
                limit,
            } => {
                if period.is_zero() || limit == 0 {
                    return Err(invalid("a fixed window needs a period and a limit above 0"));
                }
                MicrosAlgorithm::Window(Window {
                    period: micros_ceil(period).max(1),
                    origin: i64::try_from(origin.as_micros()).unwrap_or(i64::MAX),
                    limit: limit.min(MAX_TICKS),
                })
            }
        };
        let op = match limit.op {
            RateOp::Take { count, max_ahead } => Op::Take {
                count: count.min(MAX_TICKS),
                max_ahead: max_ahead.min(MAX_TICKS),
            },
            RateOp::Peek { count } => Op::Peek {
                count: count.min(MAX_TICKS),
            },
            RateOp::Refund { count } => Op::Refund {
                count: count.min(MAX_TICKS),
            },
            RateOp::Penalize { delay } => Op::Penalize {
                delay: micros_ceil(delay),
            },
        };
        Ok(Micros { algorithm, op })
    }

    /// The script arguments after the operation name, as the Redis scripts read them:
    /// GCRA `interval capacity count max_ahead delay`, window `period origin limit count
    /// max_ahead delay`.
    pub(crate) fn script_args(&self) -> Vec<String> {
        let (op, count, max_ahead, delay) = match self.op {
            Op::Take { count, max_ahead } => ("take", count, max_ahead, 0),
            Op::Peek { count } => ("peek", count, 0, 0),
            Op::Refund { count } => ("refund", count, 0, 0),
            Op::Penalize { delay } => ("penalize", 0, 0, delay),
        };
        let mut args = vec![op.to_owned()];
        match self.algorithm {
            MicrosAlgorithm::Gcra(g) => {
                args.extend([g.interval.to_string(), g.capacity.to_string()]);
            }
            MicrosAlgorithm::Window(w) => args.extend([
                w.period.to_string(),
                w.origin.to_string(),
                w.limit.to_string(),
            ]),
        }
        args.extend([count.to_string(), max_ahead.to_string(), delay.to_string()]);
        args
    }
}

/// An outcome in microsecond ticks as a [`RateOutcome`].
pub(crate) fn outcome_from_micros(o: Outcome) -> RateOutcome {
    RateOutcome {
        allowed: o.allowed,
        wait: Duration::from_micros(o.wait),
        remaining: o.remaining,
        reset_after: Duration::from_micros(o.reset_after),
    }
}

/// Microseconds from a process-wide base to `now` (negative before it): the memory store's
/// GCRA clock, on `tokio::time::Instant`.
pub(crate) fn micros_since_base(now: tokio::time::Instant) -> i64 {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(tokio::time::Instant::now);
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if now >= base {
        micros(now - base)
    } else {
        -micros(base - now)
    }
}

/// Microseconds since the Unix epoch: the memory store's fixed-window clock (windows are
/// aligned to wall-clock times, as on Redis, which reads `TIME`).
pub(crate) fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A window state as the stores keep it: hash fields `w`, `n`, `u` (decimal integers).
pub(crate) fn window_fields(state: &WindowState) -> [(&'static str, String); 3] {
    [
        ("w", state.index.to_string()),
        ("n", state.used.to_string()),
        ("u", state.until.to_string()),
    ]
}

/// Reads the hash fields written by [`window_fields`]; `None` if any is missing or not an
/// integer.
pub(crate) fn window_from_fields(get: impl Fn(&str) -> Option<i64>) -> Option<WindowState> {
    Some(WindowState {
        index: get("w")?,
        used: u64::try_from(get("n")?).ok()?,
        until: get("u")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_up_and_refuse_zero_sizes() {
        let limit = RateLimit {
            algorithm: RateAlgorithm::Gcra {
                interval: Duration::from_nanos(1_500),
                capacity: 3,
            },
            op: RateOp::Penalize {
                delay: Duration::from_nanos(1),
            },
        };
        let m = Micros::new(&limit).expect("valid");
        assert!(matches!(
            m.algorithm,
            MicrosAlgorithm::Gcra(Gcra {
                interval: 2,
                capacity: 3
            })
        ));
        assert_eq!(m.op, Op::Penalize { delay: 1 });
        assert_eq!(m.script_args(), ["penalize", "2", "3", "0", "0", "1"]);
        let zero = RateLimit {
            algorithm: RateAlgorithm::FixedWindow {
                period: Duration::ZERO,
                origin: Duration::ZERO,
                limit: 1,
            },
            op: RateOp::Peek { count: 1 },
        };
        assert!(matches!(
            Micros::new(&zero),
            Err(StoreError::InvalidArgument { .. })
        ));
        let window = RateLimit {
            algorithm: RateAlgorithm::FixedWindow {
                period: Duration::from_secs(1),
                origin: Duration::from_millis(5),
                limit: 7,
            },
            op: RateOp::Take {
                count: 2,
                max_ahead: u64::MAX,
            },
        };
        let args = Micros::new(&window).expect("valid").script_args();
        let max = MAX_TICKS.to_string();
        assert_eq!(
            args,
            ["take", "1000000", "5000", "7", "2", max.as_str(), "0"]
        );
    }

    #[test]
    fn window_fields_round_trip() {
        let s = WindowState {
            index: -3,
            used: 9,
            until: 0,
        };
        let fields = window_fields(&s);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| *f == name)
                .and_then(|(_, v)| v.parse().ok())
        };
        assert_eq!(window_from_fields(get), Some(s));
        assert_eq!(window_from_fields(|_| None), None);
    }
}
