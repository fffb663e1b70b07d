//! The result of a task as clients read it: one JSON document ([`TaskResult`]) in the field
//! [`RESULT_FIELD`] of a results stream, and the idempotency record of a completed task
//! ([`done_key`]). Written by the ingress for agent tasks and by the batch that ends a
//! workflow task's run, whichever daemon ends it.

use serde::{Deserialize, Serialize};
pub use troupe_runtime::error_kind::ErrorKind;

use crate::model::Usage;

/// The stream field holding a result's JSON.
pub const RESULT_FIELD: &str = "result";

/// Store key of a completed task's result (its idempotency record).
pub fn done_key(group: &str, id: &str) -> String {
    format!("ingress:done:{group}:{id}")
}

/// `"ok"` or `"error"` for the final result; `"accepted"` for the early notice of a streamed
/// agent task or of any workflow task (its final result follows).
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
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

/// A result as written to `reply_to` or the results stream, in the field `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: String,
    /// The task's group: a reader of a shared stream knows whose result this is.
    #[serde(default)]
    pub group: String,
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
    /// A successful result of the task `task_id` of `group`, with nothing filled in yet.
    pub fn ok(task_id: &str, group: &str) -> TaskResult {
        TaskResult {
            task_id: task_id.to_owned(),
            group: group.to_owned(),
            status: Status::Ok,
            output: None,
            thread: None,
            run: None,
            error: None,
            usage: None,
            delta_stream: None,
        }
    }

    /// The notice that a streamed task runs, naming what to follow.
    pub fn accepted(
        task_id: &str,
        group: &str,
        thread: Option<String>,
        run: Option<String>,
        delta_stream: Option<String>,
    ) -> TaskResult {
        TaskResult {
            status: Status::Accepted,
            thread,
            run,
            delta_stream,
            ..TaskResult::ok(task_id, group)
        }
    }

    /// The final result of the workflow task `task` of `group`, whose run `run` ended with
    /// `status` (`completed`: `ok` with `output`; `failed`, `canceled`: an `error` of kind
    /// `workflow_{status}` with `error`).
    pub fn of_run(
        task: &str,
        group: &str,
        run: &str,
        status: &str,
        output: Option<String>,
        error: Option<String>,
    ) -> TaskResult {
        let completed = status == "completed";
        TaskResult {
            task_id: task.to_owned(),
            group: group.to_owned(),
            status: if completed { Status::Ok } else { Status::Error },
            output,
            thread: None,
            run: Some(run.to_owned()),
            error: (!completed).then(|| ErrorBody {
                kind: match status {
                    "canceled" => ErrorKind::WorkflowCanceled,
                    _ => ErrorKind::WorkflowFailed,
                },
                message: error.unwrap_or_default(),
            }),
            usage: None,
            delta_stream: None,
        }
    }

    /// A failed task.
    pub fn error(task_id: &str, group: &str, kind: ErrorKind, message: String) -> TaskResult {
        TaskResult {
            status: Status::Error,
            error: Some(ErrorBody { kind, message }),
            ..TaskResult::ok(task_id, group)
        }
    }
}
