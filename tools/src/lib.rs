//! troupe-tools: the [`Tool`] trait, the [`ToolRegistry`] that builds `[tools.NAME]` from
//! config and enforces policy on every call, the built-in tools ([`builtin`]) and the outbound
//! network policy of fetching tools ([`net`]).

#![warn(missing_docs)]

pub mod builtin;
pub mod error;
pub mod net;
pub mod registry;
pub mod tool;

pub use error::ToolError;
pub use registry::{ToolRegistry, ToolSchema};
pub use tool::{Tool, ToolContext, ToolOutput};
