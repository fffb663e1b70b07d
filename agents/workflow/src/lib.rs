//! troupe-workflow: durable workflows — `[workflows.NAME]` run step by step, every step
//! journaled in the store so that a run survives the daemon that started it — and what a
//! fired cron does. Built on troupe-agents (each call is a turn in a thread of its own).
//!
//! - [`template`]: step inputs (`{{input}}`, `{{steps.NAME.output}}`).
//! - [`label`]: labels and scores parsed from what classifiers and scorers answer.
//! - [`journal`]: the store layout of runs (records, snapshots, journals, index, leases).
//! - [`run`]: the run actor and the step engine (replay, then execute and journal).
//! - [`pool_call`]: one agent call, and the `workflow_call` handler that makes it as an item
//!   of the step's work pool.
//! - [`router`]: the router actor that adopts and supervises runs, and [`Router`], its handle.
//! - [`runs`]: [`Runs`], the API that submits, inspects, cancels, restarts runs and sends them
//!   events, through the store only.
//! - [`notices`]: the stream that tells every daemon and client at once that a run was
//!   opened, canceled, sent an event or ended.
//! - [`options`]: [`RouterOptions`]; `env.rs`: what every run of a daemon shares.
//! - [`error`]: the errors, [`WorkflowError`].
//! - [`cron_targets`]: the daemon's cron handler (an agent turn or a workflow run).

#![warn(missing_docs)]

pub mod cron_targets;
mod env;
pub mod error;
mod exec;
pub mod journal;
pub mod label;
pub mod notices;
pub mod options;
pub mod pool_call;
pub mod router;
pub mod run;
pub mod runs;
pub mod template;

pub use error::WorkflowError;
pub use exec::Signal;
pub use journal::open_runs;
pub use journal::{Entry, EntryKind, RunRecord, RunStatus};
pub use options::{RouterOptions, StepHook, RUN_RETENTION};
pub use router::{Router, RouterActor};
pub use run::{RunActor, SignalRun};
pub use runs::{RunView, Runs, StepView, Submit, TaskRun};
