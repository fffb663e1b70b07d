//! The persisted form of workflow runs: the run record, the definition snapshot, the journal
//! of step starts and results, large outputs, events, cancel requests, the index of unfinished
//! runs and the ownership leases.
//!
//! Layout (the backend adds its prefix; `{group}` scopes everything a run owns):
//! - `wf:{group}:{run}:meta` — JSON [`RunRecord`]: workflow, user, input, status, hashes.
//! - `wf:{group}:{run}:def` — JSON [`Snapshot`]: the definitions the run started with (its
//!   workflow and every child workflow) and their hash. Never rewritten.
//! - `wf:{group}:{run}:journal` — list of JSON [`Entry`]s, appended in order: a step's
//!   `started` before its agent is called, its `completed` (with the output) before the run
//!   moves on; plus notes (route fallbacks, scores), waits, restarts and the final status.
//! - `wf:{group}:{run}:out:{hash}` — an output longer than [`INLINE_MAX`] bytes, stored once
//!   (`SET NX`) and referenced from the journal by its hash.
//! - `wf:{group}:{run}:events` — hash: event name -> JSON data sent to the run.
//! - `wf:{group}:{run}:cancel` — present when a cancel was requested.
//! - `wf-open` — hash: run id -> group, every unfinished run (what daemons adopt).
//! - `wf-lease:{run}` — the lease of the daemon running the run.
//! - `wf-group:{run}` — the group that owns the run: asking for it as another group is
//!   [`WorkflowError::Forbidden`](crate::WorkflowError::Forbidden), not `NotFound`.
//!
//! Finished runs leave `wf-open`, and their keys expire after the retention period; a run
//! restarted from a step makes the keys it still needs permanent again.
//!
//! A run submitted for an ingress task has the id [`task_run_id`] of the task's group and id,
//! and its record names where the task's result goes ([`Reply`]): the batch that finishes the
//! run writes that result, so whichever daemon ends the run answers the task, once.
//!
//! The module's files:
//! - `keys.rs`: the keys outside a run's group (`wf-open`, `wf-group:`, `wf-lease:`) and
//!   the ids of runs and calls;
//! - `record.rs`: [`RunRecord`], [`RunStatus`] and [`Reply`];
//! - `snapshot.rs`: [`Snapshot`] and its hash;
//! - `entry.rs`: [`Entry`], [`EntryKind`], [`OutputRef`];
//! - `replay.rs`: [`Replay`], the fold of a journal into the results to reuse;
//! - `store.rs`: [`Journal`], the reads and writes of one run's keys, and [`open_runs`].

mod entry;
mod keys;
mod record;
mod replay;
mod snapshot;
mod store;

pub use entry::{Entry, EntryKind, OutputRef};
pub use keys::{call_id, group_key, lease_key, new_run_id, task_run_id, OPEN_INDEX, RUN_ID_LEN};
pub use record::{Reply, RunRecord, RunStatus};
pub use replay::{top_step, Replay};
pub use snapshot::{definition_hash, Snapshot};
pub(crate) use store::encode;
pub use store::{open_runs, Created, Journal, INLINE_MAX};
pub use troupe_runtime::clock::now_ms;
