//! `[tools.X]`: a tool instance: its built-in kind, timeout and free-form options.

use std::time::Duration;

/// One tool. The kind is checked by the tools crate, which also reads `options`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSettings {
    /// Built-in kind name, e.g. `calculator`.
    pub kind: String,
    /// Time allowed for one call (> 0).
    pub timeout: Duration,
    /// Kind-specific options, kept as written.
    pub options: toml::Table,
}
