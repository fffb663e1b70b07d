//! The thread actor: one live conversation thread whose messages are persisted in the store.
//!
//! It takes [`AppendMessages`] and [`ReadHistory`]. Threads are entities of a
//! [`Registry`](troupe_runtime::Registry), which supervises them: it activates a thread on its
//! first message (the actor loads its recent messages from the store before handling
//! anything), passivates it when idle, and deactivates it if it panics.
//!
//! Store layout (prefix added by the backend): `thread:{group}:{thread}:messages`, a list of
//! JSON [`ChatMessage`]s. The group is part of the key, so one group can never address
//! another group's thread.

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use troupe_runtime::store::Store;

use crate::error::AgentError;
use crate::message::ChatMessage;

/// Identifies a thread within a tenant group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadId {
    group: String,
    thread: String,
}

impl ThreadId {
    /// A thread id; both parts must be non-empty and free of `:` (they form store keys).
    pub fn new(group: &str, thread: &str) -> Result<Self, AgentError> {
        for (what, value) in [("group", group), ("thread id", thread)] {
            if value.is_empty() || value.contains(':') {
                return Err(AgentError::Invalid {
                    what,
                    message: format!("{value:?} must be non-empty and must not contain ':'"),
                });
            }
        }
        Ok(ThreadId {
            group: group.to_owned(),
            thread: thread.to_owned(),
        })
    }

    /// The tenant group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The thread id within the group.
    pub fn thread(&self) -> &str {
        &self.thread
    }

    fn messages_key(&self) -> String {
        format!("thread:{}:{}:messages", self.group, self.thread)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.thread)
    }
}

/// Appends messages to the thread (persisted before the reply); replies with the thread's
/// new length.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, AgentError>")]
pub struct AppendMessages(pub Vec<ChatMessage>);

/// Reads the last `n` messages, oldest first, and the thread's total length.
#[derive(Debug, Message)]
#[rtype(result = "Result<History, AgentError>")]
pub struct ReadHistory(pub usize);

/// The reply to [`ReadHistory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The last messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// How many messages the thread has in all.
    pub total: u64,
}

/// A live thread. See the module documentation.
pub struct ThreadActor {
    id: ThreadId,
    store: Arc<dyn Store>,
    /// The most recent messages, at most `window` of them, oldest first.
    recent: Vec<ChatMessage>,
    window: usize,
    total: u64,
    life: troupe_runtime::Life,
}

impl ThreadActor {
    /// A thread actor that keeps the last `window` messages in memory.
    pub fn new(
        id: ThreadId,
        store: Arc<dyn Store>,
        window: usize,
        life: troupe_runtime::Life,
    ) -> Self {
        ThreadActor {
            id,
            store,
            recent: Vec::new(),
            window: window.max(1),
            total: 0,
            life,
        }
    }

    fn remember(&mut self, messages: impl IntoIterator<Item = ChatMessage>) {
        self.recent.extend(messages);
        if self.recent.len() > self.window {
            let excess = self.recent.len() - self.window;
            self.recent.drain(..excess);
        }
    }
}

fn decode(key: &str, raw: &[Vec<u8>]) -> Result<Vec<ChatMessage>, AgentError> {
    raw.iter()
        .map(|bytes| {
            serde_json::from_slice(bytes).map_err(|err| AgentError::Corrupt {
                key: key.to_owned(),
                message: err.to_string(),
            })
        })
        .collect()
}

impl Actor for ThreadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _span =
            tracing::debug_span!("thread.load", group = %self.id.group, thread = %self.id.thread)
                .entered();
        let (store, key, window) = (self.store.clone(), self.id.messages_key(), self.window);
        // Nothing is handled until the thread's state is loaded.
        ctx.wait(
            async move {
                let total = store.len(&key).await?;
                let raw = store.range(&key, -(window as i64), -1).await?;
                Ok::<_, AgentError>((total, decode(&key, &raw)?))
            }
            .into_actor(self)
            .map(|loaded, act, ctx| match loaded {
                Ok((total, recent)) => {
                    act.total = total;
                    act.recent = recent;
                }
                Err(err) => {
                    act.life.fail(format!("loading thread {}: {err}", act.id));
                    ctx.stop();
                }
            }),
        );
    }
}

impl Handler<AppendMessages> for ThreadActor {
    type Result = AtomicResponse<Self, Result<u64, AgentError>>;

    fn handle(&mut self, msg: AppendMessages, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::debug_span!("thread.append", group = %self.id.group, thread = %self.id.thread, count = msg.0.len());
        let _entered = span.enter();
        let encoded: Result<Vec<Vec<u8>>, _> = msg.0.iter().map(serde_json::to_vec).collect();
        let (store, key) = (self.store.clone(), self.id.messages_key());
        let messages = msg.0;
        // Atomic: appends to one thread are persisted and applied in arrival order.
        AtomicResponse::new(Box::pin(
            async move {
                let encoded = encoded.map_err(|err| AgentError::Invalid {
                    what: "message",
                    message: err.to_string(),
                })?;
                let values: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
                Ok::<_, AgentError>(store.push(&key, &values).await?)
            }
            .into_actor(self)
            .map(move |pushed, act, _| {
                let total = pushed?;
                act.total = total;
                act.remember(messages);
                Ok(total)
            }),
        ))
    }
}

impl Handler<ReadHistory> for ThreadActor {
    type Result = ResponseActFuture<Self, Result<History, AgentError>>;

    fn handle(&mut self, msg: ReadHistory, _: &mut Context<Self>) -> Self::Result {
        let wanted = msg.0;
        let have = self.recent.len() as u64;
        if wanted <= self.recent.len() || have == self.total {
            let start = self.recent.len().saturating_sub(wanted);
            let reply = History {
                messages: self.recent[start..].to_vec(),
                total: self.total,
            };
            return Box::pin(fut::ready(Ok(reply)));
        }
        let (store, key, total) = (self.store.clone(), self.id.messages_key(), self.total);
        Box::pin(
            async move {
                let raw = store.range(&key, -(wanted as i64), -1).await?;
                Ok(History {
                    messages: decode(&key, &raw)?,
                    total,
                })
            }
            .into_actor(self),
        )
    }
}
