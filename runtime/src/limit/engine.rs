//! One configured limit ([`Limit`]): its engine (a local token bucket, a local window, or
//! the store), its pace, its shards and their keys, and running one rate operation on the
//! shard of a key.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use troupe_config::{LimitKey, LimitSettings, LimitUnit};

use super::distributed::Distributed;
use super::local::LocalBucket;
use super::window::LocalWindow;
use super::{LimitError, Scope};
use crate::rate::gcra::Op;
use crate::rate::{RateOp, RateOutcome};

/// How a limit enforces.
#[derive(Debug)]
pub(super) enum Engine {
    Bucket(LocalBucket),
    Window(LocalWindow),
    Distributed(Distributed),
}

/// How fast a limit earns units, for converting between waits and units.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    /// One unit per this long.
    PerUnit(Duration),
    /// `limit` units per window.
    Window { period: Duration, limit: u64 },
}

impl Pace {
    /// Units earned within `d`.
    pub(super) fn units_within(self, d: Duration) -> u64 {
        let n = match self {
            Pace::PerUnit(t) => d.as_nanos() / t.as_nanos().max(1),
            Pace::Window { period, limit } => {
                (d.as_nanos() / period.as_nanos().max(1)).saturating_mul(u128::from(limit))
            }
        };
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Time to earn `units`.
    pub(super) fn time_for(self, units: u64) -> Duration {
        match self {
            Pace::PerUnit(t) => t.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX)),
            Pace::Window { period, limit } => {
                period.saturating_mul(u32::try_from(units / limit.max(1)).unwrap_or(u32::MAX))
            }
        }
    }
}

/// One configured limit.
#[derive(Debug)]
pub(super) struct Limit {
    pub(super) name: String,
    pub(super) settings: LimitSettings,
    pub(super) engine: Engine,
    /// Per shard.
    pub(super) capacity: u64,
    /// Per shard.
    pub(super) max_reserved: u64,
    pub(super) pace: Pace,
    pub(super) shards: u32,
    pub(super) next_shard: AtomicU32,
    /// `limit:{name}:{kind}:` — the store keys of a distributed limit start with it.
    pub(super) store_prefix: String,
}

impl Limit {
    pub(super) fn key_for(&self, scope: Scope<'_>) -> String {
        match self.settings.key {
            LimitKey::Global => "global".to_owned(),
            LimitKey::Group => scope.group.to_owned(),
            LimitKey::User => format!("{}/{}", scope.group, scope.user.unwrap_or("-")),
        }
    }

    /// Units one model call takes from this limit.
    pub(super) fn call_units(&self, tokens: u64) -> u64 {
        match self.settings.unit {
            LimitUnit::Requests => 1,
            LimitUnit::Tokens => tokens,
        }
    }

    pub(super) fn fits(&self, count: u64) -> Result<(), LimitError> {
        if count > self.capacity {
            return Err(LimitError::ExceedsCapacity {
                limit: self.name.clone(),
                requested: count,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    pub(super) fn rate_limited(&self, retry_after: Duration) -> LimitError {
        LimitError::RateLimited {
            limit: self.name.clone(),
            retry_after,
        }
    }

    /// The shard for the next call (round-robin).
    pub(super) fn pick_shard(&self) -> u32 {
        if self.shards == 1 {
            return 0;
        }
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards
    }

    /// The shard the next call would use, without moving on.
    pub(super) fn peek_shard(&self) -> u32 {
        if self.shards == 1 {
            return 0;
        }
        self.next_shard.load(Ordering::Relaxed) % self.shards
    }

    pub(super) fn local_key<'k>(&self, key: &'k str, shard: u32) -> Cow<'k, str> {
        if self.shards == 1 {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{key}#{shard}"))
        }
    }

    pub(super) fn store_key(&self, key: &str, shard: u32) -> String {
        if self.shards == 1 {
            format!("{}{key}", self.store_prefix)
        } else {
            format!("{}{key}#{shard}", self.store_prefix)
        }
    }

    /// Takes `count` units (reserving up to `max_ahead` ahead); returns the outcome and the
    /// shard used.
    pub(super) async fn take(
        &self,
        key: &str,
        count: u64,
        max_ahead: u64,
    ) -> Result<(RateOutcome, u32), LimitError> {
        let shard = self.pick_shard();
        if count == 0 {
            let now = RateOutcome {
                allowed: true,
                wait: Duration::ZERO,
                remaining: 0,
                reset_after: Duration::ZERO,
            };
            return Ok((now, shard));
        }
        self.fits(count)?;
        let op = RateOp::Take { count, max_ahead };
        Ok((self.run(key, shard, op, true).await?, shard))
    }

    /// Runs `op` on a local engine at once; `None` for a distributed limit.
    pub(super) fn run_local(&self, key: &str, shard: u32, op: RateOp) -> Option<RateOutcome> {
        let op = local_op(op);
        let o = match &self.engine {
            Engine::Bucket(b) => b.apply(&self.local_key(key, shard), op),
            Engine::Window(w) => w.apply(&self.local_key(key, shard), op),
            Engine::Distributed(_) => return None,
        };
        Some(RateOutcome {
            allowed: o.allowed,
            wait: Duration::from_nanos(o.wait),
            remaining: o.remaining,
            reset_after: Duration::from_nanos(o.reset_after),
        })
    }

    /// Runs `op` on `key`'s shard. `admission`: a store failure follows `on_store_error`.
    pub(super) async fn run(
        &self,
        key: &str,
        shard: u32,
        op: RateOp,
        admission: bool,
    ) -> Result<RateOutcome, LimitError> {
        match &self.engine {
            Engine::Distributed(d) => {
                d.apply(&self.name, &self.store_key(key, shard), op, admission)
                    .await
            }
            _ => Ok(self.run_local(key, shard, op).unwrap_or(RateOutcome {
                allowed: true,
                wait: Duration::ZERO,
                remaining: 0,
                reset_after: Duration::ZERO,
            })),
        }
    }

    /// Keys and slots of a local limit.
    pub(super) fn size(&self) -> Option<(usize, usize)> {
        match &self.engine {
            Engine::Bucket(b) => Some(b.size()),
            Engine::Window(w) => Some(w.size()),
            Engine::Distributed(_) => None,
        }
    }
}

/// A store operation in the local limiters' ticks (nanoseconds).
fn local_op(op: RateOp) -> Op {
    match op {
        RateOp::Take { count, max_ahead } => Op::Take { count, max_ahead },
        RateOp::Peek { count } => Op::Peek { count },
        RateOp::Refund { count } => Op::Refund { count },
        RateOp::Penalize { delay } => Op::Penalize {
            delay: u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX),
        },
    }
}
