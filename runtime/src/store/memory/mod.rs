//! The embedded in-memory store: Redis's semantics for every [`Store`] method, in one process.
//!
//! One keyspace behind a `parking_lot` mutex; every operation is a short critical section with
//! no `.await` inside. Expiry is measured with `tokio::time::Instant`, so tests with paused
//! time can advance it. It is checked on access, and active as in Redis: every key given a TTL
//! is queued by expiry time, and every operation first frees up to `SWEEP_PER_CALL` keys
//! whose time has passed, so a key that is never read again is still freed by a long-running
//! process. Blocking stream reads wait on a [`Notify`] that every `XADD` wakes.
//!
//! This file holds the store and its [`Store`] impl, which checks the arguments, locks the
//! keyspace and hands each command to the file of its data type:
//!
//! - `keyspace.rs`: the keys, their expiry, and the commands on keys of any kind;
//! - `values.rs`: strings, counters and leases; `hashes.rs`; `lists.rs`; `sorted.rs`;
//! - `id.rs`: stream ids; `streams.rs`: streams and their entries; `groups.rs`: consumer
//!   groups;
//! - `batch.rs`: [`Store::apply`]; `rate.rs`: [`Store::rate_limit`].

mod batch;
mod groups;
mod hashes;
mod id;
mod keyspace;
mod lists;
mod rate;
mod sorted;
mod streams;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::id::{range_end, range_start, strict_id, strict_ids, Id};
use self::keyspace::Keyspace;
use self::sorted::Sorted;
use self::streams::Stream;
use self::values::LeaseClaim;
use super::args::{block_millis, check_claim_count, check_writes};
use super::micros::Micros;
use super::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, IdleClaim, PendingEntry, PendingRange,
    PendingSummary, RateLimit, RateOutcome, ReadFrom, Store, StoreResult, StreamEntry, Trim, Write,
};

/// Expired keys an operation frees at most before its own work (Redis's active expiry
/// samples 20 keys per cycle; here the queue is ordered, so every one visited is due).
const SWEEP_PER_CALL: usize = 32;

/// The embedded in-memory store.
///
/// Cheap to create; share it behind an `Arc`. Nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    keys: Mutex<Keyspace>,
    /// Woken (all waiters) by every `XADD`; blocking reads re-check their stream.
    appended: Notify,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.keys.lock().map.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the store holds in memory: live ones and expired ones not yet freed (by
    /// an access or by the active expiry of the operations that follow).
    pub fn held_keys(&self) -> usize {
        self.keys.lock().map.len()
    }

    /// The keyspace, locked, after freeing up to [`SWEEP_PER_CALL`] expired keys.
    fn lock(&self) -> MutexGuard<'_, Keyspace> {
        let mut keys = self.keys.lock();
        keys.sweep(Instant::now(), SWEEP_PER_CALL);
        keys
    }

    /// Runs `read` under the lock until it returns entries or `deadline` passes (`None`: once).
    async fn read_blocking<F>(
        &self,
        deadline: Option<Instant>,
        mut read: F,
    ) -> StoreResult<Vec<StreamEntry>>
    where
        F: FnMut(&mut Keyspace, Instant) -> StoreResult<Vec<StreamEntry>> + Send,
    {
        loop {
            let appended = {
                let mut keys = self.lock();
                let entries = read(&mut keys, Instant::now())?;
                let Some(deadline) = deadline else {
                    return Ok(entries);
                };
                if !entries.is_empty() || Instant::now() >= deadline {
                    return Ok(entries);
                }
                // Registered for `notify_waiters` on creation, before the lock is released,
                // so an XADD between here and the await is not missed.
                self.appended.notified()
            };
            if let Some(deadline) = deadline {
                if tokio::time::timeout_at(deadline, appended).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        }
    }
}

// ---- data model ------------------------------------------------------------------------------

/// What a key holds: one kind of value.
#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Stream(Stream),
    Sorted(Sorted),
}

/// A key's value and expiry time.
#[derive(Debug)]
struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn new(value: Value) -> Self {
        Entry {
            value,
            expires_at: None,
        }
    }
}

/// A `BLOCK` time as the deadline of a blocking read.
fn block_deadline(block: Option<Duration>) -> Option<Instant> {
    block.map(|b| Instant::now() + Duration::from_millis(block_millis(b)))
}

// ---- the trait -------------------------------------------------------------------------------
//
// Arguments are parsed before the keyspace is locked; each command runs under one lock.

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.lock().get(key, Instant::now())
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        Ok(self.lock().get_many(keys, Instant::now()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.lock().set(key, value, ttl, Instant::now());
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        Ok(self.lock().set_nx(key, value, ttl, Instant::now()))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        self.lock()
            .compare_and_set(key, expected, new, ttl, Instant::now())
    }

    async fn del(&self, keys: &[String]) -> StoreResult<u64> {
        Ok(self.lock().del(keys, Instant::now()))
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(self.lock().exists(key, Instant::now()))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        Ok(self.lock().expire(key, ttl, Instant::now()))
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        Ok(self.lock().ttl(key, Instant::now()))
    }

    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64> {
        self.lock().incr_by(key, delta, Instant::now())
    }

    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        Ok(self.lock().keys_with_prefix(prefix, Instant::now()))
    }

    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.lock()
            .claim_lease(LeaseClaim::Acquire, key, owner, ttl, Instant::now())
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.lock()
            .claim_lease(LeaseClaim::Renew, key, owner, ttl, Instant::now())
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool> {
        self.lock().release_lease(key, owner, Instant::now())
    }

    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()> {
        self.lock().hset(key, fields, Instant::now())
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        self.lock().hget(key, field, Instant::now())
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.lock().hgetall(key, Instant::now())
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64> {
        self.lock().hdel(key, fields, Instant::now())
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64> {
        self.lock().hincr_by(key, field, delta, Instant::now())
    }

    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
        self.lock().push(key, values, Instant::now())
    }

    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>> {
        self.lock().range(key, start, stop, Instant::now())
    }

    async fn len(&self, key: &str) -> StoreResult<u64> {
        self.lock().len(key, Instant::now())
    }

    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>> {
        self.keys.lock().zrevrange(key, start, stop, Instant::now())
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        self.keys.lock().zcard(key, Instant::now())
    }

    async fn xadd(
        &self,
        stream: &str,
        fields: &[(&str, &[u8])],
        trim: Option<Trim>,
    ) -> StoreResult<EntryId> {
        let fields: Vec<(&[u8], &[u8])> = fields.iter().map(|(f, v)| (f.as_bytes(), *v)).collect();
        let id = self
            .keys
            .lock()
            .xadd(stream, &fields, trim.as_ref(), Instant::now())?;
        self.appended.notify_waiters();
        Ok(id)
    }

    async fn xlen(&self, stream: &str) -> StoreResult<u64> {
        self.lock().xlen(stream, Instant::now())
    }

    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>> {
        let (start, end) = (range_start("xrange", start)?, range_end("xrange", end)?);
        self.lock()
            .xrange(stream, start, end, count, Instant::now())
    }

    async fn xread(
        &self,
        stream: &str,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StoreResult<Vec<StreamEntry>> {
        let count = if count == 0 { usize::MAX } else { count };
        let after = if after == "$" {
            self.lock().last_id(stream, Instant::now())?
        } else {
            strict_id("xread", after)?
        };
        self.read_blocking(block_deadline(block), |keys, now| {
            keys.xread(stream, after, count, now)
        })
        .await
    }

    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool> {
        let start = match start {
            "$" => None,
            id => Some(strict_id("xgroup_create", id)?),
        };
        self.lock()
            .xgroup_create(stream, group, start, Instant::now())
    }

    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>> {
        let (from_pending, deadline) = match &read.from {
            ReadFrom::New => (None, block_deadline(read.block)),
            ReadFrom::Pending(id) => (Some(strict_id("xreadgroup", id)?), None),
        };
        self.read_blocking(deadline, |keys, now| {
            keys.xreadgroup(&read, from_pending, now)
        })
        .await
    }

    async fn xack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.lock().xack(stream, group, ids, Instant::now())
    }

    async fn xpending(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.lock().xpending(stream, group, Instant::now())
    }

    async fn xpending_range(&self, range: PendingRange<'_>) -> StoreResult<Vec<PendingEntry>> {
        let op = "xpending_range";
        let ids: (Option<Id>, Option<Id>) =
            (range_start(op, range.start)?, range_end(op, range.end)?);
        self.lock().xpending_range(&range, ids, Instant::now())
    }

    async fn xautoclaim(&self, claim: IdleClaim<'_>) -> StoreResult<AutoClaim> {
        check_claim_count(claim.count)?;
        let start = range_start("xautoclaim", claim.start)?;
        self.lock().xautoclaim(&claim, start, Instant::now())
    }

    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>> {
        let ids = strict_ids("xclaim_touch", ids)?;
        self.lock()
            .xclaim_touch(stream, group, consumer, ids, Instant::now())
    }

    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        self.lock().xgroups(stream, Instant::now())
    }

    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        self.lock().xconsumers(stream, group, Instant::now())
    }

    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool> {
        self.lock()
            .xdelconsumer_idle(stream, group, consumer, min_idle, Instant::now())
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64> {
        if let Trim::MinId(id) = &trim {
            strict_id("xtrim", id)?;
        }
        self.lock().xtrim(stream, &trim, Instant::now())
    }

    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()> {
        check_writes(&writes)?;
        let (appended, first_error) = self.lock().apply(&writes, Instant::now());
        if appended {
            self.appended.notify_waiters();
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn rate_limit(&self, key: &str, request: RateLimit) -> StoreResult<RateOutcome> {
        // The same arithmetic as the Redis scripts, in the same microsecond units.
        let params = Micros::new(&request)?;
        self.lock().rate_limit(key, &params, Instant::now())
    }
}
