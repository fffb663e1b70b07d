//! The router: `RouterActor` runs workflow runs; [`Router`] is the daemon's handle on it.
//!
//! - `actor.rs`: [`RouterActor`], which adopts, starts, supervises and renews runs;
//! - `messages.rs`: what it takes ([`ScanRuns`], [`RunEndedEvent`], [`StopRuns`],
//!   [`CountRuns`], and the in-memory hand-over of a run submitted here);
//! - `handle.rs`: [`Router`], the handle: submissions, waits, shutdown, and the wiring of the
//!   `workflows` supervisor.
//!
//! [`Runs`](super::runs::Runs) needs only the store: a CLI or another daemon submits a run by
//! writing it there, and whichever daemon scans first adopts it.

mod actor;
mod handle;
mod messages;

pub use actor::{RouterActor, MAX_RUN_PANICS};
pub use handle::Router;
pub use messages::{CountRuns, RunEndedEvent, ScanRuns, StopRuns};
