//! The messages [`RouterActor`](super::RouterActor) takes.

use actix::prelude::*;
use troupe_runtime::Exit;

use crate::env::Fresh;

/// Look for runs to adopt now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ScanRuns;

/// Adopt this run now if there is room (it was just submitted here).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AdoptRun(pub(super) Box<Fresh>);

/// What the router acts on among the run notices (see [`notices`](crate::notices)), checked
/// against the store first: anyone can write to the notices stream.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) enum Noticed {
    /// A run in the index of unfinished runs, of the group the index names.
    Opened { run: String, group: String },
    /// A cancel was asked for `run`: signaled if the run is here and its cancel flag is set.
    Canceled { run: String },
}

/// One of the router's runs ended.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RunEndedEvent {
    /// The run.
    pub run: String,
    /// How its actor ended.
    pub exit: Exit,
}

/// Stop adopting runs and tell the running ones to stop (the daemon is shutting down);
/// answers the lives of the runs told, to wait for.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<troupe_runtime::Life>")]
pub struct StopRuns;

/// How many runs the router runs now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct CountRuns;
