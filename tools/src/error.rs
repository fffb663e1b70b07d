//! Errors of tools. The agent loop turns each into a message the model can act on.

use std::time::Duration;

/// A failed tool call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments for {tool}: {message}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong, for the model to correct.
        message: String,
    },
    /// Refused by policy (destination not allowed, tool not in the agent's allowlist…).
    #[error("{tool} denied: {reason}")]
    Denied {
        /// The tool.
        tool: String,
        /// Why.
        reason: String,
    },
    /// The call took longer than the tool's timeout.
    #[error("{tool} timed out after {after:?}")]
    Timeout {
        /// The tool.
        tool: String,
        /// The limit.
        after: Duration,
    },
    /// The call failed.
    #[error("{tool} failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// What failed.
        message: String,
        /// Whether running it again may succeed.
        retryable: bool,
    },
    /// The tool panicked; it was contained.
    #[error("{tool} panicked: {message}")]
    Panicked {
        /// The tool.
        tool: String,
        /// The panic message.
        message: String,
    },
    /// The configuration of the tool is invalid (unknown kind, bad option).
    #[error("tools.{tool}: {message}")]
    Config {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },
}
