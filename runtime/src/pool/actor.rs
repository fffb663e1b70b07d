//! The pool actor: queues work items by priority and `run_at`, runs at most
//! `max_parallelism` attempts at once with the handler registered for each kind, retries by the
//! pool's policy, and moves every item through the store with compare-and-set transitions.
//!
//! Takes [`Enqueue`](super::Enqueue), [`Cancel`](super::Cancel),
//! [`SetParallelism`](super::SetParallelism), [`GetPoolStats`](super::GetPoolStats) (handlers in
//! `handlers.rs`). Supervised by the supervisor given to [`Pool::child_of`](super::Pool::child_of)
//! (the daemon's `pools` supervisor); a restarted incarnation reloads the open items from the
//! store and retries those its predecessor was running.
//!
//! Attempts run as futures in the actor's context (a panic in one is isolated and counts as a
//! retryable failure); stopping the actor abandons them, which is exactly what a crash does,
//! so the same recovery covers both.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::messages::{CancelOutcome, PoolStats};
use super::persist::{self, Cas, Found, Keys, Versioned};
use super::retry::{RetryDecision, RetryPolicy};
use super::work::{now_ms, Work, WorkCompletedEvent, WorkError, WorkRecord, WorkState};

/// How often a pool publishes its occupancy gauges.
const METRICS_EVERY: Duration = Duration::from_secs(1);
use super::{PoolError, PoolOptions, Shared};
use crate::detach::detach;
use crate::guard::{isolate, Life};
use crate::store::{Store, StoreError};

/// Failed tries of a state write after which it is logged as an error (and a waiting
/// canceller is answered); the write goes on being tried while the pool holds the item.
const WRITE_TRIES: u32 = 5;
/// The pause between tries of a state write grows by `store_retry` per try up to this many.
const MAX_RETRY_FACTOR: u32 = 10;

/// A waiting canceller.
pub(crate) type CancelReply = oneshot::Sender<Result<CancelOutcome, PoolError>>;

/// Where a locally known item is.
enum Phase {
    /// In the ready or delayed queue (entries with this slot's token are live).
    Queued,
    /// Waiting for a handler of its kind.
    Parked,
    /// A state write is in flight.
    Writing,
    /// An attempt is running.
    Running(AbortHandle),
}

/// What a state write was for, which decides what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Pending -> Running: then run the attempt.
    Claim,
    /// Running -> Pending (retry) or an end state.
    Finish,
    /// -> Canceled.
    Cancel,
    /// Running on a dead runner -> Pending or Failed.
    Reclaim,
}

/// A locally known open item.
struct Slot {
    record: WorkRecord,
    /// The bytes the store holds (the next transition's expectation).
    bytes: Vec<u8>,
    phase: Phase,
    /// Queue entries carrying another token are stale.
    token: u64,
    /// Whether it occupies one of the `max_parallelism` places.
    counted: bool,
    cancel_requested: bool,
    cancellers: Vec<CancelReply>,
    notify: Option<Recipient<WorkCompletedEvent>>,
}

impl Slot {
    fn new(
        (record, bytes): Versioned,
        phase: Phase,
        notify: Option<Recipient<WorkCompletedEvent>>,
    ) -> Self {
        Slot {
            record,
            bytes,
            phase,
            token: 0,
            counted: false,
            cancel_requested: false,
            cancellers: Vec::new(),
            notify,
        }
    }
}

/// A ready item: higher priority first, then enqueue order.
#[derive(PartialEq, Eq)]
struct Ready {
    priority: i32,
    order: u64,
    id: String,
    token: u64,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.order.cmp(&self.order))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An item waiting for its `run_at` (a min-heap through `Reverse`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delayed {
    run_at_ms: u64,
    order: u64,
    id: String,
    token: u64,
}

/// See the module documentation.
pub struct PoolActor {
    name: Arc<str>,
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    keys: Keys,
    policy: RetryPolicy,
    retention: Duration,
    options: PoolOptions,
    runner: String,
    life: Life,
    parallelism: usize,
    slots: HashMap<String, Slot>,
    ready: BinaryHeap<Ready>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    parked: usize,
    running: usize,
    next_token: u64,
    timer: Option<(u64, SpawnHandle)>,
    loaded: bool,
    scanning: bool,
    draining: bool,
}

impl PoolActor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        store: Arc<dyn Store>,
        policy: RetryPolicy,
        parallelism: usize,
        retention: Duration,
        options: PoolOptions,
        life: Life,
    ) -> Self {
        let runner = format!("{}-{:012x}", options.instance, rand::random::<u64>() >> 16);
        let name = shared.name.clone();
        PoolActor {
            keys: Keys::new(&name),
            name,
            shared,
            store,
            policy,
            retention,
            options,
            runner,
            life,
            parallelism,
            slots: HashMap::new(),
            ready: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            parked: 0,
            running: 0,
            next_token: 0,
            timer: None,
            loaded: false,
            scanning: false,
            draining: false,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    pub(crate) fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Attempts allowed by the pool's policy.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.policy.max_attempts
    }

    pub(crate) fn set_parallelism(&mut self, parallelism: usize, ctx: &mut Context<Self>) {
        tracing::info!(pool = %self.name, from = self.parallelism, to = parallelism, "parallelism changed");
        self.parallelism = parallelism;
        self.pump(ctx);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let now = now_ms();
        let mut stats = PoolStats {
            parallelism: self.parallelism,
            running: self.running,
            parked: self.parked,
            loaded: self.loaded,
            ..PoolStats::default()
        };
        for slot in self.slots.values() {
            if let Phase::Queued = slot.phase {
                if slot.record.run_at_ms <= now {
                    stats.ready += 1;
                } else {
                    stats.delayed += 1;
                }
            }
        }
        stats
    }

    // ---- queueing ------------------------------------------------------------------------

    /// Takes in a pending item (new, loaded, or a follow-up) and queues it.
    pub(crate) fn admit(
        &mut self,
        versioned: Versioned,
        notify: Option<Recipient<WorkCompletedEvent>>,
        ctx: &mut Context<Self>,
    ) {
        let id = versioned.0.id.clone();
        if self.slots.contains_key(&id) {
            return;
        }
        self.slots
            .insert(id.clone(), Slot::new(versioned, Phase::Queued, notify));
        self.queue(&id);
        self.pump(ctx);
    }

    /// Puts a known item in the ready or delayed queue (or parks it).
    fn queue(&mut self, id: &str) {
        self.next_token += 1;
        let token = self.next_token;
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.token = token;
        slot.phase = Phase::Queued;
        let record = &slot.record;
        if record.run_at_ms > now_ms() {
            self.delayed.push(Reverse(Delayed {
                run_at_ms: record.run_at_ms,
                order: token,
                id: id.to_owned(),
                token,
            }));
        } else {
            self.ready.push(Ready {
                priority: record.priority,
                order: token,
                id: id.to_owned(),
                token,
            });
        }
    }

    fn is_live(&self, id: &str, token: u64) -> bool {
        self.slots
            .get(id)
            .is_some_and(|s| s.token == token && matches!(s.phase, Phase::Queued))
    }

    /// Starts what may start now and arms the timer for the next delayed item.
    pub(crate) fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let now = now_ms();
        while let Some(Reverse(top)) = self.delayed.peek() {
            if top.run_at_ms > now && self.is_live(&top.id, top.token) {
                break;
            }
            let Some(Reverse(entry)) = self.delayed.pop() else {
                break;
            };
            if let Some(slot) = self.slots.get(&entry.id) {
                if slot.token == entry.token && matches!(slot.phase, Phase::Queued) {
                    self.ready.push(Ready {
                        priority: slot.record.priority,
                        order: entry.order,
                        id: entry.id,
                        token: entry.token,
                    });
                }
            }
        }
        while self.running < self.parallelism {
            let Some(entry) = self.ready.pop() else {
                break;
            };
            if !self.is_live(&entry.id, entry.token) {
                continue;
            }
            let kind_known = self
                .slots
                .get(&entry.id)
                .is_some_and(|s| self.shared.handler(&s.record.kind).is_some());
            if !kind_known {
                if let Some(slot) = self.slots.get_mut(&entry.id) {
                    tracing::debug!(pool = %self.name, work = %entry.id, kind = %slot.record.kind, "no handler for this kind yet: parked");
                    slot.phase = Phase::Parked;
                    self.parked += 1;
                }
                continue;
            }
            self.claim(&entry.id, ctx);
        }
        self.arm_timer(ctx);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(Reverse(next)) = self.delayed.peek() else {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        let due = next.run_at_ms;
        if self.timer.as_ref().is_some_and(|(at, _)| *at == due) {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(1));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.pump(ctx);
        });
        self.timer = Some((due, handle));
    }

    /// A handler was registered: parked items of known kinds go back to the queue.
    pub(crate) fn unpark(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                matches!(s.phase, Phase::Parked) && self.shared.handler(&s.record.kind).is_some()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.parked -= 1;
            self.queue(&id);
        }
        self.pump(ctx);
    }

    fn count(&mut self, id: &str) {
        if let Some(slot) = self.slots.get_mut(id) {
            if !slot.counted {
                slot.counted = true;
                self.running += 1;
            }
        }
    }

    fn uncount(&mut self, id: &str, ctx: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(id) {
            if slot.counted {
                slot.counted = false;
                self.running -= 1;
            }
        }
        if self.draining && self.running == 0 {
            ctx.stop();
        }
    }

    // ---- attempts --------------------------------------------------------------------------

    fn claim(&mut self, id: &str, ctx: &mut Context<Self>) {
        self.count(id);
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let mut next = slot.record.clone();
        next.attempts += 1;
        next.state = WorkState::Running {
            runner: self.runner.clone(),
        };
        self.write(id, next, Step::Claim, 1, ctx);
    }

    fn start_attempt(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let record = &slot.record;
        let Some(handler) = self.shared.handler(&record.kind) else {
            // Handlers are never removed, so this does not happen; fail safe anyway: the
            // claim is undone and the attempt that never ran is not counted.
            let mut next = record.clone();
            next.attempts = next.attempts.saturating_sub(1);
            next.state = WorkState::Pending;
            self.write(id, next, Step::Finish, 1, ctx);
            return;
        };
        let work = Work {
            pool: self.name.to_string(),
            id: record.id.clone(),
            kind: record.kind.clone(),
            payload: record.payload.clone(),
            attempt: record.attempts,
            max_attempts: record.max_attempts,
        };
        let span = tracing::info_span!(
            "pool.work",
            pool = %self.name,
            work = %record.id,
            kind = %record.kind,
            attempt = record.attempts
        );
        let actor = self.life.name().to_owned();
        let attempt = async move {
            tracing::debug!("attempt started");
            match isolate(&actor, handler.run(work)).await {
                Ok(result) => result,
                Err(panicked) => Err(WorkError::retryable(format!(
                    "handler panicked: {panicked}"
                ))),
            }
        }
        .instrument(span);
        let key = id.to_owned();
        let handle = detach(ctx, attempt, move |act: &mut Self, result, ctx| {
            act.attempt_done(&key, result, ctx)
        });
        if let Some(slot) = self.slots.get_mut(id) {
            slot.phase = Phase::Running(handle);
        }
    }

    fn attempt_done(
        &mut self,
        id: &str,
        result: Result<serde_json::Value, WorkError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.phase = Phase::Writing;
        let mut next = slot.record.clone();
        let attempt = next.attempts;
        match result {
            Ok(output) => {
                tracing::debug!(pool = %self.name, work = %id, attempt, "attempt succeeded");
                next.state = WorkState::Succeeded { output };
            }
            Err(error) => match self.policy.decide(attempt, &error) {
                RetryDecision::Retry(delay) => {
                    tracing::info!(pool = %self.name, work = %id, attempt, ?delay, error = %error, "attempt failed; will retry");
                    next.state = WorkState::Pending;
                    next.run_at_ms = now_ms()
                        .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                    next.last_error = Some(error.to_string());
                }
                RetryDecision::GiveUp(reason) => {
                    tracing::warn!(pool = %self.name, work = %id, attempt, error = %reason, "work failed");
                    next.last_error = Some(error.to_string());
                    next.state = WorkState::Failed { error: reason };
                }
            },
        }
        self.write(id, next, Step::Finish, 1, ctx);
    }

    // ---- state writes ------------------------------------------------------------------------

    /// Moves the item to `next` in the store (CAS from the bytes last seen), then continues
    /// according to `step`.
    fn write(
        &mut self,
        id: &str,
        mut next: WorkRecord,
        step: Step,
        try_no: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.phase = Phase::Writing;
        if try_no == 1 {
            // A retry keeps its `rev`, so that it recognises its first try if that landed.
            next.rev = rand::random();
        }
        let expected = slot.bytes.clone();
        let (store, keys, retention) = (self.store.clone(), self.keys.clone(), self.retention);
        let key = id.to_owned();
        let transition = async move {
            let result =
                persist::transition(store.as_ref(), &keys, &expected, &next, retention).await;
            (next, result)
        };
        detach(
            ctx,
            transition,
            move |act: &mut Self, (next, result), ctx| {
                act.written(&key, next, step, try_no, result, ctx)
            },
        );
    }

    fn written(
        &mut self,
        id: &str,
        next: WorkRecord,
        step: Step,
        try_no: u32,
        result: Result<Cas, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if !self.slots.contains_key(id) {
            return;
        }
        match result {
            Ok(Cas::Swapped(bytes)) => {
                let terminal = next.state.is_terminal();
                let cancel = match self.slots.get_mut(id) {
                    Some(slot) => {
                        slot.record = next;
                        slot.bytes = bytes;
                        slot.cancel_requested
                    }
                    None => return,
                };
                match step {
                    Step::Claim if cancel => self.cancel_now(id, ctx),
                    Step::Claim => self.start_attempt(id, ctx),
                    Step::Finish | Step::Cancel | Step::Reclaim => {
                        self.uncount(id, ctx);
                        if terminal {
                            self.complete(id, ctx);
                        } else if cancel {
                            self.cancel_now(id, ctx);
                        } else {
                            self.queue(id);
                        }
                    }
                }
            }
            Ok(Cas::Conflict(Some(fresh)))
                if matches!(next.state, WorkState::Succeeded { .. })
                    && !fresh.0.state.is_terminal() =>
            {
                // Another daemon moved the item (it took our runner for dead while the store
                // was out of our reach): the attempt succeeded all the same, so its result
                // goes onto the record as it is now instead of being thrown away.
                tracing::warn!(pool = %self.name, work = %id, "the record moved under a succeeded attempt; keeping its result");
                let (record, bytes) = *fresh;
                let mut rebased = record.clone();
                rebased.state = next.state;
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.record = record;
                    slot.bytes = bytes;
                }
                self.write(id, rebased, Step::Finish, 1, ctx);
            }
            Ok(Cas::Conflict(fresh)) => {
                tracing::debug!(pool = %self.name, work = %id, ?step, "the record changed under us");
                self.uncount(id, ctx);
                self.reconcile(id, fresh.map(|f| *f), ctx);
            }
            Err(err) => {
                // The same write again, with the same `rev`: if an earlier try landed (its
                // answer lost), the retry recognises it. The item stays held meanwhile, so
                // neither a rescan here nor another daemon (this runner's lease is renewed)
                // takes it: a claimed item starts, a finished attempt's result is kept.
                if try_no == WRITE_TRIES {
                    tracing::error!(pool = %self.name, work = %id, ?step, error = %err, try_no, "state write still failing; keeping the item and trying again");
                    if let Some(slot) = self.slots.get_mut(id) {
                        // A waiting canceller learns of the trouble; the cancel goes on.
                        let (pool, message) = (self.name.to_string(), err.to_string());
                        fail(std::mem::take(&mut slot.cancellers), || PoolError::Store {
                            pool: pool.clone(),
                            source: StoreError::Other {
                                op: "cancel",
                                message: message.clone(),
                            },
                        });
                    }
                } else {
                    tracing::warn!(pool = %self.name, work = %id, ?step, error = %err, try_no, "state write failed; trying again");
                }
                let key = id.to_owned();
                let pause = self.options.store_retry * try_no.min(MAX_RETRY_FACTOR);
                ctx.run_later(pause, move |act, ctx| {
                    act.write(&key, next, step, try_no.saturating_add(1), ctx)
                });
            }
        }
        self.pump(ctx);
    }

    /// The store says the item is now `fresh` (someone else moved it).
    fn reconcile(&mut self, id: &str, fresh: Option<Versioned>, ctx: &mut Context<Self>) {
        let Some((record, bytes)) = fresh else {
            if let Some(slot) = self.slots.remove(id) {
                answer(slot.cancellers, CancelOutcome::NotFound);
            }
            return;
        };
        match &record.state {
            WorkState::Pending => {
                let cancel = match self.slots.get_mut(id) {
                    Some(slot) => {
                        slot.record = record;
                        slot.bytes = bytes;
                        slot.cancel_requested
                    }
                    None => return,
                };
                if cancel {
                    self.cancel_now(id, ctx);
                } else {
                    self.queue(id);
                }
            }
            WorkState::Running { .. } => {
                // Another runner has it. A pending cancel goes to the store directly; that
                // runner's next write will find the item canceled.
                let cancel = self.slots.get(id).is_some_and(|s| s.cancel_requested);
                if cancel {
                    if let Some(slot) = self.slots.get_mut(id) {
                        slot.record = record;
                        slot.bytes = bytes;
                    }
                    self.cancel_now(id, ctx);
                } else {
                    self.slots.remove(id);
                }
            }
            _ => {
                if let Some(slot) = self.slots.remove(id) {
                    answer(
                        slot.cancellers,
                        CancelOutcome::AlreadyEnded(record.status()),
                    );
                }
            }
        }
    }

    /// The item ended here: notify exactly once (this daemon won the end transition), then
    /// finalize it in the store.
    fn complete(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.remove(id) else {
            return;
        };
        let record = slot.record;
        let Some(outcome) = record.outcome() else {
            return;
        };
        tracing::debug!(pool = %self.name, work = %id, attempts = record.attempts, status = ?record.status(), "work ended");
        let event = WorkCompletedEvent {
            pool: self.name.to_string(),
            id: record.id.clone(),
            kind: record.kind.clone(),
            attempts: record.attempts,
            outcome,
        };
        if let Some(recipient) = &slot.notify {
            recipient.do_send(event.clone());
        }
        self.shared.publish(&event);
        let reply = match record.state {
            WorkState::Canceled => CancelOutcome::Canceled,
            _ => CancelOutcome::AlreadyEnded(record.status()),
        };
        answer(slot.cancellers, reply);
        self.finalize(record, ctx);
    }

    fn finalize(&mut self, record: WorkRecord, ctx: &mut Context<Self>) {
        let (store, keys) = (self.store.clone(), self.keys.clone());
        let (max_attempts, retention) = (self.policy.max_attempts, self.retention);
        let finalize = async move {
            persist::finalize(store.as_ref(), &keys, &record, max_attempts, retention)
                .await
                .map_err(|err| (record.id, err))
        };
        detach(ctx, finalize, |act: &mut Self, result, ctx| match result {
            Ok(Some(follow_up)) => act.admit(follow_up, None, ctx),
            Ok(None) => {}
            Err((id, err)) => {
                tracing::warn!(pool = %act.name, work = %id, error = %err, "could not finalize; the next load will")
            }
        });
    }

    // ---- cancel ------------------------------------------------------------------------------

    /// Cancels a locally known item (see [`Cancel`](super::Cancel)); gives the reply back
    /// if the item is not known here.
    pub(crate) fn cancel_known(
        &mut self,
        id: &str,
        reply: CancelReply,
        ctx: &mut Context<Self>,
    ) -> Result<(), CancelReply> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Err(reply);
        };
        slot.cancellers.push(reply);
        if slot.cancel_requested {
            return Ok(());
        }
        slot.cancel_requested = true;
        match std::mem::replace(&mut slot.phase, Phase::Writing) {
            Phase::Writing => {
                // The write in flight decides; `written` sees `cancel_requested`.
                slot.phase = Phase::Writing;
            }
            Phase::Running(handle) => {
                tracing::info!(pool = %self.name, work = %id, "canceling a running attempt");
                handle.abort();
                self.cancel_now(id, ctx);
            }
            Phase::Parked => {
                self.parked -= 1;
                self.cancel_now(id, ctx);
            }
            Phase::Queued => self.cancel_now(id, ctx),
        }
        Ok(())
    }

    /// Cancels an item this pool does not hold, read from the store.
    pub(crate) fn cancel_loaded(
        &mut self,
        versioned: Versioned,
        reply: CancelReply,
        ctx: &mut Context<Self>,
    ) {
        let id = versioned.0.id.clone();
        if let Err(reply) = self.cancel_known(&id, reply, ctx) {
            let mut slot = Slot::new(versioned, Phase::Writing, None);
            slot.cancel_requested = true;
            slot.cancellers.push(reply);
            self.slots.insert(id.clone(), slot);
            self.cancel_now(&id, ctx);
        }
    }

    fn cancel_now(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let mut next = slot.record.clone();
        next.state = WorkState::Canceled;
        self.write(id, next, Step::Cancel, 1, ctx);
    }

    // ---- loading and liveness ------------------------------------------------------------------

    /// Loads open items this incarnation does not hold: pending ones are queued, ended ones
    /// finalized, and running ones whose runner is dead are retried.
    pub(crate) fn scan(&mut self, ctx: &mut Context<Self>) {
        if self.scanning || self.draining {
            return;
        }
        self.scanning = true;
        let known: HashSet<String> = self.slots.keys().cloned().collect();
        let load = persist::load(
            self.store.clone(),
            self.keys.clone(),
            known,
            self.runner.clone(),
        );
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| {
            act.scanning = false;
            match result {
                Ok((found, dead)) => act.loaded_items(found, &dead, ctx),
                Err(err) => {
                    tracing::warn!(pool = %act.name, error = %err, "could not load work from the store; will try again")
                }
            }
        }));
    }

    fn loaded_items(&mut self, found: Vec<Found>, dead: &HashSet<String>, ctx: &mut Context<Self>) {
        let first = !self.loaded;
        self.loaded = true;
        let (mut queued, mut reclaimed) = (0usize, 0usize);
        let mut missing = Vec::new();
        for item in found {
            let (record, bytes) = match item {
                Found::Record(versioned) => *versioned,
                Found::Missing(id) => {
                    missing.push(id);
                    continue;
                }
            };
            if self.slots.contains_key(&record.id) {
                continue;
            }
            match &record.state {
                WorkState::Pending => {
                    queued += 1;
                    let id = record.id.clone();
                    self.slots
                        .insert(id.clone(), Slot::new((record, bytes), Phase::Queued, None));
                    self.queue(&id);
                }
                WorkState::Running { runner } => {
                    let orphan = *runner == self.runner
                        || dead.contains(runner)
                        || self.shared.is_previous_runner(runner)
                        || self.is_earlier_process(runner);
                    if orphan {
                        reclaimed += 1;
                        self.reclaim((record, bytes), ctx);
                    }
                }
                _ => self.finalize(record, ctx),
            }
        }
        if !missing.is_empty() {
            let (store, open) = (self.store.clone(), self.keys.open());
            ctx.spawn(
                async move {
                    let fields: Vec<&str> = missing.iter().map(String::as_str).collect();
                    store.hdel(&open, &fields).await
                }
                .into_actor(self)
                .map(|result, act, _| {
                    if let Err(err) = result {
                        tracing::warn!(pool = %act.name, error = %err, "could not drop stale index entries");
                    }
                }),
            );
        }
        if first || queued > 0 || reclaimed > 0 {
            tracing::info!(pool = %self.name, queued, reclaimed, "loaded work from the store");
        }
        if self.parked > 0 {
            // In case a `HandlersChanged` was lost (sent while the mailbox was full).
            self.unpark(ctx);
        }
        self.pump(ctx);
    }

    /// An item whose runner died mid-attempt: that attempt counts; retry it if attempts
    /// remain, else it fails.
    fn reclaim(&mut self, versioned: Versioned, ctx: &mut Context<Self>) {
        let id = versioned.0.id.clone();
        let mut next = versioned.0.clone();
        let error = format!("its runner stopped during attempt {}", next.attempts);
        tracing::warn!(pool = %self.name, work = %id, attempt = next.attempts, "work's runner died; retrying it");
        next.state = if next.attempts >= next.max_attempts {
            WorkState::Failed {
                error: format!("{error} (gave up after {} attempts)", next.attempts),
            }
        } else {
            WorkState::Pending
        };
        next.run_at_ms = now_ms();
        next.last_error = Some(error);
        self.slots
            .insert(id.clone(), Slot::new(versioned, Phase::Writing, None));
        self.write(&id, next, Step::Reclaim, 1, ctx);
    }

    /// Whether `runner` is another runner of this pool's instance (`{instance}-{12 hex}`)
    /// when the instance names one live process at most: then it ran in an earlier process
    /// under the same name, which is dead (this process's earlier incarnations are
    /// recognized by `is_previous_runner`).
    fn is_earlier_process(&self, runner: &str) -> bool {
        self.options.instance_is_unique
            && runner != self.runner
            && runner
                .strip_prefix(self.options.instance.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Sets this pool's occupancy gauges.
    fn publish_metrics(&self) {
        let stats = self.stats();
        let m = crate::metrics::metrics();
        for (state, n) in [
            ("running", stats.running),
            ("ready", stats.ready),
            ("delayed", stats.delayed),
        ] {
            let labels = crate::metrics::PoolLabels {
                pool: self.name.to_string(),
                state,
            };
            m.pool_items.get_or_create(&labels).set(n as i64);
        }
    }

    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let (store, key, runner) = (
            self.store.clone(),
            self.keys.runner(&self.runner),
            self.runner.clone(),
        );
        let ttl = self.options.runner_lease;
        ctx.spawn(
            async move { store.acquire_lease(&key, &runner, ttl).await }
                .into_actor(self)
                .map(|result, act, _| match result {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(pool = %act.name, runner = %act.runner, "runner lease held by someone else")
                    }
                    Err(err) => {
                        tracing::warn!(pool = %act.name, error = %err, "could not renew the runner lease")
                    }
                }),
        );
    }
}

fn answer(replies: Vec<CancelReply>, outcome: CancelOutcome) {
    for reply in replies {
        let _ = reply.send(Ok(outcome.clone()));
    }
}

fn fail(replies: Vec<CancelReply>, error: impl Fn() -> PoolError) {
    for reply in replies {
        let _ = reply.send(Err(error()));
    }
}

impl Actor for PoolActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(pool = %self.name, runner = %self.runner, parallelism = self.parallelism, "pool started");
        self.shared.add_runner(&self.runner);
        // Take the liveness lease before loading, so no other daemon reclaims what we claim.
        let (store, key, runner) = (
            self.store.clone(),
            self.keys.runner(&self.runner),
            self.runner.clone(),
        );
        let ttl = self.options.runner_lease;
        ctx.wait(
            async move { store.acquire_lease(&key, &runner, ttl).await }
                .into_actor(self)
                .map(|result, act, _| {
                    if let Err(err) = result {
                        tracing::warn!(pool = %act.name, error = %err, "could not take the runner lease");
                    }
                }),
        );
        self.scan(ctx);
        let renew = (self.options.runner_lease / 3).max(Duration::from_millis(10));
        ctx.run_interval(renew, |act, ctx| act.renew_lease(ctx));
        ctx.run_interval(self.options.rescan, |act, ctx| act.scan(ctx));
        ctx.run_interval(METRICS_EVERY, |act, _| act.publish_metrics());
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if self.running > 0 && !self.draining {
            tracing::info!(pool = %self.name, running = self.running, "pool stopping: draining running attempts");
            self.draining = true;
            return Running::Continue;
        }
        Running::Stop
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Give the lease back only if nothing is left running under it: attempts abandoned
        // by a forced stop stay claimed until the lease expires, then are retried.
        let abandoned = self.slots.values().any(|s| s.counted);
        if !abandoned {
            let (store, key, runner) = (
                self.store.clone(),
                self.keys.runner(&self.runner),
                self.runner.clone(),
            );
            actix::spawn(async move {
                let _ = store.release_lease(&key, &runner).await;
            });
        }
        for (_, slot) in self.slots.drain() {
            // Attempts run as tasks of their own: they end with the pool, as they would
            // have in its context.
            if let Phase::Running(handle) = &slot.phase {
                handle.abort();
            }
            fail(slot.cancellers, || PoolError::Stopping {
                pool: self.name.to_string(),
            });
        }
        tracing::info!(pool = %self.name, abandoned, "pool stopped");
    }
}
