//! troupe: the daemon as a library. [`Daemon::builder`] starts the whole actor tree of a
//! config over a store — agents, threads, pools, workflows, crons and the ingress — exactly as
//! `troupe serve` runs it, and [`Generations`] replaces its config while it runs (SIGHUP); the
//! `troupe` binary adds only the CLI, logging, signals and reading files.

#![warn(missing_docs)]

mod daemon;
mod generations;

pub use daemon::{Daemon, DaemonBuilder, StartError};
pub use generations::{Generations, ReloadError};
