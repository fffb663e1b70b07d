//! The operations on one limit's keys: admit ([`Limiters::limit`]), look
//! ([`Limiters::check`], [`Limiters::status`]), reserve and wait ([`Limiters::reserve`],
//! [`Limiters::acquire`], which gives its units back if dropped while waiting), and correct
//! ([`Limiters::refund`], [`Limiters::penalize`], [`Limiters::reset`]).

use std::num::NonZeroU32;
use std::time::Duration;

use tracing::Instrument as _;

use super::engine::Engine;
use super::{Acquired, Admission, LimitError, LimitStatus, Limiters, Reservation};
use crate::rate::RateOp;

impl Limiters {
    /// Takes `count` units from `key` if it has them now.
    pub async fn limit(&self, name: &str, key: &str, count: u64) -> Result<Admission, LimitError> {
        let span = tracing::debug_span!("limit.admit", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count == 0 {
                return Ok(Admission::Admitted);
            }
            limit.fits(count)?;
            let shard = limit.pick_shard();
            if let Engine::Bucket(bucket) = &limit.engine {
                // The hot path: governor's check, no conversion on the way.
                let n = NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN);
                let shard = (limit.shards > 1).then_some(shard);
                return Ok(match bucket.take_now(key, shard, n) {
                    Ok(()) => Admission::Admitted,
                    Err(wait) => Admission::Limited {
                        retry_after: Duration::from_nanos(wait),
                    },
                });
            }
            let take = RateOp::Take {
                count,
                max_ahead: 0,
            };
            let o = limit.run(key, shard, take, true).await?;
            Ok(Admission::from_outcome(&o))
        }
        .instrument(span)
        .await
    }

    /// Whether `count` units would be admitted now, taking nothing.
    pub async fn check(&self, name: &str, key: &str, count: u64) -> Result<Admission, LimitError> {
        let span = tracing::debug_span!("limit.check", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count == 0 {
                return Ok(Admission::Admitted);
            }
            limit.fits(count)?;
            let shard = limit.peek_shard();
            let o = limit.run(key, shard, RateOp::Peek { count }, true).await?;
            Ok(Admission::from_outcome(&o))
        }
        .instrument(span)
        .await
    }

    /// What `key` has left in limit `name`.
    pub async fn status(&self, name: &str, key: &str) -> Result<LimitStatus, LimitError> {
        let span = tracing::debug_span!("limit.status", limit = name, key);
        async {
            let limit = self.get(name)?;
            let mut status = LimitStatus {
                capacity: limit.capacity.saturating_mul(u64::from(limit.shards)),
                remaining: 0,
                reset_after: Duration::ZERO,
            };
            for shard in 0..limit.shards {
                let o = limit
                    .run(key, shard, RateOp::Peek { count: 0 }, false)
                    .await?;
                status.remaining = status.remaining.saturating_add(o.remaining);
                status.reset_after = status.reset_after.max(o.reset_after);
            }
            Ok(status)
        }
        .instrument(span)
        .await
    }

    /// Forgets `key`'s usage in limit `name`: it is back to full (penalties included).
    pub async fn reset(&self, name: &str, key: &str) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.reset", limit = name, key);
        async {
            let limit = self.get(name)?;
            match &limit.engine {
                Engine::Bucket(b) => {
                    (0..limit.shards).for_each(|s| b.reset(&limit.local_key(key, s)))
                }
                Engine::Window(w) => {
                    (0..limit.shards).for_each(|s| w.reset(&limit.local_key(key, s)))
                }
                Engine::Distributed(d) => {
                    let keys: Vec<String> =
                        (0..limit.shards).map(|s| limit.store_key(key, s)).collect();
                    d.reset(&limit.name, &keys).await?;
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Reserves `count` units of `key` now, to be used at `ready_at`. Refused with
    /// [`LimitError::TooManyReserved`] when more than the limit's `max_reserved` units would
    /// then be promised ahead.
    pub async fn reserve(
        &self,
        name: &str,
        key: &str,
        count: u64,
    ) -> Result<Reservation, LimitError> {
        let span = tracing::debug_span!("limit.reserve", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            let (o, _shard) = limit.take(key, count, limit.max_reserved).await?;
            if !o.allowed {
                return Err(LimitError::TooManyReserved {
                    limit: limit.name.clone(),
                    max_reserved: limit.max_reserved,
                    retry_after: o
                        .wait
                        .saturating_sub(limit.pace.time_for(limit.max_reserved)),
                });
            }
            Ok(Reservation {
                ready_at: tokio::time::Instant::now() + o.wait,
                wait: o.wait,
                count,
            })
        }
        .instrument(span)
        .await
    }

    /// Takes `count` units of `key`, waiting for them up to `max_wait` (`None`: the limit's
    /// `max_wait` setting). Fails with [`LimitError::RateLimited`] when they would not be
    /// there in time; nothing is taken then. Waiting callers are served in the order they
    /// called. If the returned future is dropped while waiting, the units are given back.
    pub async fn acquire(
        &self,
        name: &str,
        key: &str,
        count: u64,
        max_wait: Option<Duration>,
    ) -> Result<Acquired, LimitError> {
        let span = tracing::debug_span!("limit.acquire", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            let max_wait = max_wait.unwrap_or(limit.settings.max_wait);
            let ahead = limit.max_reserved.min(limit.pace.units_within(max_wait));
            let (o, shard) = limit.take(key, count, ahead).await?;
            if !o.allowed {
                count_limit(name, "rejected");
                return Err(limit.rate_limited(o.wait));
            }
            if o.wait.is_zero() {
                return Ok(Acquired {
                    waited: Duration::ZERO,
                });
            }
            let mut undo = RefundOnDrop {
                limiters: self.clone(),
                name: name.to_owned(),
                key: key.to_owned(),
                shard,
                count,
                armed: true,
            };
            if o.wait > max_wait {
                // Only a penalty can push a fitting reservation past max_wait.
                undo.give_back().await;
                count_limit(name, "rejected");
                return Err(limit.rate_limited(o.wait));
            }
            count_limit(name, "waited");
            tokio::time::sleep(o.wait).await;
            undo.armed = false;
            Ok(Acquired { waited: o.wait })
        }
        .instrument(span)
        .await
    }

    /// Gives `count` units back to `key` (taken but not used).
    pub async fn refund(&self, name: &str, key: &str, count: u64) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.refund", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count > 0 {
                let shard = limit.peek_shard();
                limit
                    .run(key, shard, RateOp::Refund { count }, false)
                    .await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Holds `key` for `retry_after` (a provider answered 429): nothing is admitted before
    /// then, and the bucket refills from empty afterwards. Zero does nothing.
    pub async fn penalize(
        &self,
        name: &str,
        key: &str,
        retry_after: Duration,
    ) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.penalize", limit = name, key, ?retry_after);
        async {
            let limit = self.get(name)?;
            for shard in 0..limit.shards {
                let op = RateOp::Penalize { delay: retry_after };
                limit.run(key, shard, op, false).await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Gives reserved units back if a waiting [`Limiters::acquire`] is dropped before its turn.
struct RefundOnDrop {
    limiters: Limiters,
    name: String,
    key: String,
    shard: u32,
    count: u64,
    armed: bool,
}

impl RefundOnDrop {
    async fn give_back(&mut self) {
        self.armed = false;
        if let Ok(limit) = self.limiters.get(&self.name) {
            let op = RateOp::Refund { count: self.count };
            if let Err(err) = limit.run(&self.key, self.shard, op, false).await {
                tracing::warn!(limit = self.name, key = self.key, error = %err, "could not give reserved units back");
            }
        }
    }
}

impl Drop for RefundOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(limit) = self.limiters.get(&self.name) else {
            return;
        };
        let op = RateOp::Refund { count: self.count };
        if limit.run_local(&self.key, self.shard, op).is_some() {
            return;
        }
        // A distributed limit: give back from a task, if there is a runtime to run it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut undo = RefundOnDrop {
                limiters: self.limiters.clone(),
                name: std::mem::take(&mut self.name),
                key: std::mem::take(&mut self.key),
                shard: self.shard,
                count: self.count,
                armed: true,
            };
            runtime.spawn(async move { undo.give_back().await });
        }
    }
}

/// Counts a rate-limit wait or rejection in the metrics.
fn count_limit(limit: &str, outcome: &'static str) {
    let labels = crate::metrics::LimitLabels {
        limit: limit.to_owned(),
        outcome,
    };
    crate::metrics::metrics()
        .rate_limits
        .get_or_create(&labels)
        .inc();
}
