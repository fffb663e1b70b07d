//! `LimitJanitor`: the actor that prunes the local limiters' per-key state on a timer, so
//! memory follows the set of active keys rather than every key ever seen.
//!
//! Takes [`Prune`] (prune now, reply with the sizes before and after). Supervised like any
//! infrastructure child (`ChildOptions::default()` under the `infra` supervisor); it holds
//! only a [`Limiters`] handle, so a restart loses nothing.

use std::time::Duration;

use actix::prelude::*;

use super::{Limiters, PruneReport};

/// How often the janitor prunes by default.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes every local limit of a [`Limiters`] every `interval`.
#[derive(Debug)]
pub struct LimitJanitor {
    limiters: Limiters,
    interval: Duration,
}

impl LimitJanitor {
    /// A janitor for `limiters`, pruning every `interval`.
    pub fn new(limiters: Limiters, interval: Duration) -> Self {
        LimitJanitor { limiters, interval }
    }

    fn prune(&self) -> PruneReport {
        let report = self.limiters.prune();
        if report.before != report.after {
            tracing::debug!(
                before = report.before,
                after = report.after,
                "pruned idle rate-limit keys"
            );
        }
        report
    }
}

impl Actor for LimitJanitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |janitor, _| {
            janitor.prune();
        });
    }
}

/// Prune now; answers with the number of keys held before and after.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PruneReport")]
pub struct Prune;

impl Handler<Prune> for LimitJanitor {
    type Result = MessageResult<Prune>;

    fn handle(&mut self, _msg: Prune, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.prune())
    }
}
