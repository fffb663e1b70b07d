//! Panic isolation for actix actors.
//!
//! actix runs an actor as one future (its `ContextFut`) and does not catch panics: a panicking
//! handler unwinds through that future and the actor silently disappears. [`Spawn`] runs the
//! context future inside a guard that catches the unwind, so a panic ends only that actor,
//! is logged, and is recorded as the actor's [`Exit`]. Whoever holds the actor's
//! [`Life`] (its supervisor, a registry, a sender waiting for a reply) learns why it ended and
//! can start a fresh incarnation. Stopping is also driven through the [`Life`], so any actor
//! can be stopped from outside without a dedicated message.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::dev::channel::channel;
use actix::dev::ContextFut;
use actix::prelude::*;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::ActorError;

/// Why an actor incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It stopped normally (asked to, or nothing was left for it to do).
    Stopped,
    /// A handler (or its `started`/`stopping` hook) panicked with this message.
    Panicked(String),
    /// It declared a failure through [`Life::fail`] before stopping.
    Failed(String),
}

impl Exit {
    /// Whether the exit was a failure (a transient child is restarted only after one).
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Exit::Stopped)
    }

    /// The error a sender sees when this exit left its message unanswered.
    pub fn to_error(&self, actor: &str) -> ActorError {
        match self {
            Exit::Stopped => ActorError::Stopped {
                actor: actor.to_owned(),
            },
            Exit::Panicked(message) => ActorError::Panicked {
                actor: actor.to_owned(),
                message: message.clone(),
            },
            Exit::Failed(reason) => ActorError::Failed {
                actor: actor.to_owned(),
                reason: reason.clone(),
            },
        }
    }
}

/// A handle on one incarnation of a guarded actor: watch it end, ask it to stop.
///
/// Cheap to clone. The actor itself receives its `Life` when it is built, so it can
/// [`fail`](Life::fail) with a reason.
#[derive(Clone)]
pub struct Life {
    inner: Arc<LifeInner>,
}

struct LifeInner {
    name: Arc<str>,
    exit: watch::Sender<Option<Exit>>,
    stop: AtomicBool,
    kill: AtomicBool,
    failure: Mutex<Option<String>>,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Life {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Life")
            .field("name", &self.inner.name)
            .field("exit", &self.exit())
            .finish()
    }
}

impl Life {
    fn new(name: Arc<str>) -> Self {
        let (exit, _) = watch::channel(None);
        Life {
            inner: Arc::new(LifeInner {
                name,
                exit,
                stop: AtomicBool::new(false),
                kill: AtomicBool::new(false),
                failure: Mutex::new(None),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// The actor's name, as given to [`Spawn::named`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Asks the actor to stop: its context is stopped (its `stopping` hook may refuse).
    /// Messages still in its mailbox are not handled.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// Ends the actor at once, whatever its `stopping` hook says.
    pub fn kill(&self) {
        self.inner.kill.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// Declares that the actor failed and asks it to stop; its exit will be
    /// [`Exit::Failed`]. Called from inside the actor, follow it with `ctx.stop()` so that
    /// no further message is handled.
    pub fn fail(&self, reason: impl Into<String>) {
        *self.inner.failure.lock() = Some(reason.into());
        self.stop();
    }

    /// How the actor ended, or `None` while it runs.
    pub fn exit(&self) -> Option<Exit> {
        self.inner.exit.borrow().clone()
    }

    /// Whether the actor is still running.
    pub fn is_alive(&self) -> bool {
        self.inner.exit.borrow().is_none()
    }

    /// Waits until the actor has ended and says how.
    pub async fn exited(&self) -> Exit {
        let mut rx = self.inner.exit.subscribe();
        // The sender lives in `self`, so it cannot be dropped while we wait.
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone(),
            Err(_) => None,
        };
        exit.unwrap_or(Exit::Stopped)
    }

    /// Stops the actor and waits up to `grace` for it to end, then kills it.
    pub async fn shutdown(&self, grace: Duration) -> Exit {
        self.stop();
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::warn!(actor = %self.name(), ?grace, "actor did not stop in time; killing it");
                self.kill();
                self.exited().await
            }
        }
    }

    /// The error for a request whose reply was dropped: the recorded exit if the actor has
    /// ended (waiting briefly, since the reply is dropped while the panic unwinds, just
    /// before the guard records it), else [`ActorError::Stopped`].
    pub(crate) async fn reply_dropped(&self) -> ActorError {
        const RECORD_WAIT: Duration = Duration::from_millis(200);
        match tokio::time::timeout(RECORD_WAIT, self.exited()).await {
            Ok(exit) => exit.to_error(self.name()),
            Err(_) => ActorError::Stopped {
                actor: self.name().to_owned(),
            },
        }
    }

    fn record(&self, exit: Exit) {
        self.inner.exit.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(exit);
            true
        });
    }
}

/// Maps an actix mailbox error for a request to this actor into an [`ActorError`].
pub(crate) async fn request_error(life: &Life, err: MailboxError) -> ActorError {
    match err {
        MailboxError::Closed => life.reply_dropped().await,
        MailboxError::Timeout => ActorError::Timeout {
            actor: life.name().to_owned(),
            after: Duration::ZERO,
        },
    }
}

/// Called once with the exit of an incarnation, on the actor's own thread.
pub type OnExit = Box<dyn FnOnce(&Exit) + Send>;

/// How to start a guarded actor.
pub struct Spawn {
    name: Arc<str>,
    mailbox: usize,
    arbiter: Option<ArbiterHandle>,
    on_exit: Option<OnExit>,
}

impl Spawn {
    /// A guarded actor called `name` with a mailbox of 256 on the current arbiter.
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        Spawn {
            name: name.into(),
            mailbox: 256,
            arbiter: None,
            on_exit: None,
        }
    }

    /// Mailbox capacity: senders wait (backpressure) when it is full.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Runs the actor on this arbiter (thread) instead of the current one.
    pub fn on(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Calls `f` with the exit once the actor has ended.
    pub fn on_exit(mut self, f: impl FnOnce(&Exit) + Send + 'static) -> Self {
        self.on_exit = Some(Box::new(f));
        self
    }

    /// Builds the actor with `make` on its arbiter and runs it under a panic guard.
    ///
    /// Must be called from within an actix system when no arbiter was given. A panic in
    /// `make` is recorded as the exit like any other.
    pub fn start<A, F>(self, make: F) -> (Addr<A>, Life)
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce(&Life) -> A + Send + 'static,
    {
        let life = Life::new(self.name.clone());
        let (tx, rx) = channel::<A>(self.mailbox);
        let arbiter = self.arbiter.unwrap_or_else(Arbiter::current);
        let guard_life = life.clone();
        let on_exit = self.on_exit;
        let spawned = arbiter.spawn_fn(move || {
            let built = catch_unwind(AssertUnwindSafe(|| make(&guard_life)));
            let mut guard = Guarded::<A> {
                fut: None,
                life: guard_life,
                on_exit,
                stop_sent: false,
            };
            match built {
                Ok(actor) => {
                    let ctx = Context::with_receiver(rx);
                    guard.fut = Some(ctx.into_future(actor));
                    actix::spawn(guard);
                }
                Err(payload) => guard.finish(Exit::Panicked(panic_message(payload.as_ref()))),
            }
        });
        if !spawned {
            life.record(Exit::Failed("its arbiter has stopped".to_owned()));
        }
        (Addr::new(tx), life)
    }
}

/// Runs an actor's context future, catching panics.
struct Guarded<A: Actor<Context = Context<A>>> {
    fut: Option<ContextFut<A, Context<A>>>,
    life: Life,
    on_exit: Option<OnExit>,
    stop_sent: bool,
}

impl<A: Actor<Context = Context<A>>> Guarded<A> {
    fn finish(&mut self, exit: Exit) {
        match &exit {
            Exit::Stopped => tracing::debug!(actor = %self.life.name(), "actor stopped"),
            Exit::Panicked(message) => {
                tracing::error!(actor = %self.life.name(), panic = %message, "actor panicked");
            }
            Exit::Failed(reason) => {
                tracing::warn!(actor = %self.life.name(), %reason, "actor failed")
            }
        }
        // Drop the context first: pending requests are answered with "closed" before the
        // exit is observable, and the actor's `stopped` hook has run.
        if let Some(fut) = self.fut.take() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(fut))) {
                tracing::error!(
                    actor = %self.life.name(),
                    panic = %panic_message(payload.as_ref()),
                    "actor panicked while stopping"
                );
            }
        }
        self.life.record(exit.clone());
        if let Some(on_exit) = self.on_exit.take() {
            on_exit(&exit);
        }
    }
}

impl<A: Actor<Context = Context<A>>> Future for Guarded<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(());
        };
        this.life.inner.waker.register(cx.waker());
        if this.life.inner.kill.load(Ordering::Acquire) {
            fut.ctx().terminate();
        } else if !this.stop_sent && this.life.inner.stop.load(Ordering::Acquire) {
            this.stop_sent = true;
            fut.ctx().stop();
        }
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                let exit = match this.life.inner.failure.lock().take() {
                    Some(reason) => Exit::Failed(reason),
                    None => Exit::Stopped,
                };
                this.finish(exit);
                Poll::Ready(())
            }
            Err(payload) => {
                this.finish(Exit::Panicked(panic_message(payload.as_ref())));
                Poll::Ready(())
            }
        }
    }
}

impl<A: Actor<Context = Context<A>>> Drop for Guarded<A> {
    fn drop(&mut self) {
        // Dropped without finishing: the arbiter or the system went away under it.
        if self.fut.is_some() || self.life.is_alive() {
            self.finish(Exit::Stopped);
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs a future (a tool or model call a handler awaits outside its actor) and turns a
/// panic inside it into [`ActorError::Panicked`] for `actor`.
pub async fn isolate<T>(actor: &str, fut: impl Future<Output = T>) -> Result<T, ActorError> {
    use futures::FutureExt;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| {
            let message = panic_message(payload.as_ref());
            tracing::error!(actor, panic = %message, "panic in isolated work");
            ActorError::Panicked {
                actor: actor.to_owned(),
                message,
            }
        })
}
