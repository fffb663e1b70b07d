//! The tool registry: every `[tools.NAME]` built from its kind, and the one way agents call a
//! tool — [`ToolRegistry::call`] enforces the agent's allowlist, parses the model's arguments,
//! bounds the call by the tool's timeout and contains a panicking tool.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use troupe_config::ToolSettings;

use crate::builtin;
use crate::error::ToolError;
use crate::tool::{Tool, ToolContext, ToolOutput};

/// What a model is told about a tool: its name, description and JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSchema {
    /// The name the model calls it by.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A registered tool and how it is run.
#[derive(Clone)]
struct Entry {
    tool: Arc<dyn Tool>,
    timeout: Duration,
    requires_approval: bool,
}

/// The tools of a daemon, by name. Cheap to clone (tools are shared).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use troupe_tools::{ToolContext, ToolError, ToolRegistry};
///
/// let config = troupe_config::load_str(
///     "[tools.clock]\nkind = \"current_time\"\n",
///     "troupe.toml",
///     &[],
/// )?;
/// let tools = ToolRegistry::from_config(&config.tools)?;
/// let ctx = ToolContext {
///     group: "acme".into(),
///     user: "ann".into(),
///     agent: "web".into(),
///     thread: "t1".into(),
///     message_id: "m1".into(),
/// };
/// let allowed = vec!["clock".to_owned()];
/// assert_eq!(tools.specs(&allowed)[0].name, "clock");
/// let now = tools.call(&allowed, "clock", &ctx, r#"{"timezone": "+02:00"}"#).await?;
/// assert!(now.content.ends_with("+02:00"));
/// // Outside the agent's allowlist, nothing runs.
/// let refused = tools.call(&[], "clock", &ctx, "{}").await;
/// assert!(matches!(refused, Err(ToolError::Denied { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ToolRegistry {
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds every `[tools.NAME]` from its `kind` and options, except the kinds other crates
    /// provide ([`builtin::PROVIDED_KINDS`]), which they register. The first tool (by name) that
    /// cannot be built is reported as [`ToolError::Config`]: an unknown kind (listing the valid
    /// ones) or a bad option (naming it).
    pub fn from_config(tools: &BTreeMap<String, ToolSettings>) -> Result<Self, ToolError> {
        let mut registry = Self::new();
        for (name, settings) in tools {
            if builtin::PROVIDED_KINDS.contains(&settings.kind.as_str()) {
                continue;
            }
            let tool = builtin::build(name, settings)?;
            registry.register(tool, settings.timeout, settings.requires_approval)?;
        }
        Ok(registry)
    }

    /// Adds a tool under its [`Tool::name`], run with `timeout`; `requires_approval` adds to
    /// the tool's own [`Tool::requires_approval`]. A name already taken is a
    /// [`ToolError::Config`].
    pub fn register(
        &mut self,
        tool: Arc<dyn Tool>,
        timeout: Duration,
        requires_approval: bool,
    ) -> Result<(), ToolError> {
        let name = tool.name().to_owned();
        if self.entries.contains_key(&name) {
            return Err(ToolError::Config {
                tool: name,
                message: "a tool with this name is already registered".to_owned(),
            });
        }
        self.entries.insert(
            name,
            Entry {
                tool,
                timeout,
                requires_approval,
            },
        );
        Ok(())
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.entries.get(name).map(|entry| Arc::clone(&entry.tool))
    }

    /// Names of every tool, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no tool.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Time allowed for one call of `name`.
    pub fn timeout(&self, name: &str) -> Option<Duration> {
        self.entries.get(name).map(|entry| entry.timeout)
    }

    /// Whether a call of `name` must be approved by a client before it runs (config
    /// `requires_approval` or the tool's own). The agent loop pauses on it; [`call`](Self::call)
    /// does not ask. `false` for an unknown name, which `call` refuses anyway.
    pub fn requires_approval(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|entry| entry.requires_approval || entry.tool.requires_approval())
    }

    /// The schemas of the tools in `allowlist` (an agent's `tools`), in its order, each once;
    /// names without a tool are skipped (config validation rejects them).
    pub fn specs(&self, allowlist: &[String]) -> Vec<ToolSchema> {
        let mut specs: Vec<ToolSchema> = Vec::with_capacity(allowlist.len());
        for name in allowlist {
            if specs.iter().any(|spec| &spec.name == name) {
                continue;
            }
            if let Some(entry) = self.entries.get(name) {
                specs.push(ToolSchema {
                    name: name.clone(),
                    description: entry.tool.description().to_owned(),
                    parameters: entry.tool.parameters(),
                });
            }
        }
        specs
    }

    /// Runs the tool `name` for `ctx` with the model's `raw_arguments` (a JSON object; empty
    /// means `{}`), inside a span with `tool`, `group`, `agent` and `thread`.
    ///
    /// - A tool outside `allowlist` never runs: [`ToolError::Denied`] ("not allowed for agent
    ///   X"), logged at warn — whatever the model asked.
    /// - Arguments that are not a JSON object: [`ToolError::InvalidArguments`] saying so.
    /// - Longer than the tool's timeout: [`ToolError::Timeout`] (the call is dropped).
    /// - A panic in the tool: [`ToolError::Panicked`]; the caller goes on.
    #[tracing::instrument(
        name = "tool",
        level = "info",
        skip_all,
        fields(tool = %name, group = %ctx.group, agent = %ctx.agent, thread = %ctx.thread)
    )]
    pub async fn call(
        &self,
        allowlist: &[String],
        name: &str,
        ctx: &ToolContext,
        raw_arguments: &str,
    ) -> Result<ToolOutput, ToolError> {
        if !allowlist.iter().any(|allowed| allowed == name) {
            let reason = format!("not allowed for agent {}", ctx.agent);
            tracing::warn!(%reason, "tool call denied");
            return Err(ToolError::Denied {
                tool: name.to_owned(),
                reason,
            });
        }
        let Some(entry) = self.entries.get(name) else {
            tracing::warn!("tool call to an allowed but unregistered tool");
            return Err(ToolError::Failed {
                tool: name.to_owned(),
                message: "no such tool is configured".to_owned(),
                retryable: false,
            });
        };
        let args = match parse_arguments(name, raw_arguments) {
            Ok(args) => args,
            Err(err) => {
                tracing::info!(error = %err, "tool call refused: bad arguments");
                return Err(err);
            }
        };
        let started = Instant::now();
        // The tool's future is built inside the guarded one: a panic anywhere in it is caught.
        let call = AssertUnwindSafe(async { entry.tool.call(ctx, args).await }).catch_unwind();
        let result = match tokio::time::timeout(entry.timeout, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(ToolError::Panicked {
                tool: name.to_owned(),
                message: panic_message(panic.as_ref()),
            }),
            Err(_elapsed) => Err(ToolError::Timeout {
                tool: name.to_owned(),
                after: entry.timeout,
            }),
        };
        let elapsed_ms = started.elapsed().as_millis();
        match &result {
            Ok(output) => {
                tracing::debug!(
                    elapsed_ms,
                    bytes = output.content.len(),
                    "tool call finished"
                )
            }
            Err(err @ ToolError::Denied { .. }) => {
                tracing::warn!(elapsed_ms, error = %err, "tool call denied")
            }
            Err(err @ ToolError::Panicked { .. }) => {
                tracing::error!(elapsed_ms, error = %err, "tool panicked")
            }
            Err(err) => tracing::info!(elapsed_ms, error = %err, "tool call failed"),
        }
        result
    }
}

/// The model's arguments as a JSON object.
fn parse_arguments(tool: &str, raw: &str) -> Result<serde_json::Value, ToolError> {
    let invalid = |message: String| ToolError::InvalidArguments {
        tool: tool.to_owned(),
        message,
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(args @ serde_json::Value::Object(_)) => Ok(args),
        Ok(other) => Err(invalid(format!(
            "arguments must be a JSON object matching the tool's parameters, got {}",
            json_type(&other)
        ))),
        Err(err) => Err(invalid(format!(
            "arguments are not valid JSON ({err}); send a JSON object matching the tool's parameters"
        ))),
    }
}

/// `an array`, `a string`…
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The message of a panic payload (`panic!("…")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests;
