//! The supervisor actor: starts its children in order, restarts them by policy, gives up and
//! escalates when they fail too often, and stops them in reverse order.
//!
//! A supervisor is itself a child (of its parent supervisor, or of the daemon for the root),
//! so a subtree restarts as a unit when its supervisor escalates. It takes no messages:
//! it is driven by its children's [`Life`]s and its own (stop it with [`Life::shutdown`]).
//!
//! Policy is data ([`Restart`], [`Intensity`]); the strategy is one-for-one: a failed child
//! is restarted alone, as a fresh actor built by its factory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor_ref::ActorRef;
use crate::guard::{Exit, Life, Spawn};

/// When a child that has ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always (a long-lived service).
    Permanent,
    /// Only after an abnormal exit (panic or declared failure).
    Transient,
    /// Never.
    Temporary,
}

/// Restart intensity: more than `max_restarts` restarts within `within` means the subtree is
/// failing for a reason a restart will not fix, so the supervisor stops and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            within: Duration::from_secs(10),
        }
    }
}

/// Starts a new incarnation under the given full name.
type Starter = Arc<dyn Fn(Arc<str>) -> Life + Send + Sync>;

struct ChildSpec {
    name: Arc<str>,
    restart: Restart,
    shutdown: Duration,
    start: Starter,
}

/// The definition of a supervisor: its policy and its children, in start order.
///
/// Cloning is cheap (children's factories are shared), which is how a parent restarts a
/// whole subtree from the same definition.
#[derive(Clone)]
pub struct SupervisorSpec {
    name: Arc<str>,
    intensity: Intensity,
    children: Vec<Arc<ChildSpec>>,
}

impl std::fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("name", &self.name)
            .field("intensity", &self.intensity)
            .field(
                "children",
                &self.children.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Options of one child.
#[derive(Debug, Clone)]
pub struct ChildOptions {
    /// When to restart it.
    pub restart: Restart,
    /// How long it may take to stop before it is killed.
    pub shutdown: Duration,
    /// Its mailbox capacity.
    pub mailbox: usize,
    /// The arbiter (thread) it runs on; the supervisor's own when `None`.
    pub arbiter: Option<ArbiterHandle>,
}

impl Default for ChildOptions {
    fn default() -> Self {
        ChildOptions {
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            mailbox: 256,
            arbiter: None,
        }
    }
}

impl SupervisorSpec {
    /// A supervisor called `name` with the given restart intensity and no children yet.
    pub fn new(name: impl Into<Arc<str>>, intensity: Intensity) -> Self {
        SupervisorSpec {
            name: name.into(),
            intensity,
            children: Vec::new(),
        }
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a child built by `make` (called again, for fresh state, on every restart).
    /// Returns the child's stable address.
    pub fn child<A, F>(&mut self, name: &str, options: ChildOptions, make: F) -> ActorRef<A>
    where
        A: Actor<Context = Context<A>>,
        F: Fn(&Life) -> A + Send + Sync + 'static,
    {
        let name: Arc<str> = name.into();
        let slot = ActorRef::empty(name.clone());
        let installed = slot.clone();
        let make = Arc::new(make);
        let (mailbox, arbiter) = (options.mailbox, options.arbiter.clone());
        let start: Starter = Arc::new(move |full_name| {
            let mut spawn = Spawn::named(full_name).mailbox(mailbox);
            if let Some(arbiter) = &arbiter {
                spawn = spawn.on(arbiter.clone());
            }
            let make = make.clone();
            let (addr, life) = spawn.start(move |life| make(life));
            installed.install(addr, life.clone());
            life
        });
        self.children.push(Arc::new(ChildSpec {
            name,
            restart: options.restart,
            shutdown: options.shutdown,
            start,
        }));
        slot
    }

    /// Adds a nested supervisor (a permanent child); its children stop before it does.
    pub fn supervisor(&mut self, spec: SupervisorSpec) -> ActorRef<Supervisor> {
        let grace = spec.shutdown_budget();
        let options = ChildOptions {
            shutdown: grace,
            ..ChildOptions::default()
        };
        let name = spec.name.to_string();
        self.child(&name, options, move |life| {
            Supervisor::new(spec.clone(), life.clone())
        })
    }

    /// Starts this supervisor as a root on the current arbiter.
    pub fn start(self) -> (ActorRef<Supervisor>, Life) {
        let slot = ActorRef::empty(self.name.clone());
        let spec = self;
        let (addr, life) =
            Spawn::named(spec.name.clone()).start(move |life| Supervisor::new(spec, life.clone()));
        slot.install(addr, life.clone());
        (slot, life)
    }

    /// Time to stop every child one after the other (their shutdown times added up).
    pub fn shutdown_budget(&self) -> Duration {
        self.children.iter().map(|c| c.shutdown).sum::<Duration>() + Duration::from_millis(100)
    }
}

struct ChildSlot {
    life: Option<Life>,
    generation: u64,
}

/// A running supervisor. See the module documentation.
pub struct Supervisor {
    spec: SupervisorSpec,
    life: Life,
    children: Vec<ChildSlot>,
    restarts: VecDeque<Instant>,
    stopping: bool,
    children_stopped: bool,
}

impl Supervisor {
    fn new(mut spec: SupervisorSpec, life: Life) -> Self {
        // Under a parent, the full name is the one the parent gave this incarnation.
        spec.name = life.name().into();
        let children = spec
            .children
            .iter()
            .map(|_| ChildSlot {
                life: None,
                generation: 0,
            })
            .collect();
        Supervisor {
            spec,
            life,
            children,
            restarts: VecDeque::new(),
            stopping: false,
            children_stopped: false,
        }
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let spec = self.spec.children[index].clone();
        let full_name: Arc<str> = format!("{}/{}", self.spec.name, spec.name).into();
        let life = (spec.start)(full_name);
        let slot = &mut self.children[index];
        slot.generation += 1;
        slot.life = Some(life.clone());
        let generation = slot.generation;
        tracing::info!(supervisor = %self.spec.name, child = %life.name(), generation, "child started");
        ctx.spawn(
            async move { life.exited().await }
                .into_actor(self)
                .map(move |exit, act, ctx| act.child_exited(index, generation, exit, ctx)),
        );
    }

    fn child_exited(&mut self, index: usize, generation: u64, exit: Exit, ctx: &mut Context<Self>) {
        let spec = self.spec.children[index].clone();
        if self.children[index].generation != generation || self.stopping {
            return;
        }
        let child = format!("{}/{}", self.spec.name, spec.name);
        self.children[index].life = None;
        let restart = match spec.restart {
            Restart::Permanent => true,
            Restart::Transient => exit.is_abnormal(),
            Restart::Temporary => false,
        };
        if exit.is_abnormal() {
            tracing::warn!(supervisor = %self.spec.name, %child, ?exit, restart, "child failed");
        } else {
            tracing::info!(supervisor = %self.spec.name, %child, restart, "child stopped");
        }
        if !restart {
            return;
        }
        crate::metrics::metrics()
            .actor_restarts
            .get_or_create(&crate::metrics::NameLabel {
                name: child.clone(),
            })
            .inc();
        let now = Instant::now();
        let window = self.spec.intensity.within;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u32 >= self.spec.intensity.max_restarts {
            let reason = format!(
                "child {} exceeded {} restarts within {:?}",
                child, self.spec.intensity.max_restarts, window
            );
            tracing::error!(supervisor = %self.spec.name, %reason, "escalating to parent");
            self.life.fail(reason);
            ctx.stop();
            return;
        }
        self.restarts.push_back(now);
        tracing::info!(supervisor = %self.spec.name, %child, "restarting child");
        self.start_child(index, ctx);
    }

    /// Stops the children in reverse start order, each within its shutdown time.
    fn stop_children(&mut self, ctx: &mut Context<Self>) {
        self.stopping = true;
        let order: Vec<(Life, Duration)> = self
            .children
            .iter()
            .zip(&self.spec.children)
            .rev()
            .filter_map(|(running, spec)| running.life.clone().map(|l| (l, spec.shutdown)))
            .collect();
        let name = self.spec.name.clone();
        ctx.spawn(
            async move {
                for (life, grace) in order {
                    let exit = life.shutdown(grace).await;
                    tracing::info!(supervisor = %name, child = %life.name(), ?exit, "child shut down");
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.children_stopped = true;
                ctx.stop();
            }),
        );
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(supervisor = %self.spec.name, children = self.children.len(), "supervisor started");
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        // Without a runtime (the system is being torn down) nothing can be awaited: the
        // children are stopped by `Drop`.
        if self.children_stopped || tokio::runtime::Handle::try_current().is_err() {
            return Running::Stop;
        }
        if !self.stopping {
            self.stop_children(ctx);
        }
        Running::Continue
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        tracing::info!(supervisor = %self.spec.name, "supervisor stopped");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Killed or panicked without an orderly stop: children must not outlive us.
        for running in self.children.iter().rev() {
            if let Some(life) = &running.life {
                life.stop();
            }
        }
    }
}
