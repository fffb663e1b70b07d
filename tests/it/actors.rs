//! The actor tree: panic isolation, restarts with fresh state, escalation, ordered shutdown,
//! entity activation and passivation.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use troupe_runtime::retry::Transient as _;

use actix::prelude::*;
use parking_lot::Mutex;
use troupe_runtime::{
    ActorError, ActorRef, ChildOptions, Exit, Intensity, Life, Registry, RegistryOptions, Restart,
    SupervisorSpec,
};
use troupe_testkit::{eventually, WAIT};

/// A counter whose state is lost on restart; `Boom` panics inside its handler.
struct Counter {
    count: u64,
    stopped_log: Option<Arc<Mutex<Vec<String>>>>,
    name: String,
}

impl Actor for Counter {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(log) = &self.stopped_log {
            log.lock().push(self.name.clone());
        }
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Incr;

#[derive(Message)]
#[rtype(result = "u64")]
struct Get;

#[derive(Message)]
#[rtype(result = "u64")]
struct Boom;

impl Handler<Incr> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 {
        self.count += 1;
        self.count
    }
}

impl Handler<Get> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.count
    }
}

impl Handler<Boom> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) -> u64 {
        panic!("boom at count {}", self.count);
    }
}

fn counter(name: &str) -> Counter {
    Counter {
        count: 0,
        stopped_log: None,
        name: name.to_owned(),
    }
}

/// Sends `Get` until the (restarted) child answers, bounded by [`WAIT`].
async fn get_when_up(child: &ActorRef<Counter>) -> u64 {
    eventually("child never came back", WAIT, || async {
        match child.send(Get).await {
            Ok(n) => Some(n),
            Err(err) => {
                assert!(err.is_retryable(), "unexpected error {err}");
                None
            }
        }
    })
    .await
}

#[actix::test]
async fn panic_becomes_typed_error_and_child_restarts_fresh_while_sibling_answers() {
    let builds = Arc::new(AtomicU32::new(0));
    let mut spec = SupervisorSpec::new("root", Intensity::default());
    let counted = builds.clone();
    let a = spec.child("a", ChildOptions::default(), move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        counter("a")
    });
    let b = spec.child("b", ChildOptions::default(), |_| counter("b"));
    let (_root, root_life) = spec.start();
    assert_eq!(get_when_up(&b).await, 0);

    // The sibling is asked continuously while `a` panics and restarts.
    let done = Arc::new(AtomicBool::new(false));
    let sibling = {
        let (b, done) = (b.clone(), done.clone());
        actix::spawn(async move {
            let mut answers = 0u64;
            while !done.load(Ordering::SeqCst) {
                let n = b.send(Incr).await.expect("sibling must keep answering");
                answers += 1;
                assert_eq!(n, answers, "sibling lost state");
                tokio::task::yield_now().await;
            }
            answers
        })
    };

    for expected in 1..=3 {
        assert_eq!(get_when_up(&a).await, expected - 1);
        assert_eq!(a.send(Incr).await, Ok(expected));
    }
    let err = a
        .send(Boom)
        .await
        .expect_err("a panicking handler must not reply");
    match &err {
        ActorError::Panicked { actor, message } => {
            assert_eq!(actor, "root/a");
            assert_eq!(message, "boom at count 3");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(err.is_retryable());

    // Restarted with fresh state, built anew by its factory.
    assert_eq!(get_when_up(&a).await, 0);
    assert_eq!(builds.load(Ordering::SeqCst), 2);

    done.store(true, Ordering::SeqCst);
    let answers = sibling.await.expect("sibling task");
    assert!(answers > 0);
    assert_eq!(b.send(Get).await, Ok(answers));
    assert!(root_life.is_alive());
}

/// Panics as soon as it starts: a crash loop.
struct CrashOnStart;

impl Actor for CrashOnStart {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        panic!("cannot start");
    }
}

#[actix::test]
async fn crash_loop_stops_at_restart_limit_and_escalates() {
    let builds = Arc::new(AtomicU32::new(0));
    let mut spec = SupervisorSpec::new(
        "loop",
        Intensity {
            max_restarts: 3,
            within: Duration::from_secs(60),
        },
    );
    let counted = builds.clone();
    spec.child("crasher", ChildOptions::default(), move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        CrashOnStart
    });
    let healthy = spec.child("healthy", ChildOptions::default(), |_| counter("healthy"));
    let (_root, life) = spec.start();

    let exit = tokio::time::timeout(WAIT, life.exited())
        .await
        .expect("supervisor must give up");
    match exit {
        Exit::Failed(reason) => {
            assert!(
                reason.contains("loop/crasher exceeded 3 restarts"),
                "{reason}"
            )
        }
        other => panic!("expected a failure exit, got {other:?}"),
    }
    // The first start plus exactly three restarts.
    assert_eq!(builds.load(Ordering::SeqCst), 4);
    // The subtree was stopped with it.
    let sibling = healthy.life().expect("healthy was started");
    let sibling_exit = tokio::time::timeout(WAIT, sibling.exited()).await;
    assert_eq!(sibling_exit, Ok(Exit::Stopped));
}

#[actix::test]
async fn escalation_restarts_the_subtree_then_reaches_the_root() {
    let builds = Arc::new(AtomicU32::new(0));
    let mut sub = SupervisorSpec::new(
        "sub",
        Intensity {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
    );
    let counted = builds.clone();
    sub.child("crasher", ChildOptions::default(), move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        CrashOnStart
    });
    let mut root = SupervisorSpec::new(
        "root",
        Intensity {
            max_restarts: 1,
            within: Duration::from_secs(60),
        },
    );
    let sub_ref = root.supervisor(sub);
    let (_root, life) = root.start();

    let exit = tokio::time::timeout(WAIT, life.exited())
        .await
        .expect("root must give up");
    match exit {
        Exit::Failed(reason) => {
            assert!(reason.contains("root/sub exceeded 1 restarts"), "{reason}")
        }
        other => panic!("expected a failure exit, got {other:?}"),
    }
    // The sub-supervisor ran twice (start + one restart by the root); each time its child
    // was built once and restarted twice before the sub-supervisor escalated.
    assert_eq!(builds.load(Ordering::SeqCst), 6);
    assert_eq!(sub_ref.name(), "root/sub");
}

#[actix::test]
async fn shutdown_stops_children_in_reverse_start_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut spec = SupervisorSpec::new("root", Intensity::default());
    let mut refs = Vec::new();
    for name in ["first", "second", "third"] {
        let log = log.clone();
        refs.push(spec.child(name, ChildOptions::default(), move |_| Counter {
            count: 0,
            stopped_log: Some(log.clone()),
            name: name.to_owned(),
        }));
    }
    let (_root, life) = spec.start();
    for child in &refs {
        assert_eq!(get_when_up(child).await, 0);
    }
    let exit = tokio::time::timeout(WAIT, life.shutdown(Duration::from_secs(2))).await;
    assert_eq!(exit, Ok(Exit::Stopped));
    assert_eq!(*log.lock(), vec!["third", "second", "first"]);
}

#[actix::test]
async fn transient_child_is_not_restarted_after_a_normal_stop() {
    let builds = Arc::new(AtomicU32::new(0));
    let mut spec = SupervisorSpec::new("root", Intensity::default());
    let counted = builds.clone();
    let options = ChildOptions {
        restart: Restart::Transient,
        ..ChildOptions::default()
    };
    let child = spec.child("t", options, move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        counter("t")
    });
    let (_root, _life) = spec.start();
    assert_eq!(get_when_up(&child).await, 0);
    let first = child.life().expect("started");
    first.stop();
    assert_eq!(
        tokio::time::timeout(WAIT, first.exited()).await,
        Ok(Exit::Stopped)
    );
    // Give the supervisor a chance to (wrongly) restart it, observed through its address.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert!(matches!(
        child.send(Get).await,
        Err(ActorError::Stopped { .. })
    ));
}

/// An entity that answers slowly when asked to, and panics on `Boom`.
struct Entity {
    id: String,
    count: u64,
}

impl Actor for Entity {
    type Context = Context<Self>;
}

impl Handler<Incr> for Entity {
    type Result = u64;
    fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 {
        self.count += 1;
        self.count
    }
}

impl Handler<Boom> for Entity {
    type Result = u64;
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) -> u64 {
        panic!("entity {} exploded", self.id);
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Slow(Duration);

impl Handler<Slow> for Entity {
    type Result = ResponseActFuture<Self, u64>;
    fn handle(&mut self, msg: Slow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            tokio::time::sleep(msg.0)
                .into_actor(self)
                .map(|(), act, _| act.count),
        )
    }
}

// The registry delivers each message with its sender's span.
troupe_runtime::forward_traced!(Entity => Incr, Boom, Slow);

fn entities(passivate_after: Duration) -> Registry<String, Entity> {
    let options = RegistryOptions {
        passivate_after,
        ..RegistryOptions::default()
    };
    Registry::new("entities", options, |id: &String, _: &Life| Entity {
        id: id.clone(),
        count: 0,
    })
}

#[actix::test]
async fn entity_panic_deactivates_it_and_next_message_activates_a_fresh_one() {
    let reg = entities(Duration::from_secs(300));
    let (x, y) = ("x".to_owned(), "y".to_owned());
    assert_eq!(reg.send(&x, Incr).await, Ok(1));
    assert_eq!(reg.send(&y, Incr).await, Ok(1));
    let err = reg.send(&x, Boom).await.expect_err("panic");
    assert_eq!(
        err,
        ActorError::Panicked {
            actor: "entities:x".into(),
            message: "entity x exploded".into()
        }
    );
    // The other entity is untouched; x comes back fresh.
    assert_eq!(reg.send(&y, Incr).await, Ok(2));
    assert_eq!(reg.send(&x, Incr).await, Ok(1));
    assert_eq!(reg.stats().activations, 3);
}

#[actix::test]
async fn idle_entities_are_passivated_but_never_with_a_request_in_flight() {
    let reg = entities(Duration::ZERO);
    let (busy, idle) = ("busy".to_owned(), "idle".to_owned());
    assert_eq!(reg.send(&idle, Incr).await, Ok(1));
    let slow = {
        let (reg, busy) = (reg.clone(), busy.clone());
        actix::spawn(async move { reg.send(&busy, Slow(Duration::from_millis(300))).await })
    };
    // Wait until the busy entity is live with its request in flight.
    eventually("the busy entity is live", WAIT, || async {
        reg.is_active(&busy)
    })
    .await;
    let idle_life = reg.life(&idle).expect("idle is live");
    assert_eq!(reg.passivate_idle(), 1);
    assert!(reg.is_active(&busy));
    assert!(!reg.is_active(&idle));
    assert_eq!(
        tokio::time::timeout(WAIT, idle_life.exited()).await,
        Ok(Exit::Stopped)
    );
    // The in-flight request completes normally.
    assert_eq!(slow.await.expect("task"), Ok(0));
    assert_eq!(reg.passivate_idle(), 1);
    assert_eq!(reg.stats().active, 0);
    assert_eq!(reg.stats().passivations, 2);
}

#[actix::test]
async fn a_full_mailbox_refuses_try_send_and_send_waits_for_space() {
    let mut spec = SupervisorSpec::new("root", Intensity::default());
    let options = ChildOptions {
        mailbox: 1,
        ..ChildOptions::default()
    };
    let child = spec.child("slow", options, |_| Entity {
        id: "slow".into(),
        count: 0,
    });
    let (_root, _life) = spec.start();
    eventually("the child answers", WAIT, || async {
        child.send(Incr).await.is_ok()
    })
    .await;
    // Without yielding, the actor (on this thread) cannot drain its mailbox: it fills up.
    let mut accepted = 0u64;
    let mut refused = None;
    for _ in 0..1000 {
        match child.try_send(Incr) {
            Ok(()) => accepted += 1,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(ActorError::MailboxFull { ref actor }) if actor == "root/slow"),
        "{refused:?}"
    );
    assert!(accepted >= 1);
    // `send` waits for space instead of failing, and every accepted message was handled.
    assert_eq!(child.send(Incr).await, Ok(accepted + 2));
}
