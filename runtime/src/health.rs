//! Readiness, and the store health actor that keeps it current.
//!
//! `StoreHealth` is a permanent child of the root supervisor. It pings the store every
//! `interval`; readiness is false while the store does not answer, and every transition is
//! logged. It takes no messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::store::Store;

/// Whether the daemon can take work: started, and its store reachable. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Debug, Default)]
struct ReadinessInner {
    started: AtomicBool,
    store: AtomicBool,
    /// Whether readiness waits for a stream consumer.
    needs_consumer: AtomicBool,
    consumer: AtomicBool,
    /// The daemon is shutting down: consumers take no new work.
    draining: AtomicBool,
}

impl Readiness {
    /// Marks the actor tree as started (or stopping, with `false`).
    pub fn set_started(&self, started: bool) {
        self.inner.started.store(started, Ordering::Release);
    }

    /// Marks the daemon as shutting down (for good): not ready, and stream consumers stop
    /// fetching new work while in-flight work finishes or is released.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.set_started(false);
    }

    /// Whether the daemon is shutting down.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether the store answered the last health check.
    pub fn store_reachable(&self) -> bool {
        self.inner.store.load(Ordering::Acquire)
    }

    /// Makes readiness wait for a stream consumer to report itself reading.
    pub fn expect_consumer(&self) {
        self.inner.needs_consumer.store(true, Ordering::Release);
    }

    /// The stream consumer reads (`true`) or cannot (`false`).
    pub fn set_consumer(&self, reading: bool) {
        self.inner.consumer.store(reading, Ordering::Release);
    }

    /// Ready: started, the store reachable and, if expected, the consumer reading.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why the daemon is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        let i = &self.inner;
        if !i.started.load(Ordering::Acquire) {
            Some("the actor tree is not running")
        } else if !self.store_reachable() {
            Some("the store is unreachable")
        } else if i.needs_consumer.load(Ordering::Acquire) && !i.consumer.load(Ordering::Acquire) {
            Some("the ingress consumer is not reading")
        } else {
            None
        }
    }

    fn set_store(&self, reachable: bool) {
        self.inner.store.store(reachable, Ordering::Release);
    }
}

/// Pings the store and updates [`Readiness`].
pub struct StoreHealth {
    store: Arc<dyn Store>,
    readiness: Readiness,
    interval: Duration,
    checking: bool,
    /// The last outcome, to log transitions only (`None` before the first check).
    last: Option<bool>,
}

impl StoreHealth {
    /// A health checker for `store` that checks every `interval`.
    pub fn new(store: Arc<dyn Store>, readiness: Readiness, interval: Duration) -> Self {
        StoreHealth {
            store,
            readiness,
            interval,
            checking: false,
            last: None,
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        self.checking = true;
        let store = self.store.clone();
        ctx.spawn(async move { store.ping().await }.into_actor(self).map(
            |result, act, _| {
                act.checking = false;
                let reachable = result.is_ok();
                act.readiness.set_store(reachable);
                if act.last.replace(reachable) != Some(reachable) {
                    match result {
                        Ok(()) => tracing::info!(backend = act.store.backend(), "store reachable: ready"),
                        Err(err) => tracing::error!(backend = act.store.backend(), error = %err, "store unreachable: not ready"),
                    }
                }
            },
        ));
    }
}

impl Actor for StoreHealth {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.check(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.check(ctx));
    }
}
