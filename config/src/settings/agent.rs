//! `[agents.X]`: an agent, the model it uses and what it may call.

/// One agent. Every name in it refers to an entry that exists (checked at load).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Name of a `[models.X]`.
    pub model: String,
    /// System instructions.
    pub instructions: String,
    /// Names of `[tools.X]` the agent may call.
    pub tools: Vec<String>,
    /// Names of `[limits.X]` applied to the agent's model calls.
    pub limits: Vec<String>,
    /// Name of a `[pools.X]` the agent's jobs run in.
    pub pool: Option<String>,
    /// Model calls per task before giving up (> 0).
    pub max_steps: u32,
    /// Sampling temperature, 0 to 2.
    pub temperature: f32,
    /// Cap on generated tokens per call (> 0).
    pub max_tokens: Option<u32>,
    /// Recent thread messages sent to the model (> 0).
    pub context_messages: usize,
    /// Tool calls run per model response (> 0); the calls beyond it are refused.
    pub max_tool_calls: usize,
    /// Tool calls of one response running at once (> 0).
    pub tool_concurrency: usize,
    /// Recall of earlier thread messages by search (`[agents.X.memory]`), if enabled.
    pub memory: Option<crate::MemorySettings>,
}
