//! What a thread actor knows of its thread ([`Cached`]), brought up to date from the store
//! before every change, and the pending approval of a paused turn ([`PendingApproval`]).

use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::message::ToolCall;
use crate::thread_store::{decode, decode_all, ThreadId, ThreadInfo, ThreadMessage, ThreadStore};

/// A paused turn, persisted at `thread:{group}:{thread}:approval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingApproval {
    pub(super) id: String,
    pub(super) agent: String,
    pub(super) user: String,
    pub(super) stream: bool,
    pub(super) calls: Vec<ToolCall>,
}

/// What a thread actor remembers of its thread. Another daemon may have changed the thread
/// since, so it is checked against the store under the turn lease before every change.
#[derive(Debug, Default)]
pub(super) struct Cached {
    /// Whether `recent` and `total` were read from the store.
    pub(super) loaded: bool,
    pub(super) info: Option<ThreadInfo>,
    pub(super) pending: Option<PendingApproval>,
    /// The most recent messages, at most `window`, oldest first.
    pub(super) recent: Vec<ThreadMessage>,
    pub(super) total: u64,
}

impl Cached {
    pub(super) fn remember(&mut self, messages: Vec<ThreadMessage>, window: usize) {
        if let Some(last) = messages.last() {
            self.total = last.seq + 1;
        }
        self.recent.extend(messages);
        if self.recent.len() > window {
            let excess = self.recent.len() - window;
            self.recent.drain(..excess);
        }
    }

    /// Fails unless the thread exists, is not archived and has no pending approval.
    pub(super) fn ready_for_turn(&self, id: &ThreadId) -> Result<(), AgentError> {
        let info = self.info.as_ref().ok_or_else(|| AgentError::NotFound {
            what: "thread",
            id: id.thread().to_owned(),
        })?;
        if info.archived {
            return Err(AgentError::Archived {
                thread: info.id.clone(),
            });
        }
        if let Some(pending) = &self.pending {
            return Err(AgentError::AwaitingApproval {
                thread: info.id.clone(),
                approval: pending.id.clone(),
            });
        }
        Ok(())
    }

    /// Brings what is cached of thread `id` up to date: the metadata and pending approval are
    /// read each time, the last `window` messages only when the thread's length or creation
    /// time moved.
    pub(super) async fn refresh(
        &mut self,
        threads: &ThreadStore,
        id: &ThreadId,
        window: usize,
    ) -> Result<(), AgentError> {
        let store = threads.store();
        let keys = [id.meta_key(), id.approval_key()];
        let messages = id.messages_key();
        let (values, total) = futures::try_join!(store.get_many(&keys), store.len(&messages))?;
        let mut values = values.into_iter();
        let info: Option<ThreadInfo> = match values.next().flatten() {
            Some(bytes) => Some(decode(&keys[0], &bytes)?),
            None => None,
        };
        let pending: Option<PendingApproval> = match values.next().flatten() {
            Some(bytes) => Some(decode(&keys[1], &bytes)?),
            None => None,
        };
        let created = |info: &Option<ThreadInfo>| info.as_ref().map(|i| i.created_ms);
        if !self.loaded || self.total != total || created(&self.info) != created(&info) {
            self.loaded = false;
            self.recent = if total == 0 {
                Vec::new()
            } else {
                let raw = store.range(&messages, -(window as i64), -1).await?;
                decode_all(&messages, &raw)?
            };
            self.total = total;
            self.loaded = true;
        }
        self.info = info;
        self.pending = pending;
        Ok(())
    }
}
