//! What one model call takes from its limits: [`Limiters::acquire_call`] before it (every
//! limit or none) and [`Limiters::settle_call`] after it (the token estimate corrected).

use std::time::Duration;

use tracing::Instrument as _;
use troupe_config::LimitUnit;

use super::{Acquired, LimitError, Limiters, Scope};
use crate::rate::RateOp;

impl Limiters {
    /// Takes what one model call needs from each of `limits` for `scope`: one unit from
    /// request limits, `tokens` (the estimate) from token limits, each waiting up to its
    /// `max_wait`. All or nothing: on a refusal, the units already taken are given back.
    pub async fn acquire_call(
        &self,
        limits: &[String],
        scope: Scope<'_>,
        tokens: u64,
    ) -> Result<Acquired, LimitError> {
        let mut taken: Vec<(&str, String, u64)> = Vec::with_capacity(limits.len());
        let mut waited = Duration::ZERO;
        for name in limits {
            let result = match self.get(name) {
                Ok(limit) => {
                    let key = limit.key_for(scope);
                    let count = limit.call_units(tokens);
                    let acquired = self.acquire(name, &key, count, None).await;
                    acquired.map(|a| (a, key, count))
                }
                Err(err) => Err(err),
            };
            match result {
                Ok((acquired, key, count)) => {
                    waited += acquired.waited;
                    taken.push((name, key, count));
                }
                Err(err) => {
                    for (name, key, count) in taken {
                        if let Err(undo) = self.refund(name, &key, count).await {
                            tracing::warn!(limit = name, key, error = %undo, "could not give units back");
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(Acquired { waited })
    }

    /// After a model call admitted by [`Limiters::acquire_call`] with `estimated` tokens:
    /// gives back what it did not use to the token limits, or charges what it used beyond the
    /// estimate (without waiting; later calls wait for it). A charge is at most one capacity,
    /// and is dropped when the key already owes more than `max_reserved` plus a capacity.
    pub async fn settle_call(
        &self,
        limits: &[String],
        scope: Scope<'_>,
        estimated: u64,
        used: u64,
    ) -> Result<(), LimitError> {
        for name in limits {
            let limit = self.get(name)?;
            if limit.settings.unit != LimitUnit::Tokens || used == estimated {
                continue;
            }
            let key = limit.key_for(scope);
            if used < estimated {
                self.refund(name, &key, estimated - used).await?;
            } else {
                let count = (used - estimated).min(limit.capacity);
                let charge = RateOp::Take {
                    count,
                    max_ahead: limit.max_reserved.saturating_add(limit.capacity),
                };
                let span = tracing::debug_span!("limit.charge", limit = name.as_str(), key, count);
                limit
                    .run(&key, limit.pick_shard(), charge, false)
                    .instrument(span)
                    .await?;
            }
        }
        Ok(())
    }
}
