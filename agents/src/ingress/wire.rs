//! The wire format of the ingress: tasks read from the ingress stream, results and dead
//! letters written back. Everything is one JSON document in one stream field, so that any
//! Redis client can publish and read with plain `XADD` / `XREAD`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::Usage;

/// The stream field holding a task's JSON.
pub const TASK_FIELD: &str = "task";
/// The stream field holding a result's JSON.
pub const RESULT_FIELD: &str = "result";
/// The stream field holding a dead letter's JSON.
pub const DEAD_FIELD: &str = "dead";

/// A task as published: `{"id", "agent" | "workflow", "input", "group", "user", "thread",
/// "reply_to", "stream"}`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTask {
    /// Idempotency key; the entry id when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The agent to ask.
    #[serde(default)]
    pub agent: Option<String>,
    /// The workflow to run.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Text, or any JSON (passed on as its JSON text).
    #[serde(default)]
    pub input: serde_json::Value,
    /// Tenant group.
    #[serde(default)]
    pub group: Option<String>,
    /// End user.
    #[serde(default)]
    pub user: Option<String>,
    /// An existing thread of the group to continue (agents only).
    #[serde(default)]
    pub thread: Option<String>,
    /// The stream the result goes to (must be `<results>:<suffix>`).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Stream the answer's deltas (agents only).
    #[serde(default)]
    pub stream: bool,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An agent turn.
    Agent(String),
    /// A workflow run.
    Workflow(String),
}

/// A validated task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Idempotency key (the entry id when the producer gave none).
    pub id: String,
    /// What to run.
    pub target: Target,
    /// The input text.
    pub input: String,
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// Thread to continue.
    pub thread: Option<String>,
    /// Where the result goes.
    pub reply_to: String,
    /// Stream the deltas.
    pub stream: bool,
}

/// Why an entry was refused without running it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `task` field.
    #[error("the entry has no `task` field")]
    NoTaskField,
    /// The `task` field is not a JSON object of the wire format.
    #[error("the task is not valid JSON: {0}")]
    NotJson(String),
    /// A required field is missing or empty.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// Neither or both of `agent` and `workflow`.
    #[error("a task names exactly one of `agent` and `workflow`")]
    Target,
    /// No such agent.
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    /// No such workflow.
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    /// The input is larger than `max_input_bytes`.
    #[error("input of {bytes} bytes is over the limit of {max} bytes")]
    InputTooLarge {
        /// The input's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `reply_to` is not a stream under the results stream.
    #[error(
        "reply_to {0:?} must be the results stream or start with it followed by ':' \
         (with or without the store's key prefix)"
    )]
    ReplyTo(String),
}

impl Rejection {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::NoTaskField => "no_task_field",
            Rejection::NotJson(_) => "not_json",
            Rejection::Missing(_) => "missing_field",
            Rejection::Target => "target",
            Rejection::UnknownAgent(_) => "unknown_agent",
            Rejection::UnknownWorkflow(_) => "unknown_workflow",
            Rejection::InputTooLarge { .. } => "input_too_large",
            Rejection::ReplyTo(_) => "reply_to",
        }
    }
}

/// What a task is checked against.
#[derive(Debug, Clone)]
pub struct Limits<'a> {
    /// Configured agents.
    pub agents: &'a BTreeSet<String>,
    /// Configured workflows.
    pub workflows: &'a BTreeSet<String>,
    /// Largest input in bytes.
    pub max_input_bytes: usize,
    /// The default results stream.
    pub results: &'a str,
    /// The store's key prefix: a `reply_to` may name its stream with it (the Redis key) or
    /// without (the store key).
    pub prefix: &'a str,
}

fn required(value: Option<String>, name: &'static str) -> Result<String, Rejection> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or(Rejection::Missing(name))
}

/// Parses and validates the `task` field of the entry `entry_id`.
pub fn parse(entry_id: &str, field: Option<&[u8]>, limits: &Limits<'_>) -> Result<Task, Rejection> {
    let bytes = field.ok_or(Rejection::NoTaskField)?;
    let raw: RawTask =
        serde_json::from_slice(bytes).map_err(|err| Rejection::NotJson(err.to_string()))?;
    let group = required(raw.group, "group")?;
    let user = required(raw.user, "user")?;
    let target = match (raw.agent, raw.workflow) {
        (Some(agent), None) if limits.agents.contains(&agent) => Target::Agent(agent),
        (Some(agent), None) => return Err(Rejection::UnknownAgent(agent)),
        (None, Some(workflow)) if limits.workflows.contains(&workflow) => {
            Target::Workflow(workflow)
        }
        (None, Some(workflow)) => return Err(Rejection::UnknownWorkflow(workflow)),
        _ => return Err(Rejection::Target),
    };
    let input = match raw.input {
        serde_json::Value::Null => return Err(Rejection::Missing("input")),
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    if input.len() > limits.max_input_bytes {
        return Err(Rejection::InputTooLarge {
            bytes: input.len(),
            max: limits.max_input_bytes,
        });
    }
    let reply_to = match raw.reply_to {
        None => limits.results.to_owned(),
        Some(stream) => {
            let stream = match stream.strip_prefix(limits.prefix) {
                Some(local) if !limits.prefix.is_empty() => local.to_owned(),
                _ => stream,
            };
            let ok = stream == limits.results
                || stream
                    .strip_prefix(limits.results)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|suffix| !suffix.is_empty());
            if !ok {
                return Err(Rejection::ReplyTo(stream));
            }
            stream
        }
    };
    Ok(Task {
        id: raw
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| entry_id.to_owned()),
        target,
        input,
        group,
        user,
        thread: raw.thread.filter(|t| !t.is_empty()),
        reply_to,
        stream: raw.stream,
    })
}

/// `"ok"` or `"error"` for the final result; `"accepted"` for the early notice of a streamed
/// task (its final result follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The task produced an output.
    Ok,
    /// The task failed; see `error`.
    Error,
    /// The task runs: `delta_stream` (agents) or `run` (workflows) can be followed now.
    Accepted,
}

impl Status {
    /// Whether this is a task's final result.
    pub fn is_final(self) -> bool {
        self != Status::Accepted
    }
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind (`not_found`, `forbidden`, `model`, `step_limit`, …).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A result as written to `reply_to` or the results stream, in the field `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: String,
    /// How it ended.
    pub status: Status,
    /// The answer or the run's output.
    pub output: Option<String>,
    /// The thread of an agent task.
    pub thread: Option<String>,
    /// The run of a workflow task.
    pub run: Option<String>,
    /// Set when `status` is `error`.
    pub error: Option<ErrorBody>,
    /// Tokens of an agent task.
    pub usage: Option<Usage>,
    /// The delta stream of a streamed agent task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_stream: Option<String>,
}

impl TaskResult {
    /// The notice that a streamed task runs, naming what to follow.
    pub fn accepted(
        task_id: &str,
        thread: Option<String>,
        run: Option<String>,
        delta_stream: Option<String>,
    ) -> TaskResult {
        TaskResult {
            task_id: task_id.to_owned(),
            status: Status::Accepted,
            output: None,
            thread,
            run,
            error: None,
            usage: None,
            delta_stream,
        }
    }

    /// A failed task.
    pub fn error(task_id: &str, kind: &str, message: String) -> TaskResult {
        TaskResult {
            task_id: task_id.to_owned(),
            status: Status::Error,
            output: None,
            thread: None,
            run: None,
            error: Some(ErrorBody {
                kind: kind.to_owned(),
                message,
            }),
            usage: None,
            delta_stream: None,
        }
    }
}

/// A dead letter, written to the dead stream in the field `dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The ingress entry's id.
    pub entry: String,
    /// The entry's fields (values as text, lossy for non-UTF-8 bytes).
    pub fields: Vec<(String, String)>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Machine-readable reason kind (`not_json`, …, `max_deliveries`).
    pub kind: String,
    /// How many times it had been delivered.
    pub deliveries: u64,
}
