//! [`ErrorKind`]: every kind of failure that goes on the wire — in a task's result
//! (`error.kind`), a dead letter (`kind`) and an audit `error` event (`kind`) — as one serde
//! enum, so the contract clients read is one list. Written in `snake_case`; a kind this build
//! does not know (written by a newer one) reads back as [`ErrorKind::Other`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A failure's kind on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    // The turn of an agent task (`AgentError`).
    /// The store failed.
    Store,
    /// An actor was unreachable.
    Actor,
    /// The group's daily budget is spent.
    BudgetExceeded,
    /// A rate limit (troupe's or the provider's) refused the call.
    RateLimited,
    /// The model failed.
    Model,
    /// A tool could not be set up or called.
    Tool,
    /// A stored record could not be read.
    Corrupt,
    /// The request was invalid.
    Invalid,
    /// What it names does not exist.
    NotFound,
    /// It belongs to another group.
    Forbidden,
    /// It already exists.
    Conflict,
    /// The thread is archived.
    Archived,
    /// The turn waits for a client to approve tool calls.
    AwaitingApproval,
    /// The thread is busy with a turn on another daemon.
    Busy,
    /// The turn lease of the thread lapsed.
    LeaseLost,
    /// The agent reached `max_steps` without an answer.
    StepLimit,
    // Knowledge bases (`RagError`).
    /// Vectors of another dimension than the namespace's.
    DimensionMismatch,
    // Workflow tasks.
    /// The run could not be submitted.
    Workflow,
    /// The run failed.
    WorkflowFailed,
    /// The run was canceled.
    WorkflowCanceled,
    // Entries the ingress refuses (dead letters).
    /// The entry is not a well-formed task entry.
    MalformedEntry,
    /// The entry is over `max_entry_bytes`.
    EntryTooLarge,
    /// The entry has no `task` field.
    NoTaskField,
    /// The task is not JSON.
    NotJson,
    /// A required field is missing.
    MissingField,
    /// A field's value is invalid.
    InvalidField,
    /// The task names no target, or two.
    Target,
    /// No such agent.
    UnknownAgent,
    /// No such workflow.
    UnknownWorkflow,
    /// The input is over the bound.
    InputTooLarge,
    /// The group is reserved (`system`).
    ReservedGroup,
    /// `reply_to` is not a results stream of the task's group.
    ReplyTo,
    /// Producer authentication failed.
    Unauthenticated,
    /// Delivered more than `max_deliveries` times.
    MaxDeliveries,
    /// A kind this build does not know.
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The kind as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Store => "store",
            ErrorKind::Actor => "actor",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Model => "model",
            ErrorKind::Tool => "tool",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Archived => "archived",
            ErrorKind::AwaitingApproval => "awaiting_approval",
            ErrorKind::Busy => "busy",
            ErrorKind::LeaseLost => "lease_lost",
            ErrorKind::StepLimit => "step_limit",
            ErrorKind::DimensionMismatch => "dimension_mismatch",
            ErrorKind::Workflow => "workflow",
            ErrorKind::WorkflowFailed => "workflow_failed",
            ErrorKind::WorkflowCanceled => "workflow_canceled",
            ErrorKind::MalformedEntry => "malformed_entry",
            ErrorKind::EntryTooLarge => "entry_too_large",
            ErrorKind::NoTaskField => "no_task_field",
            ErrorKind::NotJson => "not_json",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::InvalidField => "invalid_field",
            ErrorKind::Target => "target",
            ErrorKind::UnknownAgent => "unknown_agent",
            ErrorKind::UnknownWorkflow => "unknown_workflow",
            ErrorKind::InputTooLarge => "input_too_large",
            ErrorKind::ReservedGroup => "reserved_group",
            ErrorKind::ReplyTo => "reply_to",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::MaxDeliveries => "max_deliveries",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ErrorKind> for &str {
    fn eq(&self, other: &ErrorKind) -> bool {
        *self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind, so the test below notices one added without its name.
    const ALL: [ErrorKind; 35] = [
        ErrorKind::Store,
        ErrorKind::Actor,
        ErrorKind::BudgetExceeded,
        ErrorKind::RateLimited,
        ErrorKind::Model,
        ErrorKind::Tool,
        ErrorKind::Corrupt,
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Forbidden,
        ErrorKind::Conflict,
        ErrorKind::Archived,
        ErrorKind::AwaitingApproval,
        ErrorKind::Busy,
        ErrorKind::LeaseLost,
        ErrorKind::StepLimit,
        ErrorKind::DimensionMismatch,
        ErrorKind::Workflow,
        ErrorKind::WorkflowFailed,
        ErrorKind::WorkflowCanceled,
        ErrorKind::MalformedEntry,
        ErrorKind::EntryTooLarge,
        ErrorKind::NoTaskField,
        ErrorKind::NotJson,
        ErrorKind::MissingField,
        ErrorKind::InvalidField,
        ErrorKind::Target,
        ErrorKind::UnknownAgent,
        ErrorKind::UnknownWorkflow,
        ErrorKind::InputTooLarge,
        ErrorKind::ReservedGroup,
        ErrorKind::ReplyTo,
        ErrorKind::Unauthenticated,
        ErrorKind::MaxDeliveries,
        ErrorKind::Other,
    ];

    #[test]
    fn kinds_are_written_as_their_names_and_read_back() {
        for kind in ALL {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: ErrorKind = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, kind);
        }
        let unknown: ErrorKind = serde_json::from_str("\"from_the_future\"").expect("other");
        assert_eq!(unknown, ErrorKind::Other);
    }
}
