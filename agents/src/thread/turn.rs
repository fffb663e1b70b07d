//! How a turn runs: the model context of its agent ([`context_of`]), the agent called, and its
//! messages and their events persisted ([`Drive`]); and the one-shot turn of a workflow
//! call's thread, which no actor holds ([`one_shot`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tracing::{Instrument, Span};
use troupe_runtime::store::Write;

use super::messages::{StreamStart, StreamStarted, Turn, TurnOutcome, TurnStatus};
use super::state::PendingApproval;
use crate::agent::{AgentDirectory, AgentRun, Decided, RunAgent, RunStatus};
use crate::error::AgentError;
use crate::events::{AuditEvent, EventLog, Who};
use crate::message::{ChatMessage, Role};
use crate::policy::Hold;
use crate::stream::DeltaWriter;
use crate::thread_lease::TurnLease;
use crate::thread_store::{
    encode, now_ms, retouch_within, NewThread, ThreadId, ThreadInfo, ThreadMessage, ThreadStore,
};

/// The model context for `agent`: its instructions, then the last of `recent`.
pub(super) fn context_of(
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

/// A one-shot turn: `input` answered by `agent` in thread `id` (a workflow call's own, no
/// actor holds it), made by `new`. Nothing is written before the agent runs. A turn that
/// ended (answered, or at its step limit) returns the writes that store it, for the caller's
/// own batch: the thread whole in one value ([`ThreadStore::once_write`]: no per-message
/// events, its run's journal names it) and its last model call's usage record. A turn paused
/// for an approval is written at once as an ordinary thread (`created(info)` in its batch),
/// which the approval continues; a failed turn's usage and error event are written at once.
pub(crate) async fn one_shot(
    own: OwnTurn,
    retention: Option<Duration>,
) -> Result<(TurnOutcome, Vec<Write>), AgentError> {
    let span = turn_span(&own.id, &own.turn.agent);
    async move {
        let (alone, rest) = run_alone(own).await?;
        if let RunStatus::AwaitingApproval { calls } = &alone.status {
            let calls = calls.clone();
            // Boxed: rare, and its state would otherwise widen every one-shot turn's.
            let outcome = Box::pin(write_paused(rest, alone, calls)).await?;
            return Ok((outcome, Vec::new()));
        }
        let mut writes = alone.hold.take();
        let outcome = alone.outcome(&rest.id, None);
        writes.push(
            rest.threads
                .once_write(&rest.id, rest.new, alone.messages, retention)?,
        );
        Ok((outcome, writes))
    }
    .instrument(span)
    .await
}

/// A turn in a thread of its own that it creates (an agent task without a thread, not
/// streamed): `new` made with the id `id`, which no one else knows yet, so the turn needs no
/// actor and no lease, and nothing is written before the agent answers. It returns the one
/// batch that writes the thread as any other (owner, metadata, listing, `created(info)`),
/// its messages and their events, the pending approval of a paused turn and the last model
/// call's usage record, for the caller to send (with its own writes: the task's result).
/// Later turns continue it through its actor.
pub(crate) async fn fresh(own: OwnTurn) -> Result<(TurnOutcome, Vec<Write>), AgentError> {
    let span = turn_span(&own.id, &own.turn.agent);
    async move {
        let (alone, rest) = run_alone(own).await?;
        let Rest {
            threads,
            id,
            new,
            agent,
            user,
            created,
        } = rest;
        let (info, mut writes) = threads.fresh_creation(&id, new)?;
        writes.extend(created(&info));
        writes.extend(message_writes(&id, &alone.messages, &user)?);
        writes.extend(threads.touch_created(&id));
        writes.extend(alone.hold.take());
        let mut pending = None;
        if let RunStatus::AwaitingApproval { calls } = &alone.status {
            let (approval, write) = approval_write(&threads, &id, &alone, agent, user, calls)?;
            writes.push(write);
            pending = Some(approval);
        }
        Ok((alone.outcome(&id, pending), writes))
    }
    .instrument(span)
    .await
}

/// A turn in a thread of its own, run without an actor ([`one_shot`], [`fresh`]): the
/// thread made by `new` with the id `id`, and what writes its creation event.
pub(crate) struct OwnTurn {
    pub(crate) threads: ThreadStore,
    pub(crate) agents: Arc<AgentDirectory>,
    pub(crate) id: ThreadId,
    pub(crate) new: NewThread,
    pub(crate) turn: Turn,
    pub(crate) created: fn(&ThreadInfo) -> Vec<Write>,
}

fn turn_span(id: &ThreadId, agent: &str) -> Span {
    tracing::info_span!(
        "thread.turn",
        group = %id.group(),
        thread = %id.thread(),
        agent = %agent,
    )
}

/// A turn run without a thread actor: its messages (the user's first, numbered from 0), how
/// the agent's run ended, and the hold with its last model call's usage record.
struct Alone {
    messages: Vec<ThreadMessage>,
    status: RunStatus,
    answer: String,
    usage: crate::model::Usage,
    model_calls: u32,
    hold: Arc<Hold>,
}

impl Alone {
    /// The turn's outcome; `approval`: the id of its pending approval, if it paused.
    fn outcome(&self, id: &ThreadId, approval: Option<String>) -> TurnOutcome {
        let status = match (&self.status, approval) {
            (RunStatus::AwaitingApproval { calls }, Some(approval)) => {
                TurnStatus::AwaitingApproval {
                    approval,
                    calls: calls.clone(),
                }
            }
            (RunStatus::StepLimit, _) => TurnStatus::StepLimit,
            _ => TurnStatus::Completed,
        };
        TurnOutcome {
            thread: id.thread().to_owned(),
            seq: self.messages.last().map_or(0, |m| m.seq),
            answer: self.answer.clone(),
            status,
            usage: self.usage,
            model_calls: self.model_calls,
            delta_stream: None,
        }
    }
}

/// What a turn run alone leaves for writing it: everything of its [`OwnTurn`] but the turn,
/// and the turn's agent and user.
struct Rest {
    threads: ThreadStore,
    id: ThreadId,
    new: NewThread,
    agent: String,
    user: String,
    created: fn(&ThreadInfo) -> Vec<Write>,
}

/// Runs `own`'s agent on its input alone, as the first message of its thread. A failed
/// run's held usage record and its error event are written at once.
async fn run_alone(own: OwnTurn) -> Result<(Alone, Rest), AgentError> {
    let OwnTurn {
        threads,
        agents,
        id,
        new,
        turn,
        created,
    } = own;
    let handle = agents
        .get(&turn.agent)
        .ok_or_else(|| AgentError::NotFound {
            what: "agent",
            id: turn.agent.clone(),
        })?;
    let user_message = ThreadMessage {
        seq: 0,
        at_ms: now_ms(),
        agent: None,
        message: ChatMessage::new(Role::User, turn.input),
    };
    let mut context = context_of(&agents, &turn.agent, &[])?;
    context.push(user_message.message.clone());
    let hold = Arc::new(Hold::default());
    let request = RunAgent {
        span: Span::current(),
        thread: id.clone(),
        user: turn.user.clone(),
        messages: context,
        resume: Vec::new(),
        deltas: None,
        hold: Some(hold.clone()),
    };
    let run = match handle.actor.send(request).await {
        Ok(run) => run,
        Err(err) => Err(err.into()),
    };
    let run = match run {
        Ok(run) => run,
        Err(err) => {
            let mut writes = hold.take();
            writes.push(error_event(&id, &turn.agent, &turn.user, &err));
            if let Err(e) = threads.store().apply(writes).await {
                tracing::warn!(error = %e, "could not record an error event");
            }
            return Err(err);
        }
    };
    let at_ms = now_ms();
    let mut messages = vec![user_message];
    messages.extend(
        run.produced
            .into_iter()
            .enumerate()
            .map(|(i, message)| ThreadMessage {
                seq: i as u64 + 1,
                at_ms,
                agent: Some(turn.agent.clone()),
                message,
            }),
    );
    let alone = Alone {
        messages,
        status: run.status,
        answer: run.answer,
        usage: run.usage,
        model_calls: run.model_calls,
        hold,
    };
    let rest = Rest {
        threads,
        id,
        new,
        agent: turn.agent,
        user: turn.user,
        created,
    };
    Ok((alone, rest))
}

/// The writes that append `messages` to thread `id` (by `user`) with one audit event each.
fn message_writes(
    id: &ThreadId,
    messages: &[ThreadMessage],
    user: &str,
) -> Result<Vec<Write>, AgentError> {
    let mut values = Vec::with_capacity(messages.len());
    let mut writes = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        values.push(encode(m)?);
        writes.push(message_event(id, m, user));
    }
    writes.push(Write::Push {
        key: id.messages_key(),
        values,
    });
    Ok(writes)
}

/// The audit event of message `m` of thread `id`.
fn message_event(id: &ThreadId, m: &ThreadMessage, user: &str) -> Write {
    let event = AuditEvent::Message {
        thread: id.thread(),
        seq: m.seq,
        role: m.message.role,
        agent: m.agent.as_deref(),
        user,
    };
    EventLog::write(id.group(), &event)
}

/// Writes a paused one-shot turn as an ordinary, unlisted thread (claimed, created or
/// continued, its messages, its pending approval and the held usage record in one batch).
async fn write_paused(
    rest: Rest,
    mut alone: Alone,
    calls: Vec<crate::message::ToolCall>,
) -> Result<TurnOutcome, AgentError> {
    let Rest {
        threads,
        new,
        agent,
        user,
        created,
        ..
    } = rest;
    let (id, next_seq, mut writes) = threads.prepare_one_shot(new, created).await?;
    for (i, m) in alone.messages.iter_mut().enumerate() {
        m.seq = next_seq + i as u64;
    }
    // Unlisted, like every workflow call's thread.
    let renewal = if writes.is_empty() {
        threads.renew(&id)
    } else {
        threads.touch_created(&id)
    };
    writes.extend(alone.hold.take());
    let values = alone
        .messages
        .iter()
        .map(encode)
        .collect::<Result<_, _>>()?;
    writes.push(Write::Push {
        key: id.messages_key(),
        values,
    });
    writes.extend(renewal);
    let (approval, write) = approval_write(&threads, &id, &alone, agent, user, &calls)?;
    writes.push(write);
    threads.store().apply(writes).await?;
    Ok(alone.outcome(&id, Some(approval)))
}

/// The pending approval of a turn run alone that paused on `calls` (its id, after the turn's
/// last message), and the write that stores it.
fn approval_write(
    threads: &ThreadStore,
    id: &ThreadId,
    alone: &Alone,
    agent: String,
    user: String,
    calls: &[crate::message::ToolCall],
) -> Result<(String, Write), AgentError> {
    let last_seq = alone.messages.last().map_or(0, |m| m.seq);
    let pending = PendingApproval {
        id: format!("a{last_seq}"),
        agent,
        user,
        stream: false,
        calls: calls.to_vec(),
    };
    let write = Write::Set {
        key: id.approval_key(),
        value: encode(&pending)?,
        ttl: Some(threads.retention()),
    };
    Ok((pending.id, write))
}

/// The audit event of a failed turn.
fn error_event(id: &ThreadId, agent: &str, user: &str, err: &AgentError) -> Write {
    let event = AuditEvent::Error {
        by: Who {
            thread: id.thread(),
            agent,
            user,
        },
        kind: err.kind(),
        error: err.to_string(),
    };
    EventLog::write(id.group(), &event)
}

/// What a turn or a resumed turn runs, prepared by the actor before it awaits.
pub(super) struct Drive {
    pub(super) id: ThreadId,
    pub(super) threads: ThreadStore,
    pub(super) agents: Arc<AgentDirectory>,
    pub(super) agent: String,
    pub(super) user: String,
    /// The thread's creator, whose thread index holds it.
    pub(super) creator: String,
    pub(super) context: Vec<ChatMessage>,
    pub(super) resume: Vec<Decided>,
    /// Messages to persist before the agent runs (the user's message).
    pub(super) first: Vec<ThreadMessage>,
    pub(super) next_seq: u64,
    pub(super) stream: bool,
    pub(super) started: Option<StreamStarted>,
    pub(super) approval_key: String,
    /// The turn lease held by the change, confirmed before messages are written.
    pub(super) lease: Arc<TurnLease>,
    /// When the thread was created, if it has no message yet: a creation moments ago wrote
    /// its keys' expiry and its listing, which its first messages need not renew.
    pub(super) created_ms: Option<u64>,
}

/// What a drive changed, applied to the actor afterwards.
pub(super) struct Driven {
    pub(super) written: Vec<ThreadMessage>,
    pub(super) pending: Option<PendingApproval>,
}

pub(super) async fn drive(d: Drive) -> (Driven, Result<TurnOutcome, AgentError>) {
    let mut driven = Driven {
        written: Vec::new(),
        pending: None,
    };
    let result = drive_inner(&d, &mut driven).await;
    if let Err(err) = &result {
        let event = error_event(&d.id, &d.agent, &d.user, err);
        if let Err(e) = d.threads.store().apply(vec![event]).await {
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
    let mut touched = None;
    if !d.first.is_empty() {
        let just_created = d.created_ms.is_some_and(|at| {
            let now = now_ms();
            at <= now && Duration::from_millis(now - at) < retouch(d)
        });
        let renewal = match just_created {
            true => Renewal::Created,
            false => Renewal::Full,
        };
        persist(d, &d.first, renewal).await?;
        touched = Some(Instant::now());
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
        hold: None,
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
    // The turn's first write touched the thread: its answer renews nothing unless the turn
    // took long, relative to the retention (see `retouch_within`).
    let renewal = match touched {
        Some(at) if at.elapsed() < retouch(d) => Renewal::None,
        _ => Renewal::Full,
    };
    persist(d, &produced, renewal).await?;
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

/// [`retouch_within`] for the thread of `d`.
fn retouch(d: &Drive) -> Duration {
    retouch_within(d.threads.retention())
}

/// What a batch of messages renews of their thread.
#[derive(Debug, Clone, Copy)]
enum Renewal {
    /// Its keys' expiry and its listing.
    Full,
    /// The thread was created moments ago (its metadata, owner key and listing written with
    /// their expiry): the messages key's expiry.
    Created,
    /// Nothing: the turn's first batch renewed it moments ago.
    None,
}

/// Appends messages to the thread and records one event per message, in one batch,
/// renewing the thread as `renewal` says.
async fn persist(
    d: &Drive,
    messages: &[ThreadMessage],
    renewal: Renewal,
) -> Result<(), AgentError> {
    if messages.is_empty() {
        return Ok(());
    }
    d.lease.confirm().await?;
    let mut writes = message_writes(&d.id, messages, &d.user)?;
    writes.extend(match renewal {
        Renewal::Full => d.threads.touch(&d.id, &d.creator),
        Renewal::Created => d.threads.touch_created(&d.id),
        Renewal::None => Vec::new(),
    });
    Ok(d.threads.store().apply(writes).await?)
}
