//! The [`Tool`] trait: something an agent's model may call, with a JSON schema for its
//! arguments, run with a [`ToolContext`] that says on whose behalf.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ToolError;

/// On whose behalf a tool runs: the tenant group, user, agent, thread and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolContext {
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// The calling agent (`[agents.NAME]`).
    pub agent: String,
    /// The conversation thread.
    pub thread: String,
    /// The assistant message that requested the call.
    pub message_id: String,
}

/// What a tool returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// Text handed back to the model.
    pub content: String,
    /// Structured data for callers and logs (not sent to the model).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl ToolOutput {
    /// Output with text only.
    pub fn text(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            data: serde_json::Value::Null,
        }
    }
}

/// A callable tool. Implementations must be cheap to share (`Arc<dyn Tool>`).
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by (the `[tools.NAME]` key).
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// JSON schema of its arguments object.
    fn parameters(&self) -> serde_json::Value;
    /// Whether a call must be approved by a client before it runs.
    fn requires_approval(&self) -> bool {
        false
    }
    /// Runs the tool. Arguments were parsed as JSON but not validated against the schema:
    /// a tool reports bad arguments as [`ToolError::InvalidArguments`].
    async fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError>;
}
