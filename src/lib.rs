//! troupe: the daemon as a library. [`Daemon::builder`] starts the whole actor tree of a
//! config over a store — agents, threads, pools, workflows, crons and the ingress — exactly as
//! `troupe serve` runs it; the `troupe` binary adds only the CLI, logging and signals.

mod daemon;

pub use daemon::{Daemon, DaemonBuilder, StartError};
