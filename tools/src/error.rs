//! Errors of tools. The agent loop turns each into a message the model can act on.

use std::time::Duration;

use troupe_runtime::retry::Transient;

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

impl ToolError {
    /// The tool the error is about.
    pub fn tool(&self) -> &str {
        match self {
            ToolError::InvalidArguments { tool, .. }
            | ToolError::Denied { tool, .. }
            | ToolError::Timeout { tool, .. }
            | ToolError::Failed { tool, .. }
            | ToolError::Panicked { tool, .. }
            | ToolError::Config { tool, .. } => tool,
        }
    }
}

impl Transient for ToolError {
    /// A retryable failure or a timeout. Bad arguments need the model to change them;
    /// denials, panics and configuration errors do not go away by themselves.
    fn is_retryable(&self) -> bool {
        match self {
            ToolError::Failed { retryable, .. } => *retryable,
            ToolError::Timeout { .. } => true,
            ToolError::InvalidArguments { .. }
            | ToolError::Denied { .. }
            | ToolError::Panicked { .. }
            | ToolError::Config { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tool_and_says_whether_to_retry() {
        let tool = || "t".to_owned();
        for (err, retryable) in [
            (
                ToolError::InvalidArguments {
                    tool: tool(),
                    message: String::new(),
                },
                false,
            ),
            (
                ToolError::Denied {
                    tool: tool(),
                    reason: String::new(),
                },
                false,
            ),
            (
                ToolError::Timeout {
                    tool: tool(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (
                ToolError::Failed {
                    tool: tool(),
                    message: String::new(),
                    retryable: true,
                },
                true,
            ),
            (
                ToolError::Failed {
                    tool: tool(),
                    message: String::new(),
                    retryable: false,
                },
                false,
            ),
            (
                ToolError::Panicked {
                    tool: tool(),
                    message: String::new(),
                },
                false,
            ),
            (
                ToolError::Config {
                    tool: tool(),
                    message: String::new(),
                },
                false,
            ),
        ] {
            assert_eq!(err.tool(), "t");
            assert_eq!(err.is_retryable(), retryable, "{err:?}");
        }
    }
}
