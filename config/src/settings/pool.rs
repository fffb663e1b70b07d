//! `[pools.X]`: a job pool: parallelism, retries with backoff, retention of results.

use std::time::Duration;

use crate::defaults;

/// One job pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Jobs running at once (> 0).
    pub max_parallelism: usize,
    /// Attempts per job, the first included (> 0).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Factor applied to the delay per retry (>= 1).
    pub backoff_base: f64,
    /// Largest retry delay (>= `initial_backoff`).
    pub max_backoff: Duration,
    /// Randomise retry delays.
    pub jitter: bool,
    /// How long finished jobs are kept.
    pub retention: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_parallelism: defaults::POOL_MAX_PARALLELISM,
            max_attempts: defaults::POOL_MAX_ATTEMPTS,
            initial_backoff: defaults::POOL_INITIAL_BACKOFF,
            backoff_base: defaults::POOL_BACKOFF_BASE,
            max_backoff: defaults::POOL_MAX_BACKOFF,
            jitter: defaults::POOL_JITTER,
            retention: defaults::POOL_RETENTION,
        }
    }
}
