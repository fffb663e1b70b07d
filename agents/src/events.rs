//! The per-group audit log: significant actions (thread created, message, tool call, tool
//! denied, error, usage) appended to the stream `events:{group}`, readable with `XRANGE`/
//! `XREAD` by any Redis client. Bounded to the most recent [`MAX_EVENTS`] entries.

use std::sync::Arc;

use serde_json::Value;
use troupe_runtime::store::{Store, StreamEntry, Trim, Write};

use crate::error::AgentError;

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

    /// The write that appends one event (to batch with other writes).
    pub fn write(group: &str, kind: EventKind, data: &Value) -> Write {
        Write::XAdd {
            stream: stream(group),
            fields: vec![
                (b"kind".to_vec(), kind.as_str().as_bytes().to_vec()),
                (b"data".to_vec(), data.to_string().into_bytes()),
            ],
            trim: Some(Trim::MaxLen(MAX_EVENTS)),
        }
    }

    /// Appends one event.
    pub async fn append(
        &self,
        group: &str,
        kind: EventKind,
        data: &Value,
    ) -> Result<(), AgentError> {
        Ok(self
            .store
            .apply(vec![Self::write(group, kind, data)])
            .await?)
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
