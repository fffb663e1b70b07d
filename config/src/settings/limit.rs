//! `[limits.X]`: a rate limit (token bucket or fixed window) and where its state lives.

use std::time::Duration;

/// One rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// Algorithm, with its own settings.
    pub kind: LimitKind,
    /// Units allowed per `period` (> 0).
    pub rate: u64,
    /// The period `rate` applies to (> 0).
    pub period: Duration,
    /// What the limit is counted per.
    pub key: LimitKey,
    /// What is counted.
    pub unit: LimitUnit,
    /// Where the counters live.
    pub backend: LimitBackend,
    /// Shards of the counter (> 0).
    pub shards: u32,
    /// What to do when the store cannot be reached.
    pub on_store_error: OnStoreError,
    /// How long a caller waits for capacity; zero fails at once.
    pub max_wait: Duration,
    /// Units that may be reserved ahead of what the limit holds (reservations and waiting
    /// callers); further reservations are refused. Zero: no reservations.
    pub max_reserved: u64,
}

/// Rate-limiting algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKind {
    /// Refills `rate` tokens per `period`, holding at most `capacity`.
    TokenBucket {
        /// Bucket size (> 0); defaults to `rate`.
        capacity: u64,
    },
    /// At most `rate` per window of `period`.
    FixedWindow {
        /// Alignment of the windows (RFC 3339-like timestamp, kept as written).
        start: Option<String>,
    },
}

/// What a limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// One counter for everything.
    Global,
    /// One counter per task group.
    Group,
    /// One counter per user.
    User,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    /// Requests.
    Requests,
    /// Model tokens.
    Tokens,
}

/// Where a limit's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBackend {
    /// In this process.
    Local,
    /// In the Redis store, shared by all daemons.
    Redis,
}

/// Behaviour when the limit's store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Refuse the request.
    FailClosed,
    /// Let the request through.
    FailOpen,
}
