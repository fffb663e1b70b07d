//! [`ActorRef`]: a stable, typed address of a supervised child that survives its restarts.

use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::error::ActorError;
use crate::guard::{request_error, Life};

/// The live incarnation of a child: its address and its life.
type Incarnation<A> = Option<(Addr<A>, Life)>;

/// How long a sender waits for a child that is starting or restarting.
const START_WAIT: Duration = Duration::from_secs(5);

/// The address of a supervised actor. Each restart installs the new incarnation's address,
/// so holders keep one `ActorRef` for the child's whole life under its supervisor.
pub struct ActorRef<A: Actor> {
    name: Arc<str>,
    current: Arc<RwLock<Incarnation<A>>>,
    installed: Arc<Notify>,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            name: self.name.clone(),
            current: self.current.clone(),
            installed: self.installed.clone(),
        }
    }
}

impl<A: Actor> std::fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRef")
            .field("name", &self.name)
            .finish()
    }
}

impl<A: Actor<Context = Context<A>>> ActorRef<A> {
    pub(crate) fn empty(name: Arc<str>) -> Self {
        ActorRef {
            name,
            current: Arc::new(RwLock::new(None)),
            installed: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn install(&self, addr: Addr<A>, life: Life) {
        *self.current.write() = Some((addr, life));
        self.installed.notify_waiters();
    }

    /// The live incarnation, waiting up to [`START_WAIT`] while the child is (re)starting.
    async fn live(&self) -> Option<(Addr<A>, Life)> {
        // Fast path: the usual case is a running incarnation.
        if let Some((addr, life)) = self.current.read().as_ref() {
            if addr.connected() && life.is_alive() {
                return Some((addr.clone(), life.clone()));
            }
        }
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let notified = self.installed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let current = self.current.read().clone();
            if let Some((addr, life)) = &current {
                if addr.connected() && life.is_alive() {
                    return current;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return current;
            }
        }
    }

    /// The child's full name (its supervisors' names and its own, joined by `/`) once
    /// started; the name it was declared with before.
    pub fn name(&self) -> String {
        match self.current.read().as_ref() {
            Some((_, life)) => life.name().to_owned(),
            None => self.name.to_string(),
        }
    }

    /// The current incarnation's address, if one has been started.
    pub fn addr(&self) -> Option<Addr<A>> {
        self.current.read().as_ref().map(|(addr, _)| addr.clone())
    }

    /// The current incarnation's [`Life`], if one has been started.
    pub fn life(&self) -> Option<Life> {
        self.current.read().as_ref().map(|(_, life)| life.clone())
    }

    /// Sends `msg` to the current incarnation and waits for the reply. Waits for mailbox
    /// space when the mailbox is full (backpressure), and for the child while it is starting
    /// or restarting (up to 5 s).
    ///
    /// If the actor panics before answering, the error is [`ActorError::Panicked`]; if no
    /// incarnation came up in time, [`ActorError::Stopped`] (retryable).
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let Some((addr, life)) = self.live().await else {
            return Err(ActorError::Stopped { actor: self.name() });
        };
        match addr.send(msg).await {
            Ok(reply) => Ok(reply),
            Err(err) => Err(request_error(&life, err).await),
        }
    }

    /// Delivers `msg` without waiting for a reply; fails at once when the mailbox is full.
    pub fn try_send<M>(&self, msg: M) -> Result<(), ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        // Use the installed sender itself: a clone would get a fresh slot past the capacity
        // and never see the mailbox as full.
        let current = self.current.read();
        let Some((addr, life)) = current.as_ref() else {
            drop(current);
            return Err(ActorError::Stopped { actor: self.name() });
        };
        let actor = || life.name().to_owned();
        addr.try_send(msg).map_err(|err| match err {
            SendError::Full(_) => ActorError::MailboxFull { actor: actor() },
            SendError::Closed(_) => ActorError::Stopped { actor: actor() },
        })
    }
}
