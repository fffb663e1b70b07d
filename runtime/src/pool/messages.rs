//! The messages a [`PoolActor`](super::PoolActor) takes. The event it sends when an item ends,
//! [`WorkCompletedEvent`](super::WorkCompletedEvent), is a fact about work and lives in
//! `work.rs`.

use actix::Message;

use super::error::PoolError;
use super::work::{WorkId, WorkSpec, WorkStatus};

/// Persists a work item and queues it. Replies once the item is in the store.
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkId, PoolError>")]
pub struct Enqueue(pub WorkSpec);

/// Cancels an item: a pending one at once, a running one best-effort (its attempt is
/// abandoned at its next `.await`).
#[derive(Debug, Message)]
#[rtype(result = "Result<CancelOutcome, PoolError>")]
pub struct Cancel(pub WorkId);

/// What a [`Cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The item is now canceled (its on-complete notification fired with `Canceled`).
    Canceled,
    /// It had already ended, with this status.
    AlreadyEnded(WorkStatus),
    /// No such item (never enqueued, or its record expired).
    NotFound,
}

/// Sets how many items may run at once; 0 pauses the pool (running attempts go on).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetParallelism(pub usize);

/// Asks for the pool's counters.
#[derive(Debug, Message)]
#[rtype(result = "PoolStats")]
pub struct GetPoolStats;

/// A pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Current `max_parallelism`.
    pub parallelism: usize,
    /// Attempts running now (and their state writes).
    pub running: usize,
    /// Items ready to run, waiting for a slot.
    pub ready: usize,
    /// Items waiting for their `run_at` (first attempt or retry).
    pub delayed: usize,
    /// Items waiting for a handler of their kind to be registered.
    pub parked: usize,
    /// Whether the items persisted by earlier runs have been loaded.
    pub loaded: bool,
}

/// A handler was registered: parked items of its kind can run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct HandlersChanged;
