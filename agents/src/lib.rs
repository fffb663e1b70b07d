//! troupe-agents: model services, agent actors, persisted conversation threads with
//! streaming, usage and audit events.
//!
//! - [`message`]: chat messages; [`model`]: model services (openai, scripted).
//! - [`agent`]: the agent actor and its loop (model → tools → model …).
//! - [`thread`]: the thread actor, an entity of the thread registry; [`thread_store`]: its
//!   persisted form, scoped by group.
//! - [`policy`]: the layers around every model call (budget, rate limits, metrics, usage,
//!   audit), alike for chat and embedding calls.
//! - [`stream`]: live deltas; [`usage`]: usage, cost and budgets; [`events`]: the audit log.
//! - [`conversations`]: the API clients use.
//! - [`task_result`]: what a task's result looks like (written by the ingress, `troupe-ingress`,
//!   and by the end of a workflow task's run, `troupe-workflow`).
//! - [`rag`]: knowledge bases per group (the `troupe-rag` crate); [`embedder`]: model
//!   embeddings with usage and budgets, and the knowledge bases as `[rag]` configures them;
//!   [`memory`]: thread memory, recall of earlier messages through the knowledge bases.

#![warn(missing_docs)]

pub mod agent;
/// Model services ([`troupe_model`]).
pub use troupe_model as model;
/// Chat messages ([`troupe_model::message`]).
pub use troupe_model::message;
pub mod conversations;
pub mod error;
pub mod events;
/// Knowledge bases ([`troupe_rag`]); [`embedder`] makes them from the config.
pub use troupe_rag as rag;
pub mod embedder;
pub mod memory;
pub mod policy;
pub mod stream;
pub mod task_result;
pub mod thread;
mod thread_lease;
pub mod thread_store;
pub mod usage;

pub use agent::{AgentActor, AgentDirectory, AgentHandle, AgentRun, AgentSpec, RunAgent};
pub use conversations::{build_agents, Ask, Conversations};
pub use error::AgentError;
pub use message::{ChatMessage, Role, ToolCall};
pub use policy::Policies;
pub use thread::{MessagePage, ThreadActor, TurnOutcome, TurnStatus};
pub use thread_store::{NewThread, ThreadId, ThreadInfo, ThreadMessage, ThreadPage, ThreadStore};
pub use usage::{Budget, Prices, Totals, UsageLedger, UsageReport};
