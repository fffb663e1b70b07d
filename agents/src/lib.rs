//! troupe-agents: conversation threads (and, as they land, model services, agents and the
//! router).
//!
//! - [`message`]: chat messages; [`model`]: model services.
//! - [`thread`]: the thread actor, persisted in the store, an entity of a registry.

pub mod error;
pub mod message;
pub mod model;
pub mod thread;

pub use error::AgentError;
pub use message::{ChatMessage, Role, ToolCall};
pub use thread::{AppendMessages, History, ReadHistory, ThreadActor, ThreadId};
