//! troupe-runtime: the supervised actor tree, entity registries and the store.
//!
//! - [`guard`]: panic isolation for actix actors ([`Spawn`], [`Life`], [`Exit`]);
//!   [`detach`]: futures an actor awaits as tasks of their own.
//! - [`supervisor`]: one-for-one supervisors with restart policies and escalation.
//! - [`registry`]: per-entity actors, activated on demand and passivated when idle.
//! - [`store`]: the persistence boundary, with memory and Redis backends.
//! - [`health`]: readiness and the store health check; [`workers`]: the actor threads.
//! - [`rate`]: the rate-limit vocabulary and arithmetic that [`limit`] and [`store`] share.
//! - [`limit`]: rate limits (token buckets, fixed windows; local or shared through the store).
//! - [`retry`]: the transient-error vocabulary ([`retry::Transient`]), the one backoff and
//!   the retry loop; [`pool`]: persisted work pools, retried by the same policy.
//! - [`cron`]: schedules firing exactly once per tick across daemons.
//! - [`trace`]: span names, fixed field names, and [`trace::Traced`] (a span across a mailbox).
//! - [`clock`]: stored time (ms since the epoch); [`key_name`]: names that become key parts.

#![warn(missing_docs)]

pub mod actor_ref;
pub mod clock;
pub mod cron;
pub mod detach;
pub mod error;
pub mod error_kind;
pub mod guard;
pub mod health;
pub mod key_name;
pub mod limit;
pub mod metrics;
pub mod pool;
pub mod rate;
pub mod registry;
pub mod retry;
pub mod store;
pub mod supervisor;
pub mod trace;
pub mod workers;

pub use actor_ref::ActorRef;
pub use error::ActorError;
pub use guard::{isolate, Exit, Life, Spawn};
pub use health::{Readiness, StoreHealth};
pub use registry::{Registry, RegistryOptions, RegistryStats};
pub use supervisor::{ChildOptions, Intensity, Restart, Supervisor, SupervisorSpec};
pub use trace::Traced;
pub use workers::Workers;
