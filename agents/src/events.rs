//! The per-group audit log: significant actions (thread created, message, tool call, tool
//! denied, error, usage) appended to the stream `events:{group}`, readable with `XRANGE`/
//! `XREAD` by any Redis client. Bounded to the most recent [`MAX_EVENTS`] entries.

use std::sync::Arc;

use serde::Serialize;
use troupe_runtime::error_kind::ErrorKind;
use troupe_runtime::store::{Store, StreamEntry, Trim, Write};

use crate::error::AgentError;
use crate::message::Role;
use crate::usage::UsageRecord;

/// Entries kept per group.
pub const MAX_EVENTS: u64 = 100_000;

/// Event kinds, as written in the `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A thread was created.
    ThreadCreated,
    /// A message was added to a thread.
    Message,
    /// A tool was called.
    ToolCall,
    /// A tool call was refused by policy.
    ToolDenied,
    /// A model call was made (with its usage).
    Usage,
    /// A turn failed.
    Error,
}

impl EventKind {
    /// The name written in the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ThreadCreated => "thread_created",
            EventKind::Message => "message",
            EventKind::ToolCall => "tool_call",
            EventKind::ToolDenied => "tool_denied",
            EventKind::Usage => "usage",
            EventKind::Error => "error",
        }
    }
}

/// Who acted in a thread: the fields every thread event carries.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Who<'a> {
    /// The thread.
    pub thread: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// The end user.
    pub user: &'a str,
}

/// One tool call, as audited.
#[derive(Debug, Clone, Serialize)]
pub struct ToolEvent<'a> {
    /// Who called.
    #[serde(flatten)]
    pub by: Who<'a>,
    /// The tool.
    pub tool: &'a str,
    /// The model's id of the call.
    pub call_id: &'a str,
    /// Whether the tool answered.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// A call named in a [`AuditEvent::ToolsRefused`] event (cut to a few characters).
#[derive(Debug, Clone, Serialize)]
pub struct RefusedCall {
    /// The model's id of the call.
    pub call_id: String,
    /// The tool it asked for.
    pub tool: String,
}

/// One audit event: its kind is the variant, its data the fields (written as a JSON object).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AuditEvent<'a> {
    /// A thread was created.
    ThreadCreated {
        /// The thread.
        thread: &'a str,
        /// Its owner.
        user: &'a str,
        /// Its title.
        title: &'a str,
    },
    /// A message was added to a thread.
    Message {
        /// The thread.
        thread: &'a str,
        /// The message's position in it.
        seq: u64,
        /// Who wrote it.
        role: Role,
        /// The agent that answered (assistant and tool messages).
        agent: Option<&'a str>,
        /// The end user.
        user: &'a str,
    },
    /// A tool ran (or failed).
    ToolCall(ToolEvent<'a>),
    /// A tool call was refused by policy or by the user.
    ToolDenied(ToolEvent<'a>),
    /// The calls of a response beyond `max_tool_calls`, refused together.
    ToolsRefused {
        /// Who asked.
        #[serde(flatten)]
        by: Who<'a>,
        /// `max_tool_calls`.
        reason: &'static str,
        /// The bound.
        max_tool_calls: usize,
        /// How many calls were refused.
        refused: usize,
        /// The first few of them.
        calls: Vec<RefusedCall>,
        /// Always `false`.
        ok: bool,
        /// What the model was answered.
        error: String,
    },
    /// A model call was made, with its usage.
    Usage(&'a UsageRecord),
    /// A turn failed.
    Error {
        /// Where.
        #[serde(flatten)]
        by: Who<'a>,
        /// The error's kind.
        kind: ErrorKind,
        /// Its text.
        error: String,
    },
}

impl AuditEvent<'_> {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            AuditEvent::ThreadCreated { .. } => EventKind::ThreadCreated,
            AuditEvent::Message { .. } => EventKind::Message,
            AuditEvent::ToolCall(_) => EventKind::ToolCall,
            AuditEvent::ToolDenied(_) | AuditEvent::ToolsRefused { .. } => EventKind::ToolDenied,
            AuditEvent::Usage(_) => EventKind::Usage,
            AuditEvent::Error { .. } => EventKind::Error,
        }
    }

    /// The event's data, as written in the `data` field: a JSON object, keys in order.
    pub fn data(&self) -> String {
        // Through a `Value`: its objects keep their keys sorted, the order readers have seen.
        serde_json::to_value(self).unwrap_or_default().to_string()
    }
}

/// Appends and reads audit events. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
}

impl EventLog {
    /// An event log over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        EventLog { store }
    }

    /// The write that appends `event` to `group`'s log (to batch with other writes).
    pub fn write(group: &str, event: &AuditEvent<'_>) -> Write {
        Write::XAdd {
            stream: stream(group),
            fields: vec![
                (b"kind".to_vec(), event.kind().as_str().as_bytes().to_vec()),
                (b"data".to_vec(), event.data().into_bytes()),
            ],
            trim: Some(Trim::MaxLen(MAX_EVENTS)),
        }
    }

    /// Appends one event.
    pub async fn append(&self, group: &str, event: &AuditEvent<'_>) -> Result<(), AgentError> {
        Ok(self.store.apply(vec![Self::write(group, event)]).await?)
    }

    /// Events of `group` after the entry id `after` (`"0"` for all), at most `count`.
    pub async fn read(
        &self,
        group: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, AgentError> {
        Ok(self.store.xread(&stream(group), after, count, None).await?)
    }
}

/// The event stream of `group`.
pub fn stream(group: &str) -> String {
    format!("events:{group}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WHO: Who<'static> = Who {
        thread: "t1",
        agent: "helper",
        user: "ann",
    };

    #[test]
    fn events_write_the_data_readers_have_always_read() {
        let cases = [
            (
                AuditEvent::ThreadCreated {
                    thread: "t1",
                    user: "ann",
                    title: "Hi",
                },
                "thread_created",
                json!({"thread": "t1", "user": "ann", "title": "Hi"}),
            ),
            (
                AuditEvent::Message {
                    thread: "t1",
                    seq: 3,
                    role: Role::Assistant,
                    agent: Some("helper"),
                    user: "ann",
                },
                "message",
                json!({"thread": "t1", "seq": 3, "role": "assistant", "agent": "helper", "user": "ann"}),
            ),
            (
                AuditEvent::ToolDenied(ToolEvent {
                    by: WHO,
                    tool: "fetch",
                    call_id: "c1",
                    ok: false,
                    error: Some("denied".into()),
                }),
                "tool_denied",
                json!({"thread": "t1", "agent": "helper", "user": "ann", "tool": "fetch",
                       "call_id": "c1", "ok": false, "error": "denied"}),
            ),
            (
                AuditEvent::ToolsRefused {
                    by: WHO,
                    reason: "max_tool_calls",
                    max_tool_calls: 2,
                    refused: 5,
                    calls: vec![RefusedCall {
                        call_id: "c3".into(),
                        tool: "fetch".into(),
                    }],
                    ok: false,
                    error: "refused".into(),
                },
                "tool_denied",
                json!({"thread": "t1", "agent": "helper", "user": "ann", "reason": "max_tool_calls",
                       "max_tool_calls": 2, "refused": 5, "calls": [{"call_id": "c3", "tool": "fetch"}],
                       "ok": false, "error": "refused"}),
            ),
            (
                AuditEvent::Error {
                    by: WHO,
                    kind: ErrorKind::Model,
                    error: "boom".into(),
                },
                "error",
                json!({"thread": "t1", "agent": "helper", "user": "ann", "kind": "model", "error": "boom"}),
            ),
        ];
        for (event, kind, data) in cases {
            assert_eq!(event.kind().as_str(), kind);
            assert_eq!(event.data(), data.to_string(), "{kind}");
        }
    }
}
