//! One tick of one cron, run as a task detached from the scheduler ([`FireJob`]): claim the
//! tick (`claim.rs`), take the running lease, decide the tick, invoke the target while
//! renewing the lease, and record every outcome in the cron's history. Store failures on the
//! way are retried within the claim's time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use troupe_config::CronSettings;

use super::claim::{judge, Last, Verdict};
use super::{key, CronFireError, CronHandler, TickOutcome};
use crate::clock::now_ms;
use crate::guard::isolate;
use crate::retry::{retry_with, Backoff, Jitter, Next, RetryPolicy};
use crate::store::{Store, StoreError, Trim, Write};
use crate::trace::span;

/// First pause before a failed store call of a tick is tried again; doubled per failure up
/// to `STORE_RETRY_MAX`, within the claim's time.
const STORE_RETRY: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Everything one tick needs, detached from the actor.
pub(super) struct FireJob {
    pub(super) store: Arc<dyn Store>,
    pub(super) handler: Arc<dyn CronHandler>,
    pub(super) cron: String,
    pub(super) settings: CronSettings,
    pub(super) tick: u64,
    /// This daemon incarnation and tick: the claim's and the running lease's holder.
    pub(super) holder: String,
    pub(super) daemon: String,
    pub(super) run_lease: Duration,
    pub(super) claim_timeout: Duration,
    pub(super) history_len: u64,
    /// TTL of the claim key and the history: until well after the next tick.
    pub(super) keep: Duration,
}

/// What a claim attempt found.
enum Claimed {
    /// The claim is this daemon's.
    Ours(Last),
    /// Another daemon's to fire (or fired already).
    Taken,
    /// Another daemon's claim, undecided until then.
    Held { until_ms: u64 },
    /// The key changed between the read and the compare-and-set: look again.
    Raced,
}

impl FireJob {
    pub(super) async fn run(self) {
        let span = tracing::info_span!(span::CRON_TICK, cron = %self.cron, tick = self.tick);
        tracing::Instrument::instrument(self.run_inner(), span).await;
    }

    async fn run_inner(self) {
        let Some(claim) = self.claim().await else {
            return;
        };
        let running = key(&self.cron, "running");
        let until = claim.until_ms();
        let lease = self
            .retrying("take the running lease", until, || {
                self.store
                    .acquire_lease(&running, &self.holder, self.run_lease)
            })
            .await;
        let acquired = match lease {
            Ok(acquired) => acquired,
            Err(err) => {
                // Decided as failed here rather than left to a takeover that may fail alike.
                if self.decide(&claim).await {
                    let detail = format!("could not take the running lease: {err}");
                    self.record(self.tick, TickOutcome::Failed, &detail).await;
                }
                return;
            }
        };
        if !self.decide(&claim).await {
            if acquired {
                self.release(&running).await;
            }
            return;
        }
        if !acquired {
            tracing::info!("previous run still going: tick skipped");
            self.record(
                self.tick,
                TickOutcome::Skipped,
                "the previous run was still going",
            )
            .await;
            return;
        }
        self.record(self.tick, TickOutcome::Fired, "").await;
        let fire = isolate(
            &self.cron,
            self.handler
                .fire(&self.cron, &self.settings.target, &self.settings.input),
        );
        tokio::pin!(fire);
        let mut renew = tokio::time::interval((self.run_lease / 3).max(Duration::from_millis(10)));
        renew.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut fire => break result,
                _ = renew.tick() => {
                    if let Err(err) = self.store.renew_lease(&running, &self.holder, self.run_lease).await {
                        tracing::warn!(error = %err, "could not renew the cron's running lease");
                    }
                }
            }
        };
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err),
            Err(panicked) => Some(CronFireError::Panicked(panicked)),
        };
        if let Some(err) = failure {
            tracing::warn!(error = %err, "cron target failed");
            self.record(self.tick, TickOutcome::Failed, &err.to_string())
                .await;
        }
        self.release(&running).await;
    }

    /// Claims the tick (see `claim.rs`): `None` if another daemon has it, or if the store
    /// failed until the tick's claim time was up (logged; a claim that landed unseen is
    /// taken over or superseded by another daemon).
    async fn claim(&self) -> Option<Last> {
        let last = key(&self.cron, "last");
        let give_up = self.tick.saturating_add(ms(self.claim_timeout));
        loop {
            let found = self
                .retrying("claim the tick", give_up, || self.claim_once(&last))
                .await;
            match found {
                Ok(Claimed::Ours(claim)) => return Some(claim),
                Ok(Claimed::Taken) => {
                    tracing::debug!("tick taken by another daemon");
                    return None;
                }
                Ok(Claimed::Held { until_ms }) => {
                    // Another daemon's claim: look again once its time is up, in case that
                    // daemon died before deciding the tick.
                    let jitter = rand::random::<u64>() % 50;
                    let wait = until_ms.saturating_sub(now_ms()) + 1 + jitter;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                Ok(Claimed::Raced) => {}
                Err(_) => return None,
            }
        }
    }

    async fn claim_once(&self, last: &str) -> Result<Claimed, StoreError> {
        let current = self.store.get(last).await?;
        let now = now_ms();
        let seen = current.as_deref().and_then(Last::decode);
        let superseded = match judge(seen.as_ref(), self.tick, &self.holder, now) {
            Verdict::Ours => return Ok(seen.map_or(Claimed::Raced, Claimed::Ours)),
            Verdict::Taken => return Ok(Claimed::Taken),
            Verdict::Held { until_ms } => return Ok(Claimed::Held { until_ms }),
            Verdict::Claim { superseded } => superseded,
        };
        let mine = Last::Claimed {
            tick: self.tick,
            until_ms: now.saturating_add(ms(self.claim_timeout)),
            holder: self.holder.clone(),
        };
        let swapped = self
            .store
            .compare_and_set(
                last,
                current.as_deref(),
                Some(&mine.encode()),
                Some(self.keep),
            )
            .await?;
        if !swapped {
            return Ok(Claimed::Raced);
        }
        match superseded {
            Some((tick, claimer)) if tick == self.tick => {
                tracing::warn!(%claimer, "took over a tick its claimer had not fired in time");
            }
            Some((tick, claimer)) => {
                tracing::warn!(%claimer, claimed_tick = tick, "an earlier tick was claimed but never fired: recording it as failed");
                let detail = format!("claimed by {claimer}, which did not fire it");
                self.record(tick, TickOutcome::Failed, &detail).await;
            }
            None => {}
        }
        Ok(Claimed::Ours(mine))
    }

    /// Moves the key from this daemon's claim to decided; whether it did (`false`: another
    /// daemon took the tick over, or the store failed until the claim's time was up; logged).
    async fn decide(&self, claim: &Last) -> bool {
        let last = key(&self.cron, "last");
        let decided = Last::Decided {
            tick: self.tick,
            holder: Some(self.holder.clone()),
        };
        let (from, to) = (claim.encode(), decided.encode());
        let result = self
            .retrying("mark the tick decided", claim.until_ms(), || async {
                let swapped = self
                    .store
                    .compare_and_set(&last, Some(&from), Some(&to), Some(self.keep))
                    .await?;
                // A try whose answer was lost may have landed: then the key is ours.
                Ok(swapped || self.store.get(&last).await?.as_deref() == Some(to.as_slice()))
            })
            .await;
        match result {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("another daemon took the tick over before it was fired");
                false
            }
            Err(_) => false,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `until_ms` (ms since the epoch) has
    /// passed; every failure is logged, the last one as an error.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        until_ms: u64,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            backoff: Backoff {
                initial: STORE_RETRY,
                factor: 2.0,
                max: STORE_RETRY_MAX,
                jitter: Jitter::None,
            },
            max_total: Some(Duration::from_millis(until_ms.saturating_sub(now_ms()))),
        };
        retry_with(
            &policy,
            |_| op(),
            |err, _, next| {
                match next {
                    Next::Retry(_) => {
                        tracing::warn!(error = %err, "could not {what}; trying again")
                    }
                    Next::Stop(_) => tracing::error!(error = %err, "could not {what}"),
                }
                async move {
                    if let Next::Retry(wait) = next {
                        tokio::time::sleep(wait).await;
                    }
                    Ok(())
                }
            },
        )
        .await
    }

    async fn release(&self, running: &str) {
        if let Err(err) = self.store.release_lease(running, &self.holder).await {
            tracing::warn!(error = %err, "could not release the cron's running lease; it expires");
        }
    }

    /// Appends `tick`'s outcome to the history (capped, expiring `keep` after its last
    /// entry). Not retried (an entry whose answer was lost may have landed); a failure is
    /// logged and does not stop the tick.
    async fn record(&self, tick: u64, outcome: TickOutcome, detail: &str) {
        let name = match outcome {
            TickOutcome::Fired => "fired",
            TickOutcome::Skipped => "skipped",
            TickOutcome::Failed => "failed",
        };
        let stream = key(&self.cron, "history");
        let fields = [
            ("tick", tick.to_string()),
            ("outcome", name.to_owned()),
            ("daemon", self.daemon.clone()),
            ("detail", detail.to_owned()),
        ];
        let written = self
            .store
            .apply(vec![
                Write::XAdd {
                    stream: stream.clone(),
                    fields: fields
                        .into_iter()
                        .map(|(f, v)| (f.as_bytes().to_vec(), v.into_bytes()))
                        .collect(),
                    trim: Some(Trim::MaxLen(self.history_len)),
                },
                Write::Expire {
                    key: stream,
                    ttl: self.keep,
                },
            ])
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, outcome = name, "could not record the tick in the cron's history");
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
