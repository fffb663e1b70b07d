//! `[tools.X]`: a tool instance: its built-in kind, timeout and free-form options.

use std::time::Duration;

/// One tool. The kind is checked by the tools crate, which also reads `options`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSettings {
    /// Built-in kind name, e.g. `http_get`.
    pub kind: String,
    /// Time allowed for one call (> 0).
    pub timeout: Duration,
    /// Whether a client must approve each call before it runs (the agent loop pauses).
    pub requires_approval: bool,
    /// Kind-specific options, kept as written.
    pub options: toml::Table,
}
