//! troupe-agents: conversation threads (and, as they land, model services, agents and the
//! router).
//!
//! - [`thread`]: the thread actor, persisted in the store, an entity of a registry.

pub mod error;
pub mod thread;

pub use error::AgentError;
pub use thread::{AppendMessages, ChatMessage, History, ReadHistory, Role, ThreadActor, ThreadId};
