//! [`ThreadActor`]: one live thread. Each change (a turn, an approval, archive, delete) runs
//! under the thread's turn lease, after what the actor remembers is checked against the store.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{Instrument, Span};
use troupe_runtime::Traced;

use super::messages::{Approve, Archive, Delete, MessagePage, ReadMessages, Turn, TurnOutcome};
use super::state::Cached;
use super::turn::{context_of, drive, Drive};
use crate::agent::{AgentDirectory, Decided};
use crate::error::AgentError;
use crate::message::{ChatMessage, Role};
use crate::thread_lease::TurnLease;
use crate::thread_store::{now_ms, ThreadId, ThreadInfo, ThreadMessage, ThreadStore};

/// What a change of the thread works with.
#[derive(Clone)]
struct Env {
    id: ThreadId,
    threads: ThreadStore,
    agents: Arc<AgentDirectory>,
    window: usize,
}

/// A live thread. See the documentation of the [`thread`](super) module.
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
            let (cached, result) = match cached.refresh(&env.threads, &env.id, env.window).await {
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

impl Actor for ThreadActor {
    type Context = Context<Self>;
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
                // A thread with no message yet: its creation's time.
                let created_ms = (cached.total == 0)
                    .then(|| cached.info.as_ref().map(|i| i.created_ms))
                    .flatten();
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
                    next_seq: cached.total,
                    stream: msg.stream,
                    started: msg.started,
                    approval_key,
                    lease,
                    created_ms,
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
                    next_seq: cached.total,
                    stream: pending.stream,
                    started: None,
                    approval_key: approval_key.clone(),
                    lease,
                    created_ms: None,
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
