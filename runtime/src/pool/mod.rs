//! Work pools: persisted work items run by handlers registered per kind, with bounded
//! parallelism, priorities, delayed starts, retries with backoff, cancel, and an on-complete
//! notification that fires exactly once per item.
//!
//! ```text
//! Pool (handle, cheap to clone) ── Enqueue/Cancel/SetParallelism/GetPoolStats ──► PoolActor
//!   ├ register_handler(kind, Arc<dyn WorkHandler>)   shared by every incarnation
//!   ├ subscribe(Recipient<WorkCompletedEvent>)       shared by every incarnation
//!   └ status(id) / record(id)                        read from the store
//! ```
//!
//! Durability: an item is written to the store before `enqueue` returns, and every state
//! change is a compare-and-set of its record (see `persist.rs` for the key layout). A new pool
//! incarnation — after a panic, a daemon restart, or on another daemon sharing the store —
//! loads the open items; items left `Running` by a runner whose liveness lease has expired
//! (a crashed daemon) are retried, their interrupted attempt counted.
//!
//! Exactly once: only the daemon whose transition moves an item to an end state notifies,
//! once. In-process notifications (`notify`, subscribers) are lost if the daemon dies between
//! that transition and sending them; a [`FollowUp`] is persisted with the item and enqueued
//! under a derived id, so it is enqueued exactly once even across a crash.

mod actor;
mod error;
mod handlers;
mod messages;
mod persist;
mod retry;
mod work;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use parking_lot::{Mutex, RwLock};
use troupe_config::PoolSettings;

pub use self::actor::PoolActor;
pub use self::error::PoolError;
use self::messages::HandlersChanged;
pub use self::messages::{Cancel, CancelOutcome, Enqueue, GetPoolStats, PoolStats, SetParallelism};
use self::persist::Keys;
pub use self::work::{
    handler_fn, FollowUp, Work, WorkCompletedEvent, WorkError, WorkErrorKind, WorkFailure,
    WorkHandler, WorkId, WorkOutcome, WorkRecord, WorkSpec, WorkState, WorkStatus,
};
use crate::actor_ref::ActorRef;
use crate::store::Store;
use crate::supervisor::{ChildOptions, SupervisorSpec};

/// Runtime knobs of a pool that are not configuration (tests shorten them).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// A prefix of runner ids naming this process (e.g. the daemon's name), for logs.
    pub instance: String,
    /// TTL of a runner's liveness lease (renewed every third of it). Items a crashed
    /// daemon was running are retried this long after it died, at the latest.
    pub runner_lease: Duration,
    /// How often the store is rescanned for items this pool does not hold (enqueued by
    /// another daemon, or left by a dead runner).
    pub rescan: Duration,
    /// Pause before retrying a failed state write.
    pub store_retry: Duration,
    /// `instance` names one live process at most (a daemon's name): items left running by
    /// another runner of this instance — an earlier process under the same name, killed — are
    /// retried at once on loading, without waiting for its lease to expire.
    pub instance_is_unique: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            instance: "troupe".to_owned(),
            runner_lease: Duration::from_secs(10),
            rescan: Duration::from_secs(5),
            store_retry: Duration::from_millis(500),
            instance_is_unique: false,
        }
    }
}

/// What every incarnation of a pool shares: its handlers, subscribers and the runner ids
/// this process has used (a restarted incarnation retries its predecessors' items at once).
pub(crate) struct Shared {
    name: Arc<str>,
    handlers: RwLock<HashMap<String, Arc<dyn WorkHandler>>>,
    subscribers: RwLock<Vec<Recipient<WorkCompletedEvent>>>,
    runners: Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn WorkHandler>> {
        self.handlers.read().get(kind).cloned()
    }

    pub(crate) fn publish(&self, event: &WorkCompletedEvent) {
        for subscriber in self.subscribers.read().iter() {
            subscriber.do_send(event.clone());
        }
    }

    pub(crate) fn add_runner(&self, runner: &str) {
        self.runners.lock().push(runner.to_owned());
    }

    /// Whether `runner` is an earlier incarnation of this pool in this process (so dead,
    /// since incarnations do not overlap).
    pub(crate) fn is_previous_runner(&self, runner: &str) -> bool {
        let runners = self.runners.lock();
        runners
            .iter()
            .rev()
            .skip(1)
            .any(|previous| previous == runner)
    }
}

/// A work pool: the handle of a supervised [`PoolActor`]. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    actor: ActorRef<PoolActor>,
    store: Arc<dyn Store>,
    keys: Keys,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name()).finish()
    }
}

impl Pool {
    /// Declares the pool `name` as a child of `supervisor` (started with it, restarted by
    /// it). Its items are kept in `store`.
    pub fn child_of(
        supervisor: &mut SupervisorSpec,
        name: &str,
        settings: &PoolSettings,
        store: Arc<dyn Store>,
        options: PoolOptions,
        child: ChildOptions,
    ) -> Pool {
        let shared = Arc::new(Shared {
            name: name.into(),
            handlers: RwLock::new(HashMap::new()),
            subscribers: RwLock::new(Vec::new()),
            runners: Mutex::new(Vec::new()),
        });
        let policy = retry::policy(settings);
        let (parallelism, retention) = (settings.max_parallelism, settings.retention);
        let make = {
            let (shared, store) = (shared.clone(), store.clone());
            move |life: &crate::guard::Life| {
                PoolActor::new(
                    shared.clone(),
                    store.clone(),
                    policy,
                    parallelism,
                    retention,
                    options.clone(),
                    life.clone(),
                )
            }
        };
        let actor = supervisor.child(name, child, make);
        Pool {
            shared,
            actor,
            store,
            keys: Keys::new(name),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The pool actor's address.
    pub fn actor(&self) -> &ActorRef<PoolActor> {
        &self.actor
    }

    /// Registers the handler of `kind` (replacing any). Items of that kind that were
    /// waiting for it start.
    pub fn register_handler(&self, kind: &str, handler: Arc<dyn WorkHandler>) {
        self.shared
            .handlers
            .write()
            .insert(kind.to_owned(), handler);
        // Not running yet: it checks the handlers when it loads.
        let _ = self.actor.try_send(HandlersChanged);
    }

    /// Sends a [`WorkCompletedEvent`] for every item this pool ends, to `recipient`.
    pub fn subscribe(&self, recipient: Recipient<WorkCompletedEvent>) {
        self.shared.subscribers.write().push(recipient);
    }

    /// Persists and queues an item; returns its id.
    pub async fn enqueue(&self, spec: WorkSpec) -> Result<WorkId, PoolError> {
        self.actor.send(Enqueue(spec)).await?
    }

    /// Cancels an item (best-effort when it is running).
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, PoolError> {
        self.actor.send(Cancel(id.to_owned())).await?
    }

    /// Sets how many items may run at once; 0 pauses the pool.
    pub async fn set_parallelism(&self, parallelism: usize) -> Result<(), PoolError> {
        Ok(self.actor.send(SetParallelism(parallelism)).await?)
    }

    /// The pool's counters.
    pub async fn stats(&self) -> Result<PoolStats, PoolError> {
        Ok(self.actor.send(GetPoolStats).await?)
    }

    /// The item's status, from the store; `None` if unknown or expired.
    pub async fn status(&self, id: &str) -> Result<Option<WorkStatus>, PoolError> {
        Ok(self.record(id).await?.map(|record| record.status()))
    }

    /// The item's full record, from the store; `None` if unknown or expired.
    pub async fn record(&self, id: &str) -> Result<Option<WorkRecord>, PoolError> {
        let bytes = self
            .store
            .get(&self.keys.item(id))
            .await
            .map_err(PoolError::store(self.name()))?;
        bytes
            .map(|bytes| {
                WorkRecord::decode(&bytes).map_err(|err| PoolError::Corrupt {
                    pool: self.name().to_owned(),
                    id: id.to_owned(),
                    message: err.to_string(),
                })
            })
            .transpose()
    }
}

/// How many items of the pool `pool` are not finished (queued, delayed or running), as
/// persisted in `store` — readable without the pool's actor (e.g. by `troupe status`).
pub async fn open_items(store: &dyn Store, pool: &str) -> Result<usize, PoolError> {
    let open = store
        .hgetall(&Keys::new(pool).open())
        .await
        .map_err(PoolError::store(pool))?;
    Ok(open.len())
}
