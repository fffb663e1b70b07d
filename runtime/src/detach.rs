//! Futures an actor awaits apart from its context.
//!
//! `ctx.spawn` keeps a future in the actor's context, and actix polls every such future each
//! time the actor is woken: an actor with thousands of store writes or work attempts in
//! flight does quadratic work. [`detach`] runs the future as a task of its own on the actor's
//! arbiter, polled only when it is woken, and hands its output back to the actor as a
//! [`Resume`] message. A panic in the future is re-raised in the actor, so its supervisor
//! sees it as it would have with `ctx.spawn`.
//!
//! An actor using it handles `Resume<Self>` by calling [`Resume::run`].

use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix::prelude::*;
use futures::FutureExt as _;
use tokio::task::AbortHandle;

use crate::guard::panic_message;

/// What a [`Resume`] runs.
type Rest<A> = Box<dyn FnOnce(&mut A, &mut <A as Actor>::Context) + Send>;

/// The rest of a detached future's work, to run in the actor.
pub struct Resume<A: Actor>(Rest<A>);

impl<A: Actor> Message for Resume<A> {
    type Result = ();
}

impl<A: Actor> Resume<A> {
    /// Runs it (the actor's `Handler<Resume<Self>>` calls this).
    pub fn run(self, act: &mut A, ctx: &mut A::Context) {
        (self.0)(act, ctx);
    }
}

/// Runs `fut` as its own task on the current arbiter, then `then(actor, output, ctx)` in the
/// actor (not at all if the actor has stopped). Aborting the returned handle drops the future
/// and skips `then`.
pub fn detach<A, F, T>(
    ctx: &mut Context<A>,
    fut: F,
    then: impl FnOnce(&mut A, T, &mut Context<A>) + Send + 'static,
) -> AbortHandle
where
    A: Actor<Context = Context<A>> + Handler<Resume<A>>,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let addr = ctx.address();
    let task = actix::spawn(async move {
        let resume: Resume<A> = match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(out) => Resume(Box::new(move |act, ctx| then(act, out, ctx))),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                Resume(Box::new(move |_, _| {
                    panic!("a detached future panicked: {message}")
                }))
            }
        };
        // Ignores the mailbox's bound, like `ctx.spawn` would; fails only if it has stopped.
        addr.do_send(resume);
    });
    task.abort_handle()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::guard::{Exit, Spawn};

    /// Counts what detached futures handed back.
    struct Counter {
        sum: u64,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Handler<Resume<Self>> for Counter {
        type Result = ();

        fn handle(&mut self, resume: Resume<Self>, ctx: &mut Context<Self>) {
            resume.run(self, ctx);
        }
    }

    #[derive(Message)]
    #[rtype(result = "u64")]
    struct Add(u64, bool);

    impl Handler<Add> for Counter {
        type Result = u64;

        fn handle(&mut self, Add(n, panics): Add, ctx: &mut Context<Self>) -> u64 {
            let work = async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(!panics, "the detached work failed");
                n
            };
            detach(ctx, work, |act: &mut Self, n, _| act.sum += n);
            self.sum
        }
    }

    #[derive(Message)]
    #[rtype(result = "u64")]
    struct Sum;

    impl Handler<Sum> for Counter {
        type Result = u64;

        fn handle(&mut self, _: Sum, _: &mut Context<Self>) -> u64 {
            self.sum
        }
    }

    #[actix::test]
    async fn outputs_come_back_to_the_actor_and_panics_end_it() {
        let (addr, life) = Spawn::named("counter").start(|_| Counter { sum: 0 });
        for n in 1..=100 {
            addr.send(Add(n, false)).await.expect("add");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while addr.send(Sum).await.expect("sum") != 5050 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "outputs not resumed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A panic in detached work is the actor's panic, as with `ctx.spawn`.
        addr.send(Add(1, true)).await.expect("add");
        let exit = tokio::time::timeout(Duration::from_secs(5), life.exited())
            .await
            .expect("the actor ended");
        assert!(
            matches!(&exit, Exit::Panicked(message) if message.contains("the detached work failed")),
            "{exit:?}"
        );
    }
}
