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
//!
//! The actor's methods, by concern: `queue.rs` (admission, ordering, starting), `attempt.rs`
//! (attempts and the state writes of their outcomes), `cancel.rs`, `load.rs` (recovery from
//! the store, liveness, metrics).

mod attempt;
mod cancel;
mod load;
mod queue;

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
use super::retry::{self, RetryDecision};
use super::work::{
    now_ms, Work, WorkCompletedEvent, WorkError, WorkErrorKind, WorkFailure, WorkRecord, WorkState,
};
use super::{PoolError, PoolOptions, Shared};
use crate::detach::detach;
use crate::guard::{isolate, Life};
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreError};

/// How often a pool publishes its occupancy gauges.
const METRICS_EVERY: Duration = Duration::from_secs(1);

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

    /// The pool's retry policy with the attempts `record` allows (its spec's `max_attempts`,
    /// else the pool's, fixed when it was enqueued).
    pub(super) fn policy_of(&self, record: &WorkRecord) -> RetryPolicy {
        RetryPolicy {
            max_attempts: record.max_attempts.max(1),
            ..self.policy
        }
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
