//! Rate limits (`[limits.X]`): token buckets and fixed windows, per key (global, per group or
//! per user), enforced in this process or shared by every daemon through the store.
//!
//! # Design: a shared handle, not an actor per limit
//!
//! [`Limiters`] is a cheap, cloneable handle (one `Arc`) that agents call directly. Every limit
//! decision runs in the caller's task:
//!
//! - **Local token buckets** are governor keyed limiters: GCRA state per key in a `DashMap`,
//!   one lock-free compare-and-swap per check (`local.rs`), tens of nanoseconds.
//! - **Local fixed windows** are a small `DashMap` of per-key counters (`window.rs`).
//! - **Distributed limits** (`backend = "redis"`) are one [`Store::rate_limit`] call per
//!   operation: on Redis one atomic Lua script on the server's clock (`distributed.rs`).
//!
//! A mailbox round trip costs microseconds — a hundred times a local check — and would
//! serialize every check of a limit through one thread, so the hot path is not an actor.
//! Nothing else needs serializing either: a reservation is GCRA arithmetic on the same one
//! time per key (the theoretical arrival time *is* the queue: each reservation pushes it
//! further, so reservations run in the order they were made), and waiting callers sleep in
//! their own tasks. The one thing that is periodic and serial — dropping idle keys so memory
//! follows the active set — runs in [`LimitJanitor`], an actix actor meant to be started under
//! the `infra` supervisor; it holds only a handle, so its restarts lose nothing, and a limit
//! keeps working while it is down (memory just grows until it is back).
//!
//! # Semantics
//!
//! - A request is all or nothing. An expected refusal is a value, [`Admission::Limited`], with
//!   the time after which the units could be admitted; asking for more than a limit ever holds
//!   is [`LimitError::ExceedsCapacity`] at once, never an endless wait. A count of 0 is always
//!   admitted and changes nothing.
//! - [`Limiters::reserve`] takes units now to run at a later turn (`ready_at`), unless more
//!   than `max_reserved` units would then be promised beyond the bucket
//!   ([`LimitError::TooManyReserved`]). [`Limiters::acquire`] reserves within `max_wait` and
//!   sleeps until the turn comes (if the caller gives up while waiting, the units are given
//!   back).
//! - [`Limiters::refund`] credits units back (a model call used fewer tokens than estimated);
//!   a bucket never holds more than its capacity, a window credit applies to the current
//!   window. [`Limiters::penalize`] holds a key for a while after a provider's 429: nothing is
//!   admitted before then, and the bucket refills from empty at its rate afterwards.
//! - Distributed limits survive daemon restarts and are shared by every daemon on one Redis.
//!   When the store does not answer, admissions follow the limit's `on_store_error`: fail
//!   open (admitted; a warning is logged once per outage) or fail closed
//!   ([`LimitError::StoreUnavailable`], retryable). The store reconnects by itself, and the
//!   limit enforces again from the first call that gets through. Refunds, penalties, resets
//!   and status always report a store failure as an error.
//!
//! # Shards
//!
//! With `shards = N`, a limit is N independent counters (`key#0` … `key#N-1`), each holding
//! `capacity / N` units and earning `rate / N` per period (remainders are dropped, so a
//! sharded limit never admits more than the configured one). Each call takes from one shard,
//! round-robin. This spreads a hot global key over N atomics (local) or N Redis keys (which a
//! Redis cluster places on different nodes). The price: a call can be refused by its shard
//! while another shard still has room, so under uneven load fewer units than the limit
//! allows may be admitted; the largest single request is `capacity / N`; a refund goes to the
//! shard the next call would use; `check` looks at that shard only. Leave `shards = 1`
//! unless one key is measurably contended.
//!
//! # Files
//!
//! This file holds the vocabulary ([`Admission`], [`Reservation`], [`Scope`], ...) and the
//! [`Limiters`] handle (building, lookup, pruning); `admit.rs` the operations on a key,
//! `calls.rs` the pair around a model call, `engine.rs` one configured limit and its shards,
//! `build.rs` how its settings become one.

mod admit;
mod build;
mod calls;
mod distributed;
mod engine;
mod error;
mod janitor;
mod local;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_config::LimitSettings;

use self::engine::{Engine, Limit};
pub use self::error::LimitError;
pub use self::janitor::{LimitJanitor, Prune, PRUNE_INTERVAL};
use self::local::LimitClock;
use crate::rate::RateOutcome;
use crate::store::Store;

/// governor's manually advanced clock, for tests of time-based behaviour
/// ([`Limiters::with_clock`]).
pub use governor::clock::FakeRelativeClock;

/// What a limit decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The units were taken; go ahead.
    Admitted,
    /// Not now: nothing was taken. The units could be admitted after `retry_after` (if nobody
    /// else takes them first).
    Limited {
        /// Time until the units would be available.
        retry_after: Duration,
    },
}

impl Admission {
    /// Whether the request was admitted.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Admission::Admitted)
    }

    fn from_outcome(o: &RateOutcome) -> Self {
        if o.allowed {
            Admission::Admitted
        } else {
            Admission::Limited {
                retry_after: o.wait,
            }
        }
    }
}

/// Units taken now to be used at a later turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// When the units may be used.
    pub ready_at: tokio::time::Instant,
    /// How long from the reservation until then (zero: at once).
    pub wait: Duration,
    /// The units reserved.
    pub count: u64,
}

impl Reservation {
    /// Sleeps until the reservation's turn.
    pub async fn ready(&self) {
        tokio::time::sleep_until(self.ready_at).await;
    }
}

/// A successful [`Limiters::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// How long the caller waited for its turn.
    pub waited: Duration,
}

/// A key's current state in a limit (summed over shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Units the limit holds (token bucket capacity, or the window's rate).
    pub capacity: u64,
    /// Units that could be taken right now.
    pub remaining: u64,
    /// Time until the key is back to full.
    pub reset_after: Duration,
}

/// Who a call is made for: picks each limit's key from its `key` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The tenant group.
    pub group: &'a str,
    /// The user, when the task names one.
    pub user: Option<&'a str>,
}

/// Size of a local limit's per-key state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStats {
    /// Keys held.
    pub keys: usize,
    /// Slots allocated for keys (memory follows this).
    pub slots: usize,
}

/// Keys held by local limits before and after a prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Keys before.
    pub before: usize,
    /// Keys after.
    pub after: usize,
}

/// Every configured limit; cheap to clone and share. See the module docs for the design.
#[derive(Clone)]
pub struct Limiters {
    limits: Arc<BTreeMap<String, Limit>>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("limits", &self.limits.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Limiters {
    /// Builds every limit in `settings`; distributed ones keep their counters in `store`.
    pub fn new(
        settings: &BTreeMap<String, LimitSettings>,
        store: Arc<dyn Store>,
    ) -> Result<Limiters, LimitError> {
        Self::build(settings, store, LimitClock::real())
    }

    /// Like [`Limiters::new`], with local limits reading `clock` (time stands still until the
    /// test advances it; its zero is the Unix epoch). Distributed limits use the store's clock.
    pub fn with_clock(
        settings: &BTreeMap<String, LimitSettings>,
        store: Arc<dyn Store>,
        clock: FakeRelativeClock,
    ) -> Result<Limiters, LimitError> {
        Self::build(settings, store, LimitClock::Fake(clock))
    }

    fn build(
        settings: &BTreeMap<String, LimitSettings>,
        store: Arc<dyn Store>,
        clock: LimitClock,
    ) -> Result<Limiters, LimitError> {
        let limits = settings
            .iter()
            .map(|(name, s)| {
                Limit::build(name, s, &store, &clock).map(|limit| (name.clone(), limit))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Limiters {
            limits: Arc::new(limits),
        })
    }

    /// The configured limits' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.limits.keys().map(String::as_str)
    }

    /// A limit's settings.
    pub fn settings(&self, name: &str) -> Option<&LimitSettings> {
        self.limits.get(name).map(|l| &l.settings)
    }

    fn get(&self, name: &str) -> Result<&Limit, LimitError> {
        self.limits
            .get(name)
            .ok_or_else(|| LimitError::UnknownLimit {
                name: name.to_owned(),
            })
    }

    /// The key a call for `scope` counts against in limit `name`: `"global"`, the group, or
    /// `"{group}/{user}"` (`"{group}/-"` without a user).
    pub fn key_for(&self, name: &str, scope: Scope<'_>) -> Result<String, LimitError> {
        Ok(self.get(name)?.key_for(scope))
    }

    /// Drops idle keys from every local limit and gives their memory back. Distributed limits
    /// need none of this: their keys expire in the store.
    pub fn prune(&self) -> PruneReport {
        let mut report = PruneReport::default();
        for limit in self.limits.values() {
            let Some((before, _)) = limit.size() else {
                continue;
            };
            match &limit.engine {
                Engine::Bucket(b) => b.prune(),
                Engine::Window(w) => w.prune(),
                Engine::Distributed(_) => {}
            }
            report.before += before;
            report.after += limit.size().map_or(0, |(keys, _)| keys);
        }
        report
    }

    /// Size of a local limit's per-key state (`None` for a distributed limit).
    pub fn stats(&self, name: &str) -> Result<Option<KeyStats>, LimitError> {
        Ok(self
            .get(name)?
            .size()
            .map(|(keys, slots)| KeyStats { keys, slots }))
    }

    /// A janitor actor pruning these limits every `interval` (start it under a supervisor).
    pub fn janitor(&self, interval: Duration) -> LimitJanitor {
        LimitJanitor::new(self.clone(), interval)
    }
}
