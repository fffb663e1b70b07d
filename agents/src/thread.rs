//! The thread actor: one live conversation thread, persisted in the store.
//!
//! It takes [`Turn`] (a user message answered by an agent), [`Approve`] (resume a turn paused
//! for a tool approval), [`ReadMessages`], [`Archive`] and [`Delete`]. Threads are entities of
//! a [`Registry`](troupe_runtime::Registry), which supervises them: it activates a thread on
//! its first message, passivates it when idle, and deactivates it if it panics.
//!
//! Turns, approvals, archive and delete are handled one at a time (`AtomicResponse`): concurrent
//! messages to one thread are serialized, and user, assistant, tool-call and tool-result
//! messages are persisted in order. Across daemons, each of them runs under the thread's turn
//! lease ([`crate::thread_lease`]) and first brings what the actor remembers (metadata,
//! pending approval, the recent messages) up to date with the store, so a thread continued on
//! any daemon numbers its messages contiguously and gives its model every earlier message.
//!
//! The registry delivers each message as [`Traced`] with its sender's span: a turn runs in a
//! `thread.turn` span (`group`, `thread`, `agent`) under it, and hands that span on to the
//! agent with [`RunAgent`] (see [`troupe_runtime::trace`]).

use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{Instrument, Span};
use troupe_runtime::store::Write;
use troupe_runtime::Traced;

use crate::agent::{AgentDirectory, AgentRun, Decided, RunAgent, RunStatus};
use crate::error::AgentError;
use crate::events::{EventKind, EventLog};
use crate::message::{ChatMessage, Role, ToolCall};
use crate::model::Usage;
use crate::stream::DeltaWriter;
use crate::thread_lease::TurnLease;
use crate::thread_store::{
    decode, decode_all, encode, now_ms, ThreadId, ThreadInfo, ThreadMessage, ThreadStore,
};

/// A user message for an agent to answer.
#[derive(Debug, Message)]
#[rtype(result = "Result<TurnOutcome, AgentError>")]
pub struct Turn {
    /// The agent that answers.
    pub agent: String,
    /// The user writing.
    pub user: String,
    /// The message.
    pub input: String,
    /// Stream the answer's deltas to the turn's delta stream.
    pub stream: bool,
    /// Told the delta stream as soon as it is open (streamed turns only).
    pub started: Option<StreamStarted>,
}

/// Where a streamed turn's deltas go, sent as soon as the stream is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The thread.
    pub thread: String,
    /// The delta stream.
    pub stream: String,
}

/// Receives the [`StreamStart`] of a streamed turn.
pub type StreamStarted = tokio::sync::mpsc::UnboundedSender<StreamStart>;

/// Resolves the pending approval of a paused turn and resumes it.
#[derive(Debug, Message)]
#[rtype(result = "Result<TurnOutcome, AgentError>")]
pub struct Approve {
    /// The approval id from [`TurnStatus::AwaitingApproval`].
    pub approval: String,
    /// Run the calls (`true`) or refuse them (`false`).
    pub approve: bool,
}

/// Reads messages `from..from+limit`, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Result<MessagePage, AgentError>")]
pub struct ReadMessages {
    /// First position.
    pub from: u64,
    /// At most this many.
    pub limit: usize,
}

/// Archives the thread: readable, but it takes no new turns.
#[derive(Debug, Message)]
#[rtype(result = "Result<ThreadInfo, AgentError>")]
pub struct Archive;

/// Deletes the thread and everything in it; the actor stops.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Delete;

/// A page of messages.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// The messages, oldest first.
    pub messages: Vec<ThreadMessage>,
    /// The thread's length.
    pub total: u64,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TurnStatus {
    /// The agent answered.
    Completed,
    /// The agent wants tools that need approval; resume with [`Approve`].
    AwaitingApproval {
        /// The approval to resolve.
        approval: String,
        /// The calls waiting.
        calls: Vec<ToolCall>,
    },
    /// The agent hit its `max_steps` without a final answer.
    StepLimit,
}

/// The result of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// The thread id.
    pub thread: String,
    /// Position of the last message written.
    pub seq: u64,
    /// The final answer (empty unless completed).
    pub answer: String,
    /// How it ended.
    pub status: TurnStatus,
    /// Tokens over all model calls of the turn.
    pub usage: Usage,
    /// Model calls made.
    pub model_calls: u32,
    /// The delta stream, when streamed.
    pub delta_stream: Option<String>,
}

/// A paused turn, persisted at `thread:{group}:{thread}:approval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingApproval {
    id: String,
    agent: String,
    user: String,
    stream: bool,
    calls: Vec<ToolCall>,
}

/// What a thread actor remembers of its thread. Another daemon may have changed the thread
/// since, so it is checked against the store under the turn lease before every change.
#[derive(Debug, Default)]
struct Cached {
    /// Whether `recent` and `total` were read from the store.
    loaded: bool,
    info: Option<ThreadInfo>,
    pending: Option<PendingApproval>,
    /// The most recent messages, at most `window`, oldest first.
    recent: Vec<ThreadMessage>,
    total: u64,
}

impl Cached {
    fn remember(&mut self, messages: Vec<ThreadMessage>, window: usize) {
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
    fn ready_for_turn(&self, id: &ThreadId) -> Result<(), AgentError> {
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
}

/// What a change of the thread works with.
#[derive(Clone)]
struct Env {
    id: ThreadId,
    threads: ThreadStore,
    agents: Arc<AgentDirectory>,
    window: usize,
}

/// Brings `cached` up to date: the metadata and pending approval are read each time, the
/// recent messages only when the thread's length or creation time moved.
async fn refresh(env: &Env, cached: &mut Cached) -> Result<(), AgentError> {
    let store = env.threads.store();
    let keys = [env.id.meta_key(), env.id.approval_key()];
    let messages = env.id.messages_key();
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
    if !cached.loaded || cached.total != total || created(&cached.info) != created(&info) {
        cached.loaded = false;
        cached.recent = if total == 0 {
            Vec::new()
        } else {
            let raw = store.range(&messages, -(env.window as i64), -1).await?;
            decode_all(&messages, &raw)?
        };
        cached.total = total;
        cached.loaded = true;
    }
    cached.info = info;
    cached.pending = pending;
    Ok(())
}

/// A live thread. See the module documentation.
pub struct ThreadActor {
    env: Env,
    cached: Cached,
}

impl ThreadActor {
    /// A thread actor keeping the last `window` messages in memory (at least the largest
    /// `context_messages` of any agent).
    pub fn new(
        id: ThreadId,
        threads: ThreadStore,
        agents: Arc<AgentDirectory>,
        window: usize,
    ) -> Self {
        ThreadActor {
            env: Env {
                id,
                threads,
                agents,
                window: window.max(1),
            },
            cached: Cached::default(),
        }
    }

    /// Runs `change` under the thread's turn lease, with what the actor remembers brought up
    /// to date first; what `change` hands back is remembered afterwards.
    fn leased<T, F, Fut>(
        &mut self,
        span: Span,
        change: F,
    ) -> impl ActorFuture<Self, Output = Result<T, AgentError>>
    where
        T: 'static,
        F: FnOnce(Env, Cached, Arc<TurnLease>) -> Fut + 'static,
        Fut: std::future::Future<Output = (Cached, Result<T, AgentError>)> + 'static,
    {
        let mut cached = std::mem::take(&mut self.cached);
        let env = self.env.clone();
        async move {
            let lease = match TurnLease::acquire(env.threads.store().clone(), &env.id).await {
                Ok(lease) => Arc::new(lease),
                Err(err) => return (cached, Err(err)),
            };
            let (cached, result) = match refresh(&env, &mut cached).await {
                Ok(()) => lease.hold(change(env, cached, lease.clone())).await,
                Err(err) => {
                    cached.loaded = false;
                    (cached, Err(err))
                }
            };
            lease.release().await;
            (cached, result)
        }
        .instrument(span)
        .into_actor(self)
        .map(|(cached, result), act, _| {
            act.cached = cached;
            result
        })
    }
}

/// The model context for `agent`: its instructions, then the last of `recent`.
fn context_of(
    agents: &AgentDirectory,
    agent: &str,
    recent: &[ThreadMessage],
) -> Result<Vec<ChatMessage>, AgentError> {
    let handle = agents.get(agent).ok_or_else(|| AgentError::NotFound {
        what: "agent",
        id: agent.to_owned(),
    })?;
    let settings = &handle.settings;
    let mut context = Vec::with_capacity(settings.context_messages.min(recent.len()) + 2);
    if !settings.instructions.is_empty() {
        context.push(ChatMessage::new(
            Role::System,
            settings.instructions.clone(),
        ));
    }
    let mut start = recent.len().saturating_sub(settings.context_messages);
    // A window that starts inside a tool exchange would open with tool results whose call is
    // cut off, which servers refuse: it starts after them.
    while recent
        .get(start)
        .is_some_and(|m| m.message.role == Role::Tool)
    {
        start += 1;
    }
    context.extend(recent[start..].iter().map(|m| m.message.clone()));
    Ok(context)
}

/// A one-shot turn: `input` answered by `agent` in thread `id`, which no actor holds (a
/// workflow call's own thread). The thread's metadata and the user's message (after the
/// `next_seq` messages already there) are written in one batch with `prelude`, then the
/// agent runs and its messages are written like a turn's. The thread is an ordinary thread
/// afterwards: readable, and a turn paused for an approval can be approved through it.
pub(crate) async fn one_shot(
    threads: ThreadStore,
    agents: Arc<AgentDirectory>,
    id: ThreadId,
    next_seq: u64,
    prelude: Vec<Write>,
    turn: Turn,
) -> Result<TurnOutcome, AgentError> {
    let user_message = ThreadMessage {
        seq: next_seq,
        at_ms: now_ms(),
        agent: None,
        message: ChatMessage::new(Role::User, turn.input),
    };
    let mut context = context_of(&agents, &turn.agent, &[])?;
    context.push(user_message.message.clone());
    let approval_key = id.approval_key();
    let spec = Drive {
        id,
        threads,
        agents,
        agent: turn.agent,
        creator: turn.user.clone(),
        user: turn.user,
        context,
        resume: Vec::new(),
        first: vec![user_message],
        prelude,
        next_seq,
        stream: turn.stream,
        started: turn.started,
        approval_key,
        lease: None,
    };
    let span = tracing::info_span!(
        "thread.turn",
        group = %spec.id.group(),
        thread = %spec.id.thread(),
        agent = %spec.agent,
    );
    drive(spec).instrument(span).await.1
}

impl Actor for ThreadActor {
    type Context = Context<Self>;
}

/// What a turn or a resumed turn runs, prepared by the actor before it awaits.
struct Drive {
    id: ThreadId,
    threads: ThreadStore,
    agents: Arc<AgentDirectory>,
    agent: String,
    user: String,
    /// The thread's creator, whose thread index holds it.
    creator: String,
    context: Vec<ChatMessage>,
    resume: Vec<Decided>,
    /// Messages to persist before the agent runs (the user's message).
    first: Vec<ThreadMessage>,
    /// Other writes of the batch that persists `first` (a one-shot thread's metadata).
    prelude: Vec<Write>,
    next_seq: u64,
    stream: bool,
    started: Option<StreamStarted>,
    approval_key: String,
    /// The turn lease held by the change (none for a one-shot thread: its run's lease covers
    /// it), confirmed before messages are written.
    lease: Option<Arc<TurnLease>>,
}

/// What a drive changed, applied to the actor afterwards.
struct Driven {
    written: Vec<ThreadMessage>,
    pending: Option<PendingApproval>,
}

async fn drive(d: Drive) -> (Driven, Result<TurnOutcome, AgentError>) {
    let mut driven = Driven {
        written: Vec::new(),
        pending: None,
    };
    let result = drive_inner(&d, &mut driven).await;
    if let Err(err) = &result {
        let event = json!({"thread": d.id.thread(), "agent": d.agent, "user": d.user,
                           "kind": err.kind(), "error": err.to_string()});
        if let Err(e) = d
            .threads
            .store()
            .apply(vec![EventLog::write(
                d.id.group(),
                EventKind::Error,
                &event,
            )])
            .await
        {
            tracing::warn!(error = %e, "could not record an error event");
        }
    }
    (driven, result)
}

async fn drive_inner(d: &Drive, driven: &mut Driven) -> Result<TurnOutcome, AgentError> {
    let store = d.threads.store().clone();
    let handle = d.agents.get(&d.agent).ok_or_else(|| AgentError::NotFound {
        what: "agent",
        id: d.agent.clone(),
    })?;
    let mut seq = d.next_seq;
    if !d.first.is_empty() {
        persist(d, &d.first, d.prelude.clone()).await?;
        driven.written.extend(d.first.iter().cloned());
        seq += d.first.len() as u64;
    }
    let writer = d.stream.then(|| {
        let key = d.id.delta_stream(d.next_seq);
        DeltaWriter::start(store.clone(), key, d.threads.retention())
    });
    if let Some(writer) = &writer {
        store
            .set(
                &d.id.live_key(),
                writer.stream().as_bytes(),
                Some(writer.ttl()),
            )
            .await?;
        if let Some(started) = &d.started {
            let _ = started.send(StreamStart {
                thread: d.id.thread().to_owned(),
                stream: writer.stream().to_owned(),
            });
        }
    }
    let request = RunAgent {
        span: Span::current(),
        thread: d.id.clone(),
        user: d.user.clone(),
        messages: d.context.clone(),
        resume: d.resume.clone(),
        deltas: writer.as_ref().and_then(DeltaWriter::sink),
    };
    let delta_stream = writer.as_ref().map(|w| w.stream().to_owned());
    let run: Result<AgentRun, AgentError> = match handle.actor.send(request).await {
        Ok(run) => run,
        Err(err) => Err(err.into()),
    };
    if let Some(writer) = writer {
        let error = run.as_ref().err().map(ToString::to_string);
        writer.finish(error.as_deref()).await;
        store.del(&[d.id.live_key()]).await?;
    }
    let run = run?;
    let at_ms = now_ms();
    let produced: Vec<ThreadMessage> = run
        .produced
        .into_iter()
        .enumerate()
        .map(|(i, message)| ThreadMessage {
            seq: seq + i as u64,
            at_ms,
            agent: Some(d.agent.clone()),
            message,
        })
        .collect();
    persist(d, &produced, Vec::new()).await?;
    let last_seq = produced.last().map_or(seq.saturating_sub(1), |m| m.seq);
    driven.written.extend(produced);
    let status = match run.status {
        RunStatus::Completed => TurnStatus::Completed,
        RunStatus::StepLimit => TurnStatus::StepLimit,
        RunStatus::AwaitingApproval { calls } => {
            let pending = PendingApproval {
                id: format!("a{last_seq}"),
                agent: d.agent.clone(),
                user: d.user.clone(),
                stream: d.stream,
                calls: calls.clone(),
            };
            let retention = Some(d.threads.retention());
            store
                .set(&d.approval_key, &encode(&pending)?, retention)
                .await?;
            let status = TurnStatus::AwaitingApproval {
                approval: pending.id.clone(),
                calls,
            };
            driven.pending = Some(pending);
            status
        }
    };
    Ok(TurnOutcome {
        thread: d.id.thread().to_owned(),
        seq: last_seq,
        answer: run.answer,
        status,
        usage: run.usage,
        model_calls: run.model_calls,
        delta_stream,
    })
}

/// Appends messages to the thread and records one event per message, in one batch after
/// `prelude`.
async fn persist(
    d: &Drive,
    messages: &[ThreadMessage],
    prelude: Vec<Write>,
) -> Result<(), AgentError> {
    if messages.is_empty() {
        return Ok(());
    }
    if let Some(lease) = &d.lease {
        lease.confirm().await?;
    }
    let mut values = Vec::with_capacity(messages.len());
    let mut writes = prelude;
    writes.reserve(2 * messages.len() + 1);
    for m in messages {
        values.push(encode(m)?);
        let event = json!({"thread": d.id.thread(), "seq": m.seq, "role": m.message.role,
                           "agent": m.agent, "user": d.user});
        writes.push(EventLog::write(d.id.group(), EventKind::Message, &event));
    }
    writes.push(Write::Push {
        key: d.id.messages_key(),
        values,
    });
    writes.extend(d.threads.touch(&d.id, &d.creator));
    Ok(d.threads.store().apply(writes).await?)
}

impl ThreadActor {
    /// The span of a turn of this thread for `agent`, under the sender's span.
    fn turn_span(&self, caller: &Span, agent: &str) -> Span {
        tracing::info_span!(
            parent: caller,
            "thread.turn",
            group = %self.env.id.group(),
            thread = %self.env.id.thread(),
            agent = %agent,
        )
    }
}

impl Handler<Traced<Turn>> for ThreadActor {
    type Result = AtomicResponse<Self, Result<TurnOutcome, AgentError>>;

    fn handle(&mut self, traced: Traced<Turn>, _: &mut Context<Self>) -> Self::Result {
        let Traced { msg, span: caller } = traced;
        let span = self.turn_span(&caller, &msg.agent);
        AtomicResponse::new(Box::pin(self.leased(
            span,
            move |env, mut cached, lease| async move {
                if let Err(err) = cached.ready_for_turn(&env.id) {
                    return (cached, Err(err));
                }
                let creator = cached
                    .info
                    .as_ref()
                    .map_or_else(String::new, |i| i.user.clone());
                let user_message = ThreadMessage {
                    seq: cached.total,
                    at_ms: now_ms(),
                    agent: None,
                    message: ChatMessage::new(Role::User, msg.input),
                };
                let mut context = match context_of(&env.agents, &msg.agent, &cached.recent) {
                    Ok(context) => context,
                    Err(err) => return (cached, Err(err)),
                };
                context.push(user_message.message.clone());
                let approval_key = env.id.approval_key();
                let spec = Drive {
                    id: env.id,
                    threads: env.threads,
                    agents: env.agents,
                    agent: msg.agent,
                    user: msg.user,
                    creator,
                    context,
                    resume: Vec::new(),
                    first: vec![user_message],
                    prelude: Vec::new(),
                    next_seq: cached.total,
                    stream: msg.stream,
                    started: msg.started,
                    approval_key,
                    lease: Some(lease),
                };
                let (driven, result) = drive(spec).await;
                cached.remember(driven.written, env.window);
                if result.is_ok() {
                    cached.pending = driven.pending;
                }
                (cached, result)
            },
        )))
    }
}

impl Handler<Traced<Approve>> for ThreadActor {
    type Result = AtomicResponse<Self, Result<TurnOutcome, AgentError>>;

    fn handle(&mut self, traced: Traced<Approve>, _: &mut Context<Self>) -> Self::Result {
        let Traced { msg, span: caller } = traced;
        // The agent is known once the approval is read: the span names it then.
        let span = tracing::info_span!(
            parent: &caller,
            "thread.turn",
            group = %self.env.id.group(),
            thread = %self.env.id.thread(),
            agent = tracing::field::Empty,
        );
        let turn_span = span.clone();
        AtomicResponse::new(Box::pin(self.leased(
            span,
            move |env, mut cached, lease| async move {
                let Some(pending) = cached.pending.clone().filter(|p| p.id == msg.approval) else {
                    let err = AgentError::NotFound {
                        what: "approval",
                        id: msg.approval,
                    };
                    return (cached, Err(err));
                };
                turn_span.record("agent", pending.agent.as_str());
                let context = match context_of(&env.agents, &pending.agent, &cached.recent) {
                    Ok(context) => context,
                    Err(err) => return (cached, Err(err)),
                };
                let resume = pending
                    .calls
                    .iter()
                    .map(|call| Decided {
                        call: call.clone(),
                        approved: msg.approve,
                    })
                    .collect();
                let store = env.threads.store().clone();
                let approval_key = env.id.approval_key();
                let spec = Drive {
                    id: env.id,
                    threads: env.threads,
                    agents: env.agents,
                    agent: pending.agent.clone(),
                    user: pending.user.clone(),
                    creator: cached
                        .info
                        .as_ref()
                        .map_or_else(|| pending.user.clone(), |i| i.user.clone()),
                    context,
                    resume,
                    first: Vec::new(),
                    prelude: Vec::new(),
                    next_seq: cached.total,
                    stream: pending.stream,
                    started: None,
                    approval_key: approval_key.clone(),
                    lease: Some(lease),
                };
                let (driven, mut result) = drive(spec).await;
                // The approval is cleared only once the resumed run has persisted its results.
                if result.is_ok() && driven.pending.is_none() {
                    if let Err(err) = store.del(&[approval_key]).await {
                        result = Err(err.into());
                    }
                }
                cached.remember(driven.written, env.window);
                cached.pending = match &result {
                    Ok(_) => driven.pending,
                    Err(_) => Some(pending),
                };
                (cached, result)
            },
        )))
    }
}

// Reads, archive and delete continue no task: the sender's span is enough.
troupe_runtime::forward_traced!(ThreadActor => ReadMessages, Archive, Delete);

impl Handler<ReadMessages> for ThreadActor {
    type Result = ResponseFuture<Result<MessagePage, AgentError>>;

    fn handle(&mut self, msg: ReadMessages, _: &mut Context<Self>) -> Self::Result {
        let (threads, id) = (self.env.threads.clone(), self.env.id.clone());
        Box::pin(async move {
            let (messages, total) = threads.messages(&id, msg.from, msg.limit).await?;
            Ok(MessagePage { messages, total })
        })
    }
}

impl Handler<Archive> for ThreadActor {
    type Result = AtomicResponse<Self, Result<ThreadInfo, AgentError>>;

    fn handle(&mut self, _: Archive, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.leased(
            Span::current(),
            |env, mut cached, _| async move {
                let Some(mut info) = cached.info.clone() else {
                    let err = AgentError::NotFound {
                        what: "thread",
                        id: env.id.thread().to_owned(),
                    };
                    return (cached, Err(err));
                };
                info.archived = true;
                let result = env.threads.save_info(&env.id, &info).await;
                if result.is_ok() {
                    cached.info = Some(info.clone());
                }
                (cached, result.map(|()| info))
            },
        )))
    }
}

impl Handler<Delete> for ThreadActor {
    type Result = AtomicResponse<Self, Result<(), AgentError>>;

    fn handle(&mut self, _: Delete, _: &mut Context<Self>) -> Self::Result {
        let deleted = self.leased(Span::current(), |env, cached, _| async move {
            let creator = cached.info.as_ref().map(|i| i.user.as_str());
            match env.threads.delete(&env.id, creator).await {
                Ok(()) => (Cached::default(), Ok(())),
                Err(err) => (cached, Err(err)),
            }
        });
        AtomicResponse::new(Box::pin(deleted.map(|result, _, ctx| {
            if result.is_ok() {
                ctx.stop();
            }
            result
        })))
    }
}
