//! The usage tally: folds the usage log ([`super::log`]) into the day hashes. Every daemon on
//! Redis runs one, as a child of its `infra` supervisor; the one holding the `usage-tally:lease`
//! lease folds, the others only try to take the lease. Each tick it folds the whole log, in
//! batches of [`BATCH`] entries, each batch one atomic write (counters, deletions, fold
//! count). The lease is checked again right before each batch is written, so two daemons
//! fold the same entries only if one stalls longer than the lease between that check and its
//! write, as with any lease.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use troupe_runtime::store::Store;

use super::log::{fold as fold_batch, LOG};
use crate::error::AgentError;

/// The lease of the daemon that folds.
pub const LEASE: &str = "usage-tally:lease";
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Log entries folded in one batch. A batch costs one counter set per (day, pair) whatever
/// its size, but its entries are read whole: 5,000 cost the daemon about 20 MiB more RSS
/// under W1 (BENCHMARKS.md) for a tenth of a command less per call.
pub const BATCH: usize = 1000;

/// What one [`fold`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Calls added to the counters.
    pub calls: usize,
    /// Entries dropped as malformed.
    pub malformed: usize,
}

/// Folds the whole usage log into the counters if `owner` holds (or takes) the tally's lease;
/// without the lease it does nothing.
pub async fn fold(store: &dyn Store, owner: &str) -> Result<Folded, AgentError> {
    let mut done = Folded::default();
    if !store.acquire_lease(LEASE, owner, LEASE_TTL).await? {
        return Ok(done);
    }
    loop {
        let entries = store.xread(LOG, "0", BATCH, None).await?;
        if entries.is_empty() {
            return Ok(done);
        }
        let (writes, malformed) = fold_batch(&entries);
        for (id, why) in &malformed {
            tracing::warn!(stream = LOG, entry = %id, reason = %why, "dropped a malformed usage log entry");
        }
        if !store.renew_lease(LEASE, owner, LEASE_TTL).await? {
            return Ok(done);
        }
        store.apply(writes).await?;
        done.calls += entries.len() - malformed.len();
        done.malformed += malformed.len();
        if entries.len() < BATCH {
            return Ok(done);
        }
    }
}

/// The actor that folds the usage log every `interval`. It takes no messages.
pub struct UsageTally {
    store: Arc<dyn Store>,
    owner: String,
    interval: Duration,
    folding: bool,
}

impl UsageTally {
    /// A tally over `store` for daemon `owner` (its lease holder name).
    pub fn new(store: Arc<dyn Store>, owner: impl Into<String>, interval: Duration) -> Self {
        UsageTally {
            store,
            owner: owner.into(),
            interval,
            folding: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.folding {
            return;
        }
        self.folding = true;
        let (store, owner) = (self.store.clone(), self.owner.clone());
        ctx.spawn(
            async move { fold(store.as_ref(), &owner).await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.folding = false;
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "folding the usage log failed; it is retried");
                    }
                }),
        );
    }
}

impl Actor for UsageTally {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let (store, owner) = (self.store.clone(), self.owner.clone());
        // Hand the lease on at once rather than after its TTL.
        actix::spawn(async move {
            if let Err(err) = store.release_lease(LEASE, &owner).await {
                tracing::debug!(error = %err, "releasing the usage tally's lease failed");
            }
        });
    }
}
