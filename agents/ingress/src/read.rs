//! The read loop of the consumer: its own pending entries first (left by a previous life),
//! then new ones, and entries of dead consumers reclaimed once idle for `claim_idle`; each
//! entry is dispatched as a task of its own under the in-flight semaphore and the group's
//! quota, and kept claimed while it waits or runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use troupe_runtime::error_kind::ErrorKind;
use troupe_runtime::metrics::metrics;
use troupe_runtime::store::{
    GroupRead, IdleClaim, PendingRange, ReadFrom, StoreError, StreamEntry,
};

use super::maintenance::GroupWatch;
use super::quota;
use super::wire::{self, Limits, Target};
use super::{labels, Shared, TRIM_EVERY};

/// Pause after a failed read before trying again.
const READ_BACKOFF: Duration = Duration::from_millis(200);

/// While the store keeps failing, a warning at most this often (with the count in between).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Shared {
    /// Creates the group (from the start of the stream) if it does not exist.
    async fn ensure_group(&self) -> Result<bool, StoreError> {
        let s = &self.settings;
        self.store.xgroup_create(&s.stream, &s.group, "0").await
    }

    /// The read loop; never returns.
    pub(super) async fn consume(self: Arc<Self>) {
        let s = &self.settings;
        loop {
            match self.ensure_group().await {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "ingress cannot create its consumer group yet");
                    tokio::time::sleep(READ_BACKOFF).await;
                }
            }
        }
        // Own pending entries first (left by a previous life of this consumer), then new ones.
        let mut pending_after: Option<String> = Some("0".to_owned());
        let claim_every =
            (s.claim_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        let mut next_claim = Instant::now();
        let mut next_trim = Instant::now() + TRIM_EVERY;
        let mut claim_cursor = "0-0".to_owned();
        let mut failures = Failures::default();
        let mut trim_failures = Failures::default();
        let mut expiry_failures = Failures::default();
        let mut watch = GroupWatch::default();
        loop {
            // Capacity first: stop reading while every slot is taken.
            let Ok(first) = self.permits.clone().acquire_owned().await else {
                return;
            };
            if self.readiness.is_draining() {
                // Shutting down: fetch and claim nothing more (the agents stop next); what
                // runs finishes or is left pending. The actor's stop drops this future.
                tracing::info!("ingress stopped fetching: the daemon is draining");
                std::future::pending::<()>().await;
            }
            let mut permits = vec![first];
            while permits.len() < s.batch.max(1) {
                match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            if Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                match self.claim(&mut claim_cursor, &mut permits).await {
                    Ok(()) => {}
                    Err(err) => self.read_failed(err, &mut failures).await,
                }
                if permits.is_empty() {
                    continue;
                }
            }
            let from = match &pending_after {
                Some(after) => ReadFrom::Pending(after.clone()),
                None => ReadFrom::New,
            };
            let read = GroupRead {
                stream: &s.stream,
                group: &s.group,
                consumer: &self.consumer,
                count: permits.len(),
                block: pending_after.is_none().then_some(s.block),
                from,
            };
            let entries = match self.store.xreadgroup(read).await {
                Ok(entries) => {
                    failures.recovered();
                    self.readiness.set_consumer(true);
                    entries
                }
                Err(err) => {
                    self.read_failed(err, &mut failures).await;
                    continue;
                }
            };
            if Instant::now() >= next_trim {
                next_trim = Instant::now() + TRIM_EVERY;
                match self.trim(&mut watch).await {
                    Ok(last_delivered) => {
                        trim_failures.recovered();
                        if let Some(after) = last_delivered {
                            self.keep_alive(&after).await;
                        }
                    }
                    Err(err) => {
                        if let Some(suppressed) = trim_failures.failed() {
                            tracing::warn!(
                                error = %err,
                                failures_since_last_warning = suppressed,
                                "ingress could not trim its stream; it grows until a trim works"
                            );
                        }
                    }
                }
                match self.expire_consumers().await {
                    Ok(_) => expiry_failures.recovered(),
                    Err(err) => {
                        if let Some(suppressed) = expiry_failures.failed() {
                            tracing::warn!(
                                error = %err,
                                failures_since_last_warning = suppressed,
                                "ingress could not delete idle consumers; retrying"
                            );
                        }
                    }
                }
            }
            let deliveries = match &pending_after {
                None => BTreeMap::new(),
                Some(_) if entries.is_empty() => {
                    pending_after = None;
                    continue;
                }
                Some(_) => {
                    pending_after = entries.last().map(|e| e.id.clone());
                    match self.deliveries(&entries).await {
                        Ok(counts) => counts,
                        Err(err) => {
                            self.read_failed(err, &mut failures).await;
                            continue;
                        }
                    }
                }
            };
            if self.readiness.is_draining() {
                // Read while the drain began: left pending for this consumer's next life.
                std::future::pending::<()>().await;
            }
            for entry in entries {
                let count = deliveries.get(&entry.id).copied().unwrap_or(1);
                let Some(permit) = permits.pop() else { break };
                self.dispatch(entry, count, permit).await;
            }
        }
    }

    /// Logs a failed read (throttled while failures go on); recreates the group (loudly)
    /// when Redis lost it.
    async fn read_failed(&self, err: StoreError, failures: &mut Failures) {
        self.readiness.set_consumer(false);
        if let StoreError::NoGroup { stream, group } = &err {
            tracing::error!(
                %stream,
                %group,
                "ingress consumer group is gone (Redis restarted without persistence?); \
                 recreating it from the start of the stream"
            );
            if let Err(err) = self.ensure_group().await {
                tracing::warn!(error = %err, "ingress could not recreate its consumer group");
                tokio::time::sleep(READ_BACKOFF).await;
            }
        } else {
            if let Some(suppressed) = failures.failed() {
                tracing::warn!(
                    error = %err,
                    failures_since_last_warning = suppressed,
                    "ingress read failed; retrying every {READ_BACKOFF:?}"
                );
            }
            tokio::time::sleep(READ_BACKOFF).await;
        }
    }

    /// Delivery counts of pending entries of this consumer.
    async fn deliveries(
        &self,
        entries: &[StreamEntry],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(BTreeMap::new());
        };
        let s = &self.settings;
        let pending = self
            .store
            .xpending_range(PendingRange {
                stream: &s.stream,
                group: &s.group,
                start: &first.id,
                end: &last.id,
                count: entries.len(),
                consumer: Some(&self.consumer),
            })
            .await?;
        Ok(pending.into_iter().map(|p| (p.id, p.deliveries)).collect())
    }

    /// Claims entries idle for `claim_idle` (of dead consumers) and dispatches them; ids whose
    /// entry was trimmed away are logged as losses.
    async fn claim(
        self: &Arc<Self>,
        cursor: &mut String,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), StoreError> {
        let s = &self.settings;
        let claimed = self
            .store
            .xautoclaim(IdleClaim {
                stream: &s.stream,
                group: &s.group,
                consumer: &self.consumer,
                min_idle: s.claim_idle,
                start: cursor,
                count: permits.len(),
            })
            .await?;
        *cursor = claimed.next.clone();
        if !claimed.deleted.is_empty() {
            tracing::error!(
                lost = claimed.deleted.len(),
                ids = ?claimed.deleted,
                "ingress: pending entries were deleted from the stream before completing; \
                 these tasks are lost"
            );
        }
        if claimed.claimed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = claimed.claimed.len(),
            "ingress reclaimed stale pending entries"
        );
        let deliveries = self.deliveries(&claimed.claimed).await?;
        for entry in claimed.claimed {
            let count = deliveries.get(&entry.id).copied().unwrap_or(1);
            let Some(permit) = permits.pop() else { break };
            self.dispatch(entry, count, permit).await;
        }
        Ok(())
    }

    /// Dead-letters a poison or malformed entry, or starts its task.
    async fn dispatch(
        self: &Arc<Self>,
        entry: StreamEntry,
        deliveries: u64,
        permit: OwnedSemaphorePermit,
    ) {
        let s = &self.settings;
        let limits = Limits {
            agents: &self.agents,
            workflows: &self.workflows,
            max_input_bytes: s.max_input_bytes,
            max_entry_bytes: s.max_entry_bytes,
            results: &s.results,
            prefix: self.store.key_prefix(),
        };
        let checked = wire::parse_entry(&entry, &limits).and_then(|task| match &self.auth {
            Some(auth) => auth
                .verify(&entry, &task, SystemTime::now())
                .map(|left| (task, Some(left))),
            None => Ok((task, None)),
        });
        let (task, expires_in) = match checked {
            Ok(checked) => checked,
            Err(rejection) => {
                let kind = rejection.kind();
                self.dead_letter(&entry, None, kind, rejection.to_string(), deliveries)
                    .await;
                return;
            }
        };
        if deliveries > u64::from(s.max_deliveries) {
            let reason = format!(
                "delivered {deliveries} times, more than max_deliveries = {}",
                s.max_deliveries
            );
            self.dead_letter(
                &entry,
                Some(&task),
                ErrorKind::MaxDeliveries,
                reason,
                deliveries,
            )
            .await;
            return;
        }
        let (target, name) = labels(&task);
        metrics().task(target, name, "received");
        let span = tracing::info_span!(
            "task",
            task = %task.id,
            group = %task.group,
            agent = tracing::field::Empty,
            workflow = tracing::field::Empty,
            entry = %entry.id,
            thread = tracing::field::Empty,
            run = tracing::field::Empty,
        );
        match &task.target {
            Target::Agent(name) => span.record("agent", name.as_str()),
            Target::Workflow(name) => span.record("workflow", name.as_str()),
        };
        let shared = self.clone();
        actix::spawn(
            async move {
                let Some((_permit, _slot)) = shared.slot(&entry.id, &task.group, permit).await
                else {
                    return;
                };
                let m = metrics();
                m.tasks_in_flight.inc();
                shared.handle(entry, task, expires_in, deliveries).await;
                m.tasks_in_flight.dec();
            }
            .instrument(span),
        );
    }

    /// The slot a task of `group` runs in: its reading slot (`permit`) if its group is below
    /// its quota; else it gives that back (once a parking slot is free), so other groups'
    /// tasks are read, and waits — its entry kept claimed — for a slot of its group. `None`:
    /// the daemon began draining meanwhile (the entry stays pending).
    async fn slot(
        &self,
        entry: &str,
        group: &str,
        permit: OwnedSemaphorePermit,
    ) -> Option<(OwnedSemaphorePermit, Option<quota::GroupSlot>)> {
        let Some(quota) = &self.quota else {
            return Some((permit, None));
        };
        if let Some(slot) = quota.try_take(group) {
            return Some((permit, Some(slot)));
        }
        let parked = self.parking.clone().acquire_owned().await.ok()?;
        drop(permit);
        tracing::debug!("the task's group is at its in-flight quota; parked");
        let slot = tokio::select! {
            slot = quota.take(group) => slot,
            () = self.keep_entry_claimed(entry) => return None,
        };
        if self.readiness.is_draining() {
            return None;
        }
        Some((parked, Some(slot)))
    }

    /// Resets the idle time of `entry` every third of `claim_idle` (so no consumer reclaims
    /// it, and its delivery count stays), for as long as it is awaited.
    async fn keep_entry_claimed(&self, entry: &str) {
        let s = &self.settings;
        let every = (s.claim_idle / 3).max(Duration::from_millis(10));
        let ids = [entry.to_owned()];
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = self
                .store
                .xclaim_touch(&s.stream, &s.group, &self.consumer, &ids)
                .await
            {
                tracing::debug!(error = %err, "could not refresh a parked entry's claim");
            }
        }
    }
}

/// Consecutive store failures of the read loop, for throttled warnings.
#[derive(Debug, Default)]
struct Failures {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Failures {
    /// Counts a failure; `Some(failures since the last warning)` when one is due now.
    fn failed(&mut self) -> Option<u64> {
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if !due {
            self.since_warning += 1;
            return None;
        }
        self.last_warning = Some(Instant::now());
        Some(std::mem::take(&mut self.since_warning))
    }

    /// A read succeeded: the next failure warns at once.
    fn recovered(&mut self) {
        if self.last_warning.take().is_some() {
            tracing::info!("ingress reads work again");
        }
        self.since_warning = 0;
    }
}
