//! The entity registry: one live actor per id (a thread, a workflow run…), activated on the
//! first message, passivated when idle, and re-activated from the store on the next message.
//!
//! Entities are supervised by the registry: a panicking entity is deactivated (its senders
//! get [`ActorError::Panicked`]) and the next message activates a fresh one, which reloads its
//! state from the store. Entities are spread over the registry's arbiters round-robin.
//!
//! Every message is delivered wrapped in [`Traced`] with the sender's current span, so an
//! entity's handler continues the sender's trace (see [`crate::trace`]); entity actors
//! implement `Handler<Traced<M>>` (or use [`forward_traced!`](crate::forward_traced)).
//!
//! Invariants: no map guard is held across an `.await`; an entity is only passivated while no
//! request to it is in flight, so a passivation never drops a message.

use std::fmt::Display;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::DashMap;

use crate::error::ActorError;
use crate::guard::{request_error, Life, Spawn};
use crate::trace::Traced;

type Factory<K, A> = Arc<dyn Fn(&K, &Life) -> A + Send + Sync>;

/// A map from entity ids to live, guarded actors. Cheap to clone.
pub struct Registry<K, A: Actor> {
    inner: Arc<Inner<K, A>>,
}

impl<K, A: Actor> Clone for Registry<K, A> {
    fn clone(&self) -> Self {
        Registry {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K, A: Actor> {
    name: Arc<str>,
    map: DashMap<K, Entry<A>>,
    make: Factory<K, A>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    mailbox: usize,
    passivate_after: Duration,
    epoch: Instant,
    generation: AtomicU64,
    activations: AtomicU64,
    passivations: AtomicU64,
}

struct Entry<A: Actor> {
    addr: Addr<A>,
    life: Life,
    generation: u64,
    inflight: Arc<AtomicUsize>,
    last_used: Arc<AtomicU64>,
}

/// Counters of a registry, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryStats {
    /// Entities live now.
    pub active: usize,
    /// Activations since the registry was created.
    pub activations: u64,
    /// Passivations since the registry was created.
    pub passivations: u64,
}

/// Settings of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Entities idle this long are passivated by the sweeper.
    pub passivate_after: Duration,
    /// Mailbox capacity of each entity.
    pub mailbox: usize,
    /// Arbiters to spread entities over; the current one when empty.
    pub arbiters: Vec<ArbiterHandle>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            passivate_after: Duration::from_secs(300),
            mailbox: 256,
            arbiters: Vec::new(),
        }
    }
}

impl<K, A> Registry<K, A>
where
    K: Eq + Hash + Clone + Display + Send + Sync + 'static,
    A: Actor<Context = Context<A>>,
{
    /// A registry called `name` whose entities are built by `make(id, life)`.
    pub fn new<F>(name: &str, options: RegistryOptions, make: F) -> Self
    where
        F: Fn(&K, &Life) -> A + Send + Sync + 'static,
    {
        Registry {
            inner: Arc::new(Inner {
                name: name.into(),
                map: DashMap::new(),
                make: Arc::new(make),
                arbiters: options.arbiters,
                next_arbiter: AtomicUsize::new(0),
                mailbox: options.mailbox,
                passivate_after: options.passivate_after,
                epoch: Instant::now(),
                generation: AtomicU64::new(0),
                activations: AtomicU64::new(0),
                passivations: AtomicU64::new(0),
            }),
        }
    }

    /// Sends `msg` to the entity `id`, activating it first if it is not live. The entity
    /// gets it as [`Traced`] with the caller's current span.
    pub async fn send<M>(&self, id: &K, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let msg = Traced::new(msg);
        let (addr, life, inflight, last_used) = {
            let entry = self
                .inner
                .map
                .entry(id.clone())
                .or_insert_with(|| self.activate(id));
            entry.inflight.fetch_add(1, Ordering::AcqRel);
            (
                entry.addr.clone(),
                entry.life.clone(),
                entry.inflight.clone(),
                entry.last_used.clone(),
            )
        };
        let reply = addr.send(msg).await;
        last_used.store(self.now_ms(), Ordering::Release);
        inflight.fetch_sub(1, Ordering::AcqRel);
        match reply {
            Ok(reply) => Ok(reply),
            Err(err) => Err(request_error(&life, err).await),
        }
    }

    /// Whether the entity `id` is live now.
    pub fn is_active(&self, id: &K) -> bool {
        self.inner.map.contains_key(id)
    }

    /// The live incarnation's [`Life`], if any.
    pub fn life(&self, id: &K) -> Option<Life> {
        self.inner.map.get(id).map(|e| e.life.clone())
    }

    /// Counters.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            active: self.inner.map.len(),
            activations: self.inner.activations.load(Ordering::Relaxed),
            passivations: self.inner.passivations.load(Ordering::Relaxed),
        }
    }

    /// Passivates every entity idle for at least `passivate_after` with no request in
    /// flight; returns how many.
    pub fn passivate_idle(&self) -> usize {
        self.passivate_idle_for(self.inner.passivate_after)
    }

    /// Passivates every entity idle for at least `idle` with no request in flight (an
    /// operator's "free memory now", whatever `passivate_after` says); returns how many.
    pub fn passivate_idle_for(&self, idle: Duration) -> usize {
        let ttl = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let mut passivated = 0;
        self.inner.map.retain(|id, entry| {
            let idle = now.saturating_sub(entry.last_used.load(Ordering::Acquire));
            if entry.inflight.load(Ordering::Acquire) == 0 && idle >= ttl {
                tracing::debug!(registry = %self.inner.name, entity = %id, idle_ms = idle, "passivating");
                entry.life.stop();
                passivated += 1;
                false
            } else {
                true
            }
        });
        self.inner
            .passivations
            .fetch_add(passivated as u64, Ordering::Relaxed);
        passivated
    }

    /// Runs [`passivate_idle`](Self::passivate_idle) periodically on the current arbiter
    /// until the registry is dropped.
    pub fn spawn_sweeper(&self) {
        let weak: Weak<Inner<K, A>> = Arc::downgrade(&self.inner);
        let period = (self.inner.passivate_after / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        actix::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                Registry { inner }.passivate_idle();
            }
        });
    }

    /// Stops every live entity, waiting up to `grace` for each batch to end.
    pub async fn shutdown(&self, grace: Duration) {
        let lives: Vec<Life> = self.inner.map.iter().map(|e| e.life.clone()).collect();
        self.inner.map.clear();
        let stops = lives.iter().map(|life| life.shutdown(grace));
        futures::future::join_all(stops).await;
    }

    fn activate(&self, id: &K) -> Entry<A> {
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        let mut spawn =
            Spawn::named(format!("{}:{}", self.inner.name, id)).mailbox(self.inner.mailbox);
        if !self.inner.arbiters.is_empty() {
            let n = self.inner.next_arbiter.fetch_add(1, Ordering::Relaxed);
            spawn = spawn.on(self.inner.arbiters[n % self.inner.arbiters.len()].clone());
        }
        let weak = Arc::downgrade(&self.inner);
        let key = id.clone();
        spawn = spawn.on_exit(move |exit| {
            if let Some(inner) = weak.upgrade() {
                if exit.is_abnormal() {
                    tracing::warn!(registry = %inner.name, entity = %key, ?exit, "entity deactivated after failure");
                }
                inner.map.remove_if(&key, |_, e| e.generation == generation);
            }
        });
        let make = self.inner.make.clone();
        let key = id.clone();
        let (addr, life) = spawn.start(move |life| make(&key, life));
        tracing::debug!(registry = %self.inner.name, entity = %id, generation, "activated");
        Entry {
            addr,
            life,
            generation,
            inflight: Arc::new(AtomicUsize::new(0)),
            last_used: Arc::new(AtomicU64::new(self.now_ms())),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}
