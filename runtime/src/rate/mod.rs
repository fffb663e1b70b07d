//! Rate-limit vocabulary and arithmetic, a leaf shared by the limiters (`limit/`) and the store
//! backends (`store/`): the operation a limit asks of a counter ([`RateLimit`],
//! [`RateAlgorithm`], [`RateOp`]) and what it answers ([`RateOutcome`]), the token-bucket
//! arithmetic (`gcra.rs`) and the fixed-window arithmetic (`window.rs`). It imports nothing from
//! the rest of the crate.

pub(crate) mod gcra;
pub(crate) mod window;

use std::time::Duration;

/// One operation on a rate-limit counter, for [`Store::rate_limit`](crate::store::Store::rate_limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The algorithm and its parameters.
    pub algorithm: RateAlgorithm,
    /// What to do.
    pub op: RateOp,
}

/// A rate-limiting algorithm with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAlgorithm {
    /// A token bucket (GCRA): holds up to `capacity` units and earns one back per `interval`
    /// (rounded up to whole microseconds).
    Gcra {
        /// Time to earn one unit back (> 0).
        interval: Duration,
        /// Units the bucket holds (> 0).
        capacity: u64,
    },
    /// At most `limit` units per window of `period`; windows start at `origin` (time since
    /// the Unix epoch) plus whole periods.
    FixedWindow {
        /// Window length (> 0).
        period: Duration,
        /// A window start, since the Unix epoch (zero: windows aligned to the epoch).
        origin: Duration,
        /// Units per window (> 0).
        limit: u64,
    },
}

/// What [`Store::rate_limit`](crate::store::Store::rate_limit) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOp {
    /// Take `count` units if they can run now. If not, reserve them for later when at most
    /// `max_ahead` units would then be promised beyond what the limit holds (0: never
    /// reserve).
    Take {
        /// Units to take.
        count: u64,
        /// Units that may be promised ahead.
        max_ahead: u64,
    },
    /// What `Take { count, max_ahead: 0 }` would answer, changing nothing.
    Peek {
        /// Units asked about.
        count: u64,
    },
    /// Give units back (never beyond what the limit holds).
    Refund {
        /// Units given back.
        count: u64,
    },
    /// Admit nothing before `delay` from now (a provider said "slow down"); zero does nothing.
    Penalize {
        /// How long to hold everything.
        delay: Duration,
    },
}

/// The result of [`Store::rate_limit`](crate::store::Store::rate_limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOutcome {
    /// Take: the units were taken (to run now, or after `wait` if reserved). Peek: they could
    /// run now. Refund and penalize: always true.
    pub allowed: bool,
    /// When allowed, how long to wait before running the units; when refused, how long until
    /// they could run at once.
    pub wait: Duration,
    /// Units that could be taken right now, after the operation.
    pub remaining: u64,
    /// Time until the counter is back to full.
    pub reset_after: Duration,
}
