//! troupe-tools: the [`Tool`] trait, the tool registry and the built-in tools.

pub mod error;
pub mod tool;

pub use error::ToolError;
pub use tool::{Tool, ToolContext, ToolOutput};
