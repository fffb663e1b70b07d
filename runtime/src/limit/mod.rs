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

mod distributed;
mod error;
mod janitor;
mod local;
mod window;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tracing::Instrument as _;
use troupe_config::{LimitBackend, LimitKey, LimitKind, LimitSettings, LimitUnit};

use self::distributed::Distributed;
pub use self::error::LimitError;
pub use self::janitor::{LimitJanitor, Prune, PRUNE_INTERVAL};
use self::local::{LimitClock, LocalBucket};
use self::window::LocalWindow;
use crate::rate::gcra::{Gcra, Op};
use crate::rate::window::Window;
use crate::rate::{RateAlgorithm, RateOp, RateOutcome};
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

/// How a limit enforces.
#[derive(Debug)]
enum Engine {
    Bucket(LocalBucket),
    Window(LocalWindow),
    Distributed(Distributed),
}

/// How fast a limit earns units, for converting between waits and units.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// One unit per this long.
    PerUnit(Duration),
    /// `limit` units per window.
    Window { period: Duration, limit: u64 },
}

impl Pace {
    /// Units earned within `d`.
    fn units_within(self, d: Duration) -> u64 {
        let n = match self {
            Pace::PerUnit(t) => d.as_nanos() / t.as_nanos().max(1),
            Pace::Window { period, limit } => {
                (d.as_nanos() / period.as_nanos().max(1)).saturating_mul(u128::from(limit))
            }
        };
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Time to earn `units`.
    fn time_for(self, units: u64) -> Duration {
        match self {
            Pace::PerUnit(t) => t.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX)),
            Pace::Window { period, limit } => {
                period.saturating_mul(u32::try_from(units / limit.max(1)).unwrap_or(u32::MAX))
            }
        }
    }
}

/// One configured limit.
#[derive(Debug)]
struct Limit {
    name: String,
    settings: LimitSettings,
    engine: Engine,
    /// Per shard.
    capacity: u64,
    /// Per shard.
    max_reserved: u64,
    pace: Pace,
    shards: u32,
    next_shard: AtomicU32,
    /// `limit:{name}:{kind}:` — the store keys of a distributed limit start with it.
    store_prefix: String,
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

    /// Takes `count` units from `key` if it has them now.
    pub async fn limit(&self, name: &str, key: &str, count: u64) -> Result<Admission, LimitError> {
        let span = tracing::debug_span!("limit.admit", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count == 0 {
                return Ok(Admission::Admitted);
            }
            limit.fits(count)?;
            let shard = limit.pick_shard();
            if let Engine::Bucket(bucket) = &limit.engine {
                // The hot path: governor's check, no conversion on the way.
                let n = NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN);
                let shard = (limit.shards > 1).then_some(shard);
                return Ok(match bucket.take_now(key, shard, n) {
                    Ok(()) => Admission::Admitted,
                    Err(wait) => Admission::Limited {
                        retry_after: Duration::from_nanos(wait),
                    },
                });
            }
            let take = RateOp::Take {
                count,
                max_ahead: 0,
            };
            let o = limit.run(key, shard, take, true).await?;
            Ok(Admission::from_outcome(&o))
        }
        .instrument(span)
        .await
    }

    /// Whether `count` units would be admitted now, taking nothing.
    pub async fn check(&self, name: &str, key: &str, count: u64) -> Result<Admission, LimitError> {
        let span = tracing::debug_span!("limit.check", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count == 0 {
                return Ok(Admission::Admitted);
            }
            limit.fits(count)?;
            let shard = limit.peek_shard();
            let o = limit.run(key, shard, RateOp::Peek { count }, true).await?;
            Ok(Admission::from_outcome(&o))
        }
        .instrument(span)
        .await
    }

    /// What `key` has left in limit `name`.
    pub async fn status(&self, name: &str, key: &str) -> Result<LimitStatus, LimitError> {
        let span = tracing::debug_span!("limit.status", limit = name, key);
        async {
            let limit = self.get(name)?;
            let mut status = LimitStatus {
                capacity: limit.capacity.saturating_mul(u64::from(limit.shards)),
                remaining: 0,
                reset_after: Duration::ZERO,
            };
            for shard in 0..limit.shards {
                let o = limit
                    .run(key, shard, RateOp::Peek { count: 0 }, false)
                    .await?;
                status.remaining = status.remaining.saturating_add(o.remaining);
                status.reset_after = status.reset_after.max(o.reset_after);
            }
            Ok(status)
        }
        .instrument(span)
        .await
    }

    /// Forgets `key`'s usage in limit `name`: it is back to full (penalties included).
    pub async fn reset(&self, name: &str, key: &str) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.reset", limit = name, key);
        async {
            let limit = self.get(name)?;
            match &limit.engine {
                Engine::Bucket(b) => {
                    (0..limit.shards).for_each(|s| b.reset(&limit.local_key(key, s)))
                }
                Engine::Window(w) => {
                    (0..limit.shards).for_each(|s| w.reset(&limit.local_key(key, s)))
                }
                Engine::Distributed(d) => {
                    let keys: Vec<String> =
                        (0..limit.shards).map(|s| limit.store_key(key, s)).collect();
                    d.reset(&limit.name, &keys).await?;
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Reserves `count` units of `key` now, to be used at `ready_at`. Refused with
    /// [`LimitError::TooManyReserved`] when more than the limit's `max_reserved` units would
    /// then be promised ahead.
    pub async fn reserve(
        &self,
        name: &str,
        key: &str,
        count: u64,
    ) -> Result<Reservation, LimitError> {
        let span = tracing::debug_span!("limit.reserve", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            let (o, _shard) = limit.take(key, count, limit.max_reserved).await?;
            if !o.allowed {
                return Err(LimitError::TooManyReserved {
                    limit: limit.name.clone(),
                    max_reserved: limit.max_reserved,
                    retry_after: o
                        .wait
                        .saturating_sub(limit.pace.time_for(limit.max_reserved)),
                });
            }
            Ok(Reservation {
                ready_at: tokio::time::Instant::now() + o.wait,
                wait: o.wait,
                count,
            })
        }
        .instrument(span)
        .await
    }

    /// Takes `count` units of `key`, waiting for them up to `max_wait` (`None`: the limit's
    /// `max_wait` setting). Fails with [`LimitError::RateLimited`] when they would not be
    /// there in time; nothing is taken then. Waiting callers are served in the order they
    /// called. If the returned future is dropped while waiting, the units are given back.
    pub async fn acquire(
        &self,
        name: &str,
        key: &str,
        count: u64,
        max_wait: Option<Duration>,
    ) -> Result<Acquired, LimitError> {
        let span = tracing::debug_span!("limit.acquire", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            let max_wait = max_wait.unwrap_or(limit.settings.max_wait);
            let ahead = limit.max_reserved.min(limit.pace.units_within(max_wait));
            let (o, shard) = limit.take(key, count, ahead).await?;
            if !o.allowed {
                count_limit(name, "rejected");
                return Err(limit.rate_limited(o.wait));
            }
            if o.wait.is_zero() {
                return Ok(Acquired {
                    waited: Duration::ZERO,
                });
            }
            let mut undo = RefundOnDrop {
                limiters: self.clone(),
                name: name.to_owned(),
                key: key.to_owned(),
                shard,
                count,
                armed: true,
            };
            if o.wait > max_wait {
                // Only a penalty can push a fitting reservation past max_wait.
                undo.give_back().await;
                count_limit(name, "rejected");
                return Err(limit.rate_limited(o.wait));
            }
            count_limit(name, "waited");
            tokio::time::sleep(o.wait).await;
            undo.armed = false;
            Ok(Acquired { waited: o.wait })
        }
        .instrument(span)
        .await
    }

    /// Gives `count` units back to `key` (taken but not used).
    pub async fn refund(&self, name: &str, key: &str, count: u64) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.refund", limit = name, key, count);
        async {
            let limit = self.get(name)?;
            if count > 0 {
                let shard = limit.peek_shard();
                limit
                    .run(key, shard, RateOp::Refund { count }, false)
                    .await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Holds `key` for `retry_after` (a provider answered 429): nothing is admitted before
    /// then, and the bucket refills from empty afterwards. Zero does nothing.
    pub async fn penalize(
        &self,
        name: &str,
        key: &str,
        retry_after: Duration,
    ) -> Result<(), LimitError> {
        let span = tracing::debug_span!("limit.penalize", limit = name, key, ?retry_after);
        async {
            let limit = self.get(name)?;
            for shard in 0..limit.shards {
                let op = RateOp::Penalize { delay: retry_after };
                limit.run(key, shard, op, false).await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Takes what one model call needs from each of `limits` for `scope`: one unit from
    /// request limits, `tokens` (the estimate) from token limits, each waiting up to its
    /// `max_wait`. All or nothing: on a refusal, the units already taken are given back.
    pub async fn acquire_call(
        &self,
        limits: &[String],
        scope: Scope<'_>,
        tokens: u64,
    ) -> Result<Acquired, LimitError> {
        let mut taken: Vec<(&str, String, u64)> = Vec::with_capacity(limits.len());
        let mut waited = Duration::ZERO;
        for name in limits {
            let result = match self.get(name) {
                Ok(limit) => {
                    let key = limit.key_for(scope);
                    let count = limit.call_units(tokens);
                    let acquired = self.acquire(name, &key, count, None).await;
                    acquired.map(|a| (a, key, count))
                }
                Err(err) => Err(err),
            };
            match result {
                Ok((acquired, key, count)) => {
                    waited += acquired.waited;
                    taken.push((name, key, count));
                }
                Err(err) => {
                    for (name, key, count) in taken {
                        if let Err(undo) = self.refund(name, &key, count).await {
                            tracing::warn!(limit = name, key, error = %undo, "could not give units back");
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(Acquired { waited })
    }

    /// After a model call admitted by [`Limiters::acquire_call`] with `estimated` tokens:
    /// gives back what it did not use to the token limits, or charges what it used beyond the
    /// estimate (without waiting; later calls wait for it). A charge is at most one capacity,
    /// and is dropped when the key already owes more than `max_reserved` plus a capacity.
    pub async fn settle_call(
        &self,
        limits: &[String],
        scope: Scope<'_>,
        estimated: u64,
        used: u64,
    ) -> Result<(), LimitError> {
        for name in limits {
            let limit = self.get(name)?;
            if limit.settings.unit != LimitUnit::Tokens || used == estimated {
                continue;
            }
            let key = limit.key_for(scope);
            if used < estimated {
                self.refund(name, &key, estimated - used).await?;
            } else {
                let count = (used - estimated).min(limit.capacity);
                let charge = RateOp::Take {
                    count,
                    max_ahead: limit.max_reserved.saturating_add(limit.capacity),
                };
                let span = tracing::debug_span!("limit.charge", limit = name.as_str(), key, count);
                limit
                    .run(&key, limit.pick_shard(), charge, false)
                    .instrument(span)
                    .await?;
            }
        }
        Ok(())
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

impl Limit {
    fn build(
        name: &str,
        s: &LimitSettings,
        store: &Arc<dyn Store>,
        clock: &LimitClock,
    ) -> Result<Limit, LimitError> {
        let settings_error = |message: String| LimitError::Settings {
            limit: name.to_owned(),
            message,
        };
        let shards = s.shards.max(1);
        let total = match s.kind {
            LimitKind::TokenBucket { capacity } => capacity,
            LimitKind::FixedWindow { .. } => s.rate,
        };
        let capacity = total / u64::from(shards);
        let rate = s.rate / u64::from(shards);
        if capacity == 0 || rate == 0 {
            return Err(settings_error(format!(
                "{shards} shards need a rate and capacity of at least {shards}"
            )));
        }
        let period_ns = s.period.as_nanos().max(1);
        let interval_ns = u64::try_from(period_ns.div_ceil(u128::from(rate))).unwrap_or(u64::MAX);
        let kind = match s.kind {
            LimitKind::TokenBucket { .. } => "tb",
            LimitKind::FixedWindow { .. } => "fw",
        };
        let origin = match &s.kind {
            LimitKind::FixedWindow { start: Some(start) } => {
                humantime::parse_rfc3339_weak(start.trim())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .ok_or_else(|| {
                        settings_error(format!(
                        "start {start:?} is not an RFC 3339 time at or after 1970-01-01T00:00:00Z"
                    ))
                    })?
            }
            _ => Duration::ZERO,
        };
        let (engine, pace) = match (s.backend, &s.kind) {
            (LimitBackend::Local, LimitKind::TokenBucket { .. }) => {
                let burst = u32::try_from(capacity)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        settings_error(format!(
                            "a local token bucket holds at most {} units per shard",
                            u32::MAX
                        ))
                    })?;
                // The furthest a key's time may run ahead (a full bucket, everything reserved
                // and a charge on top) must stay far inside governor's u64 nanoseconds.
                let horizon = u128::from(interval_ns)
                    * (u128::from(capacity) * 2 + u128::from(s.max_reserved));
                if horizon > u128::from(u64::MAX / 4) {
                    return Err(settings_error(
                        "period, capacity and max_reserved span too long a time".to_owned(),
                    ));
                }
                let gcra = Gcra {
                    interval: interval_ns,
                    capacity,
                };
                let bucket = LocalBucket::new(gcra, burst, clock.clone())
                    .ok_or_else(|| settings_error("the period is too short".to_owned()))?;
                (
                    Engine::Bucket(bucket),
                    Pace::PerUnit(Duration::from_nanos(interval_ns)),
                )
            }
            (LimitBackend::Local, LimitKind::FixedWindow { .. }) => {
                let window = Window {
                    period: u64::try_from(period_ns).unwrap_or(u64::MAX),
                    origin: i64::try_from(origin.as_nanos()).unwrap_or(i64::MAX),
                    limit: rate,
                };
                let pace = Pace::Window {
                    period: s.period,
                    limit: rate,
                };
                (
                    Engine::Window(LocalWindow::new(window, clock.clone())),
                    pace,
                )
            }
            (LimitBackend::Redis, LimitKind::TokenBucket { .. }) => {
                let interval = Duration::from_nanos(interval_ns);
                let algorithm = RateAlgorithm::Gcra { interval, capacity };
                let engine = Distributed::new(store.clone(), algorithm, s.on_store_error);
                (Engine::Distributed(engine), Pace::PerUnit(interval))
            }
            (LimitBackend::Redis, LimitKind::FixedWindow { .. }) => {
                let algorithm = RateAlgorithm::FixedWindow {
                    period: s.period,
                    origin,
                    limit: rate,
                };
                let engine = Distributed::new(store.clone(), algorithm, s.on_store_error);
                let pace = Pace::Window {
                    period: s.period,
                    limit: rate,
                };
                (Engine::Distributed(engine), pace)
            }
        };
        Ok(Limit {
            name: name.to_owned(),
            settings: s.clone(),
            engine,
            capacity,
            max_reserved: s.max_reserved / u64::from(shards),
            pace,
            shards,
            next_shard: AtomicU32::new(0),
            store_prefix: format!("limit:{name}:{kind}:"),
        })
    }

    fn key_for(&self, scope: Scope<'_>) -> String {
        match self.settings.key {
            LimitKey::Global => "global".to_owned(),
            LimitKey::Group => scope.group.to_owned(),
            LimitKey::User => format!("{}/{}", scope.group, scope.user.unwrap_or("-")),
        }
    }

    /// Units one model call takes from this limit.
    fn call_units(&self, tokens: u64) -> u64 {
        match self.settings.unit {
            LimitUnit::Requests => 1,
            LimitUnit::Tokens => tokens,
        }
    }

    fn fits(&self, count: u64) -> Result<(), LimitError> {
        if count > self.capacity {
            return Err(LimitError::ExceedsCapacity {
                limit: self.name.clone(),
                requested: count,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn rate_limited(&self, retry_after: Duration) -> LimitError {
        LimitError::RateLimited {
            limit: self.name.clone(),
            retry_after,
        }
    }

    /// The shard for the next call (round-robin).
    fn pick_shard(&self) -> u32 {
        if self.shards == 1 {
            return 0;
        }
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards
    }

    /// The shard the next call would use, without moving on.
    fn peek_shard(&self) -> u32 {
        if self.shards == 1 {
            return 0;
        }
        self.next_shard.load(Ordering::Relaxed) % self.shards
    }

    fn local_key<'k>(&self, key: &'k str, shard: u32) -> Cow<'k, str> {
        if self.shards == 1 {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{key}#{shard}"))
        }
    }

    fn store_key(&self, key: &str, shard: u32) -> String {
        if self.shards == 1 {
            format!("{}{key}", self.store_prefix)
        } else {
            format!("{}{key}#{shard}", self.store_prefix)
        }
    }

    /// Takes `count` units (reserving up to `max_ahead` ahead); returns the outcome and the
    /// shard used.
    async fn take(
        &self,
        key: &str,
        count: u64,
        max_ahead: u64,
    ) -> Result<(RateOutcome, u32), LimitError> {
        let shard = self.pick_shard();
        if count == 0 {
            let now = RateOutcome {
                allowed: true,
                wait: Duration::ZERO,
                remaining: 0,
                reset_after: Duration::ZERO,
            };
            return Ok((now, shard));
        }
        self.fits(count)?;
        let op = RateOp::Take { count, max_ahead };
        Ok((self.run(key, shard, op, true).await?, shard))
    }

    /// Runs `op` on a local engine at once; `None` for a distributed limit.
    fn run_local(&self, key: &str, shard: u32, op: RateOp) -> Option<RateOutcome> {
        let op = local_op(op);
        let o = match &self.engine {
            Engine::Bucket(b) => b.apply(&self.local_key(key, shard), op),
            Engine::Window(w) => w.apply(&self.local_key(key, shard), op),
            Engine::Distributed(_) => return None,
        };
        Some(RateOutcome {
            allowed: o.allowed,
            wait: Duration::from_nanos(o.wait),
            remaining: o.remaining,
            reset_after: Duration::from_nanos(o.reset_after),
        })
    }

    /// Runs `op` on `key`'s shard. `admission`: a store failure follows `on_store_error`.
    async fn run(
        &self,
        key: &str,
        shard: u32,
        op: RateOp,
        admission: bool,
    ) -> Result<RateOutcome, LimitError> {
        match &self.engine {
            Engine::Distributed(d) => {
                d.apply(&self.name, &self.store_key(key, shard), op, admission)
                    .await
            }
            _ => Ok(self.run_local(key, shard, op).unwrap_or(RateOutcome {
                allowed: true,
                wait: Duration::ZERO,
                remaining: 0,
                reset_after: Duration::ZERO,
            })),
        }
    }

    /// Keys and slots of a local limit.
    fn size(&self) -> Option<(usize, usize)> {
        match &self.engine {
            Engine::Bucket(b) => Some(b.size()),
            Engine::Window(w) => Some(w.size()),
            Engine::Distributed(_) => None,
        }
    }
}

/// A store operation in the local limiters' ticks (nanoseconds).
fn local_op(op: RateOp) -> Op {
    match op {
        RateOp::Take { count, max_ahead } => Op::Take { count, max_ahead },
        RateOp::Peek { count } => Op::Peek { count },
        RateOp::Refund { count } => Op::Refund { count },
        RateOp::Penalize { delay } => Op::Penalize {
            delay: u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX),
        },
    }
}

/// Gives reserved units back if a waiting [`Limiters::acquire`] is dropped before its turn.
struct RefundOnDrop {
    limiters: Limiters,
    name: String,
    key: String,
    shard: u32,
    count: u64,
    armed: bool,
}

impl RefundOnDrop {
    async fn give_back(&mut self) {
        self.armed = false;
        if let Ok(limit) = self.limiters.get(&self.name) {
            let op = RateOp::Refund { count: self.count };
            if let Err(err) = limit.run(&self.key, self.shard, op, false).await {
                tracing::warn!(limit = self.name, key = self.key, error = %err, "could not give reserved units back");
            }
        }
    }
}

impl Drop for RefundOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(limit) = self.limiters.get(&self.name) else {
            return;
        };
        let op = RateOp::Refund { count: self.count };
        if limit.run_local(&self.key, self.shard, op).is_some() {
            return;
        }
        // A distributed limit: give back from a task, if there is a runtime to run it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut undo = RefundOnDrop {
                limiters: self.limiters.clone(),
                name: std::mem::take(&mut self.name),
                key: std::mem::take(&mut self.key),
                shard: self.shard,
                count: self.count,
                armed: true,
            };
            runtime.spawn(async move { undo.give_back().await });
        }
    }
}

/// Counts a rate-limit wait or rejection in the metrics.
fn count_limit(limit: &str, outcome: &'static str) {
    let labels = crate::metrics::LimitLabels {
        limit: limit.to_owned(),
        outcome,
    };
    crate::metrics::metrics()
        .rate_limits
        .get_or_create(&labels)
        .inc();
}
