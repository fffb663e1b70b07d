//! troupe-runtime: the supervised actor tree, entity registries and the store.
//!
//! - [`guard`]: panic isolation for actix actors ([`Spawn`], [`Life`], [`Exit`]).
//! - [`supervisor`]: one-for-one supervisors with restart policies and escalation.
//! - [`registry`]: per-entity actors, activated on demand and passivated when idle.
//! - [`store`]: the persistence boundary, with memory and Redis backends.

pub mod actor_ref;
pub mod error;
pub mod guard;
pub mod registry;
pub mod store;
pub mod supervisor;

pub use actor_ref::ActorRef;
pub use error::ActorError;
pub use guard::{isolate, Exit, Life, Spawn};
pub use registry::{Registry, RegistryOptions, RegistryStats};
pub use supervisor::{ChildOptions, Intensity, Restart, Supervisor, SupervisorSpec};
