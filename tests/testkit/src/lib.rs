//! troupe's test kit: the real services the integration tests and the benches run against,
//! shared by both (a dev-dependency only; never published).
//!
//! - [`redis`]: private `redis-server`s on free loopback ports, never one this process did not
//!   start;
//! - [`daemon`]: the real `troupe` binary as a child process;
//! - [`llm`]: the mock model server in-process, and model settings pointing at it;
//! - [`oracle`]: the fault suite's harness (one or two daemons, plain-Redis checks);
//! - [`wait`]: one way to wait for something to become true ([`eventually`]).
//!
//! The in-process daemon is not here: tests start it with `troupe::Daemon::builder`, the
//! wiring production runs.

#![warn(missing_docs)]

pub mod daemon;
pub mod llm;
pub mod oracle;
pub mod redis;
pub mod wait;

pub use wait::{eventually, eventually_blocking, Check, WAIT};
