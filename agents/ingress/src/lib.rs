//! troupe-ingress, the stream ingress: tasks published with plain `XADD` to the ingress stream are read with a
//! consumer group, run (an agent turn or a workflow run), and answered on a results stream.
//!
//! - [`wire`]: the wire format (tasks, results, dead letters) and task validation.
//! - [`IngressActor`]: the consumer, one per daemon (the consumer name is the daemon's).
//! - `maintenance`: every few seconds, the ingress stream trimmed below what a group still
//!   needs (foreign groups nobody reads left out after `abandoned_group_after`), and other
//!   consumers owning nothing deleted after `consumer_expiry`; [`OwnConsumer`] deletes a
//!   drained generation's own.
//!
//! Guarantees (at-least-once): an entry is acknowledged in the same `MULTI` as its result
//! (and its idempotency record) is written, so an acked entry always has its result. A task
//! whose run fails with a transient error (store unavailable, daemon stopping) is left pending
//! and delivered again: after a restart from this consumer's own pending entries, or by any
//! consumer's `XAUTOCLAIM` once idle for `claim_idle`. An entry delivered more than
//! `max_deliveries` times, and a malformed one at once, is dead-lettered (written to the dead
//! stream and acked in one batch). A task id that completed (per group) is answered from its
//! stored result for `reply_retention` instead of running again; a reply stream expires
//! `reply_retention` after the last result or notice written to it; a task id running
//! anywhere holds a lease and is not started twice while the lease lasts.
//!
//! A workflow task is acknowledged as soon as its run is submitted: the `accepted` notice
//! (naming the run) and the `XACK` are written in the batch that makes the run adoptable, and
//! the run's end writes the final result and the `done` record, on whichever daemon ends it.
//! Its run id is derived from the group and task id, and created with `SET NX`, so a task
//! delivered again finds its run instead of starting another. With
//! `max_in_flight_per_group`, a task whose group is at its quota is parked (see `quota`).

pub mod auth;
mod maintenance;
mod quota;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use maintenance::GroupWatch;
use quota::GroupQuota;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use troupe_config::IngressSettings;
use troupe_runtime::metrics::metrics;
use troupe_runtime::store::{GroupRead, ReadFrom, Store, StoreError, StreamEntry, Trim, Write};
use troupe_runtime::Readiness;

use troupe_agents::conversations::{Ask, Conversations};
use troupe_agents::thread::TurnStatus;
use troupe_workflow::journal::{task_run_id, Reply};
use troupe_workflow::{Router, Submit, TaskRun};

pub use auth::{sign, ProducerAuth};
pub use maintenance::OwnConsumer;
use wire::{done_key, ErrorBody, Limits, Status};
pub use wire::{DeadLetter, Rejection, Target, Task, TaskResult};

/// Pause after a failed read before trying again.
const READ_BACKOFF: Duration = Duration::from_millis(200);

/// How often the ingress stream is trimmed below its oldest entry still needed (and idle
/// consumers owning nothing are deleted).
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// While the store keeps failing, a warning at most this often (with the count in between).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Store key of the lease held while a task runs.
fn running_key(group: &str, id: &str) -> String {
    format!("ingress:running:{group}:{id}")
}

/// Store key recording the first entry of a signed task id until the task expires: a
/// second entry with the same id is a replay.
fn nonce_key(group: &str, id: &str) -> String {
    format!("ingress:nonce:{group}:{id}")
}

/// Everything the consumer and its tasks share.
struct Shared {
    store: Arc<dyn Store>,
    conversations: Conversations,
    router: Option<Router>,
    agents: BTreeSet<String>,
    workflows: BTreeSet<String>,
    settings: IngressSettings,
    consumer: String,
    permits: Arc<Semaphore>,
    /// Tasks of one group running at once (`max_in_flight_per_group`); `None` when that is
    /// no bound of its own.
    quota: Option<Arc<GroupQuota>>,
    /// Room for tasks parked while their group is at its quota (`max_in_flight`).
    parking: Arc<Semaphore>,
    /// Told whether the consumer reads (the daemon's readiness).
    readiness: Readiness,
    /// Producer authentication, when `[ingress.auth]` asks for it.
    auth: Option<ProducerAuth>,
}

/// The ingress consumer. Reads in a loop on its own context; each valid task runs as its own
/// future (at most `max_in_flight`; reading pauses while all are taken). Stopping the actor
/// stops reading; tasks already running finish on their own, and whatever is not acked stays
/// pending for the next delivery.
pub struct IngressActor {
    shared: Arc<Shared>,
}

impl IngressActor {
    /// A consumer named `consumer` of `settings.group`, running agent tasks through
    /// `conversations` and workflow tasks through `router` (workflow tasks are refused as
    /// unknown without one).
    pub fn new(
        store: Arc<dyn Store>,
        conversations: Conversations,
        router: Option<Router>,
        workflows: BTreeSet<String>,
        settings: IngressSettings,
        consumer: String,
    ) -> IngressActor {
        let agents = conversations.agent_names().into_iter().collect();
        let workflows = if router.is_some() {
            workflows
        } else {
            BTreeSet::new()
        };
        let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let quota = (settings.max_in_flight_per_group < settings.max_in_flight)
            .then(|| GroupQuota::new(settings.max_in_flight_per_group));
        let parking = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let auth = ProducerAuth::from_settings(&settings.auth);
        IngressActor {
            shared: Arc::new(Shared {
                store,
                conversations,
                router,
                agents,
                workflows,
                settings,
                consumer,
                permits,
                quota,
                parking,
                readiness: Readiness::default(),
                auth,
            }),
        }
    }

    /// Runs tasks under `in_flight` (shared by every incarnation of the consumer, so its
    /// owner can wait for them); its size replaces `max_in_flight`.
    pub fn with_in_flight(mut self, in_flight: &InFlight) -> IngressActor {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.permits = in_flight.permits.clone();
        }
        self
    }

    /// Reports to `readiness` whether the consumer reads (it is then expected to).
    pub fn with_readiness(mut self, readiness: Readiness) -> IngressActor {
        readiness.expect_consumer();
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.readiness = readiness;
        }
        self
    }
}

impl Actor for IngressActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        tracing::info!(
            stream = %shared.settings.stream,
            group = %shared.settings.group,
            consumer = %shared.consumer,
            "ingress consumer started"
        );
        ctx.spawn(
            async move { shared.consume().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }
}

impl Shared {
    /// Creates the group (from the start of the stream) if it does not exist.
    async fn ensure_group(&self) -> Result<bool, StoreError> {
        let s = &self.settings;
        self.store.xgroup_create(&s.stream, &s.group, "0").await
    }

    /// The read loop; never returns.
    async fn consume(self: Arc<Self>) {
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
            .xpending_range(
                &s.stream,
                &s.group,
                &first.id,
                &last.id,
                entries.len(),
                Some(&self.consumer),
            )
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
            .xautoclaim(
                &s.stream,
                &s.group,
                &self.consumer,
                s.claim_idle,
                cursor,
                permits.len(),
            )
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
            self.dead_letter(&entry, Some(&task), "max_deliveries", reason, deliveries)
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

    /// Writes the dead letter and acks the entry in one batch.
    async fn dead_letter(
        &self,
        entry: &StreamEntry,
        task: Option<&Task>,
        kind: &str,
        reason: String,
        deliveries: u64,
    ) {
        let s = &self.settings;
        let (target, name) = task.map_or(("none", ""), labels);
        metrics().task(target, name, "dead_lettered");
        tracing::warn!(entry = %entry.id, %kind, %reason, deliveries, "ingress dead-letters an entry");
        let letter = DeadLetter::new(entry, s.max_entry_bytes, kind, reason, deliveries);
        let json = match serde_json::to_vec(&letter) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode a dead letter");
                return;
            }
        };
        let writes = vec![
            Write::XAdd {
                stream: s.dead.clone(),
                fields: vec![(wire::DEAD_FIELD.as_bytes().to_vec(), json)],
                trim: Some(Trim::MaxLen(s.max_len)),
            },
            Write::XAck {
                stream: s.stream.clone(),
                group: s.group.clone(),
                ids: vec![entry.id.clone()],
            },
        ];
        if let Err(err) = self.store.apply(writes).await {
            // Still pending: delivered again later, dead-lettered then.
            tracing::warn!(error = %err, "ingress could not write a dead letter; left pending");
        }
    }

    /// Whether `entry` is the first entry of its signed task id (or a redelivery of it), as
    /// recorded under the id's nonce key until the task expires. `None`: the store failed
    /// (the entry is left pending).
    async fn first_entry(&self, entry: &str, task: &Task, expires_in: Duration) -> Option<bool> {
        let key = nonce_key(&task.group, &task.id);
        let ttl = expires_in + Duration::from_secs(1);
        match self.store.set_nx(&key, entry.as_bytes(), Some(ttl)).await {
            Ok(true) => Some(true),
            Ok(false) => match self.store.get(&key).await {
                Ok(first) => Some(first.as_deref() == Some(entry.as_bytes())),
                Err(err) => {
                    tracing::warn!(error = %err, "ingress cannot read a task's nonce; left pending");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot record a task's nonce; left pending");
                None
            }
        }
    }

    /// Runs one task (or answers it from its stored result), then writes its result and acks
    /// its entry in one batch. A signed task (`expires_in` set) is first checked for replay.
    async fn handle(
        &self,
        entry: StreamEntry,
        task: Task,
        expires_in: Option<Duration>,
        deliveries: u64,
    ) {
        if let Some(expires_in) = expires_in {
            match self.first_entry(&entry.id, &task, expires_in).await {
                Some(true) => {}
                Some(false) => {
                    let reason = format!(
                        "unauthenticated: replayed: task id {} of group {:?} was already \
                         published in another entry",
                        wire::quote(&task.id),
                        task.group
                    );
                    self.dead_letter(&entry, Some(&task), "unauthenticated", reason, deliveries)
                        .await;
                    return;
                }
                None => return,
            }
        }
        let entry = entry.id;
        let done = done_key(&task.group, &task.id);
        let stored = match self.store.get(&done).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot read the task's record; left pending");
                return;
            }
        };
        if let Some(result) = stored {
            tracing::debug!("task already completed; answering from its stored result");
            self.finish(&entry, &task, result, None).await;
            return;
        }
        let lease = running_key(&task.group, &task.id);
        // One owner per attempt: a second delivery of a running task (a duplicate, a reclaim,
        // a restarted consumer) never shares the first attempt's lease.
        let owner = format!("{}:{:016x}", self.consumer, rand::random::<u64>());
        match self
            .store
            .acquire_lease(&lease, &owner, self.settings.claim_idle)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("task is running elsewhere; left pending");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "ingress cannot take the task's lease; left pending");
                return;
            }
        }
        let outcome = tokio::select! {
            result = self.execute(&entry, &task, &lease) => result,
            () = self.keep_claimed(&entry, &lease, &owner) => None,
        };
        let (target, name) = labels(&task);
        let result = match outcome {
            Some(Answer::Result(result)) => *result,
            Some(Answer::Acked) => {
                metrics().task(target, name, "accepted");
                return;
            }
            None => {
                let _ = self.store.release_lease(&lease, &owner).await;
                return;
            }
        };
        let outcome = match result.status {
            Status::Ok => "ok",
            Status::Error | Status::Accepted => "error",
        };
        metrics().task(target, name, outcome);
        let finished = match serde_json::to_vec(&result) {
            Ok(json) => {
                self.finish(&entry, &task, json, Some((done, lease.clone())))
                    .await
            }
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode a result");
                false
            }
        };
        if !finished {
            let _ = self.store.release_lease(&lease, &owner).await;
        }
    }

    /// While a task runs: renews its lease and resets its entry's idle time every third of
    /// `claim_idle`, so no other consumer reclaims it however long it runs. Returns (ending
    /// the task, left pending) only if the lease was lost to another owner.
    async fn keep_claimed(&self, entry: &str, lease: &str, owner: &str) {
        let s = &self.settings;
        let every = (s.claim_idle / 3).max(Duration::from_millis(10));
        let ids = [entry.to_owned()];
        loop {
            tokio::time::sleep(every).await;
            match self.store.renew_lease(lease, owner, s.claim_idle).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("task lease taken over by another owner; stopping here");
                    return;
                }
                Err(err) => tracing::debug!(error = %err, "could not renew the task lease"),
            }
            if let Err(err) = self
                .store
                .xclaim_touch(&s.stream, &s.group, &self.consumer, &ids)
                .await
            {
                tracing::debug!(error = %err, "could not refresh the entry's claim");
            }
        }
    }

    /// The name other Redis clients know the store key `key` by.
    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.store.key_prefix())
    }

    /// The writes that add `json` to the task's reply stream: the entry (the stream capped at
    /// `max_len`), then the stream's expiry renewed to `reply_retention`, so a reply stream
    /// nobody writes to any more goes away.
    fn reply(&self, task: &Task, json: Vec<u8>) -> Vec<Write> {
        let s = &self.settings;
        vec![
            Write::XAdd {
                stream: task.reply_to.clone(),
                fields: vec![(wire::RESULT_FIELD.as_bytes().to_vec(), json)],
                trim: Some(Trim::MaxLen(s.max_len)),
            },
            Write::Expire {
                key: task.reply_to.clone(),
                ttl: s.reply_retention,
            },
        ]
    }

    /// Writes the notice that a streamed task runs to its reply stream.
    async fn accepted(&self, task: &Task, notice: TaskResult) {
        let json = match serde_json::to_vec(&notice) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode an acceptance");
                return;
            }
        };
        if let Err(err) = self.store.apply(self.reply(task, json)).await {
            tracing::warn!(error = %err, "ingress could not write a task's acceptance");
        }
    }

    /// Writes `result` to the task's reply stream and acks; for a new result also records it
    /// under its `done` key and drops its running lease, all in one batch (the lease is
    /// needless once the result is recorded: a later delivery finds the record first).
    /// Returns whether the batch was written.
    async fn finish(
        &self,
        entry: &str,
        task: &Task,
        result: Vec<u8>,
        record: Option<(String, String)>,
    ) -> bool {
        let s = &self.settings;
        let mut writes = self.reply(task, result.clone());
        if let Some((done, lease)) = record {
            writes.push(Write::Set {
                key: done,
                value: result,
                ttl: Some(s.reply_retention),
            });
            writes.push(Write::Del { key: lease });
        }
        writes.push(Write::XAck {
            stream: s.stream.clone(),
            group: s.group.clone(),
            ids: vec![entry.to_owned()],
        });
        match self.store.apply(writes).await {
            Ok(()) => {
                tracing::debug!(reply_to = %task.reply_to, "task answered");
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "ingress could not write a result; left pending");
                false
            }
        }
    }

    /// Runs the task. `None`: a transient failure; the entry is left pending.
    async fn execute(&self, entry: &str, task: &Task, lease: &str) -> Option<Answer> {
        match &task.target {
            Target::Agent(agent) => {
                let (started, mut start) = tokio::sync::mpsc::unbounded_channel();
                let ask = Ask {
                    group: task.group.clone(),
                    user: task.user.clone(),
                    agent: agent.clone(),
                    thread: task.thread.clone(),
                    input: task.input.clone(),
                    stream: task.stream,
                    started: task.stream.then_some(started),
                };
                // The acceptance is written before the result: the turn waits for nothing, but
                // the result is written only once both are done.
                let announce = async {
                    if let Some(s) = start.recv().await {
                        let stream = self.redis_key(&s.stream);
                        let notice = TaskResult::accepted(
                            &task.id,
                            &task.group,
                            Some(s.thread),
                            None,
                            Some(stream),
                        );
                        self.accepted(task, notice).await;
                    }
                };
                let (asked, ()) = tokio::join!(self.conversations.ask(ask), announce);
                match asked {
                    Ok(outcome) => {
                        tracing::Span::current().record("thread", outcome.thread.as_str());
                        let (status, output, error) = match outcome.status {
                            TurnStatus::Completed => (Status::Ok, Some(outcome.answer), None),
                            TurnStatus::AwaitingApproval { approval, .. } => (
                                Status::Error,
                                None,
                                Some(ErrorBody {
                                    kind: "awaiting_approval".to_owned(),
                                    message: format!("the turn waits for the approval {approval}"),
                                }),
                            ),
                            TurnStatus::StepLimit => (
                                Status::Error,
                                None,
                                Some(ErrorBody {
                                    kind: "step_limit".to_owned(),
                                    message: "the agent hit its max_steps".to_owned(),
                                }),
                            ),
                        };
                        Some(TaskResult {
                            status,
                            output,
                            thread: Some(outcome.thread),
                            error,
                            usage: Some(outcome.usage),
                            delta_stream: outcome.delta_stream.map(|s| self.redis_key(&s)),
                            ..TaskResult::ok(&task.id, &task.group)
                        })
                    }
                    Err(err) if err.is_retryable() => {
                        tracing::warn!(error = %err, "task failed transiently; left pending");
                        None
                    }
                    Err(err) => Some(TaskResult::error(
                        &task.id,
                        &task.group,
                        err.kind(),
                        err.to_string(),
                    )),
                }
                .map(|result| Answer::Result(Box::new(result)))
            }
            Target::Workflow(workflow) => self.run_workflow(entry, task, workflow, lease).await,
        }
    }

    /// Submits the task's run — once per task id, whatever happened to earlier deliveries —
    /// and acknowledges the entry with an `accepted` result naming the run, in the batch that
    /// makes the run adoptable: the task holds no slot while its run goes on. The run's end
    /// writes the final result (and the task's `done` record), on whichever daemon ends it. A
    /// run that had ended already is answered from its record.
    async fn run_workflow(
        &self,
        entry: &str,
        task: &Task,
        workflow: &str,
        lease: &str,
    ) -> Option<Answer> {
        let router = self.router.as_ref()?;
        let s = &self.settings;
        let run = task_run_id(&task.group, &task.id);
        tracing::Span::current().record("run", run.as_str());
        let notice = TaskResult::accepted(&task.id, &task.group, None, Some(run.clone()), None);
        let json = match serde_json::to_vec(&notice) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "ingress cannot encode an acceptance");
                return None;
            }
        };
        let mut ack = self.reply(task, json);
        ack.extend([
            Write::XAck {
                stream: s.stream.clone(),
                group: s.group.clone(),
                ids: vec![entry.to_owned()],
            },
            Write::Del {
                key: lease.to_owned(),
            },
        ]);
        let submit = Submit {
            workflow: workflow.to_owned(),
            group: task.group.clone(),
            user: task.user.clone(),
            input: task.input.clone(),
        };
        let reply = Reply {
            task: task.id.clone(),
            stream: task.reply_to.clone(),
            max_len: s.max_len,
            retention_ms: u64::try_from(s.reply_retention.as_millis()).unwrap_or(u64::MAX),
        };
        match router.submit_task(submit, reply, ack).await {
            Ok(TaskRun::Submitted(_)) => {
                tracing::debug!(reply_to = %task.reply_to, "workflow task accepted");
                Some(Answer::Acked)
            }
            Ok(TaskRun::Ended(record)) => Some(Answer::Result(Box::new(TaskResult::of_run(
                &task.id,
                &task.group,
                &record.id,
                record.status.as_str(),
                record.output,
                record.error,
            )))),
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "workflow submit failed; left pending");
                None
            }
            Err(err) => Some(Answer::Result(Box::new(TaskResult::error(
                &task.id,
                &task.group,
                "workflow",
                err.to_string(),
            )))),
        }
    }
}

/// How a task was answered.
enum Answer {
    /// With this result, to write and ack.
    Result(Box<TaskResult>),
    /// Acknowledged already (a workflow task: its run answers when it ends).
    Acked,
}

/// The tasks a consumer has running; see [`IngressActor::in_flight`].
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    /// Room for `max` tasks at once (at least 1).
    pub fn new(max: usize) -> InFlight {
        let max = max.max(1);
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Tasks running now.
    pub fn count(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// Waits until no task runs, at most `limit`; whether none runs.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The metric labels of a task: its target kind and name.
fn labels(task: &Task) -> (&'static str, &str) {
    match &task.target {
        Target::Agent(name) => ("agent", name),
        Target::Workflow(name) => ("workflow", name),
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
