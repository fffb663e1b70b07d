//! The Redis store: every [`Store`] method as one Redis round trip (Lua scripts for the atomic
//! ones, `MULTI`/`EXEC` for [`Store::apply`]), with a key prefix, bounded calls and background
//! reconnection.
//!
//! [`RedisStore::connect`] does not need Redis to be up: while it is down, calls fail fast with
//! a retryable [`StoreError`](super::StoreError) and the store reconnects on its own (see `link.rs`).
//!
//! This file holds the store, its options, and its [`Store`] impl, which hands each command to
//! the file of its data type, as in the memory store: `keyspace.rs` (keys of any kind),
//! `values.rs` (strings, counters, leases), `hashes.rs`, `lists.rs`, `sorted.rs`, `streams.rs`,
//! `groups.rs` (consumer groups), `batch.rs` ([`Store::apply`]) and `rate.rs`
//! ([`Store::rate_limit`]). Connections are `link.rs`, replies `reply.rs`, scripts `scripts.rs`.

mod batch;
mod groups;
mod hashes;
mod keyspace;
mod link;
mod lists;
mod rate;
mod renewals;
mod reply;
mod scripts;
mod sorted;
mod streams;
mod values;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};

use self::link::{Ctx, Link, Request, Retry};
use self::renewals::Renewals;
use self::reply::Reply;
use self::scripts::Scripts;
use super::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, IdleClaim, PendingEntry, PendingRange,
    PendingSummary, RateLimit, RateOutcome, Store, StoreResult, StreamEntry, Trim, Write,
};

/// How to reach Redis and how patient to be with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prepended to every key and stream name, so deployments can share a server.
    pub prefix: String,
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
    /// Limit for one call; blocking reads get their `BLOCK` time on top.
    pub response_timeout: Duration,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max_delay: Duration,
}

impl RedisOptions {
    /// Options for `url` with the defaults: prefix `troupe:`, 2 s connect and response
    /// timeouts, reconnect backoff capped at 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "troupe:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

/// The Redis store. Cheap to share behind an `Arc`; all calls go through one multiplexed
/// connection except blocking reads, which get a dedicated one each.
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    scripts: Scripts,
    renewals: Renewals,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connected", &self.link.is_connected())
            .finish()
    }
}

fn cmd(name: &str) -> Cmd {
    redis::cmd(name)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// Creates the store and tries to connect once (bounded by `connect_timeout`). Redis
    /// need not be up: the store is returned either way and keeps reconnecting in the
    /// background. Fails only on an invalid URL.
    pub async fn connect(opts: RedisOptions) -> StoreResult<RedisStore> {
        let prefix = opts.prefix.clone();
        let link = Link::start(opts).await?;
        Ok(RedisStore {
            link,
            prefix,
            scripts: Scripts::new(),
            renewals: Renewals::default(),
        })
    }

    /// Whether the shared connection is up right now (no round trip; see [`Store::ping`]).
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    async fn read(&self, ctx: Ctx<'_>, c: &Cmd) -> StoreResult<Value> {
        self.link
            .query(&ctx, &Request::Cmd(c), Retry::Idempotent)
            .await
    }

    async fn write(&self, ctx: Ctx<'_>, c: &Cmd) -> StoreResult<Value> {
        self.link.query(&ctx, &Request::Cmd(c), Retry::Never).await
    }

    async fn script(
        &self,
        ctx: Ctx<'_>,
        script: &redis::Script,
        key: &str,
        args: &[&[u8]],
    ) -> StoreResult<bool> {
        let mut inv = script.key(self.k(key));
        for a in args {
            inv.arg(*a);
        }
        let v = self
            .link
            .query(&ctx, &Request::Script(&inv), Retry::Never)
            .await?;
        Reply { op: ctx.op }.flag(v)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    async fn ping(&self) -> StoreResult<()> {
        let v = self.read(Ctx::new("ping", ""), &cmd("PING")).await?;
        Reply { op: "ping" }.ok(v)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        values::get(self, key).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        values::get_many(self, keys).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        values::set(self, key, value, ttl).await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        values::set_nx(self, key, value, ttl).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        values::compare_and_set(self, key, expected, new, ttl).await
    }

    async fn del(&self, keys: &[String]) -> StoreResult<u64> {
        keyspace::del(self, keys).await
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        keyspace::exists(self, key).await
    }

    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        keyspace::expire(self, key, ttl).await
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        keyspace::ttl(self, key).await
    }

    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64> {
        values::incr_by(self, key, delta).await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        keyspace::keys_with_prefix(self, prefix).await
    }

    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        values::acquire_lease(self, key, owner, ttl).await
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        values::renew_lease(self, key, owner, ttl).await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool> {
        values::release_lease(self, key, owner).await
    }

    async fn renew_leases(
        &self,
        keys: &[String],
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        values::renew_leases(self, keys, owner, ttl).await
    }

    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()> {
        hashes::hset(self, key, fields).await
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        hashes::hget(self, key, field).await
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        hashes::hgetall(self, key).await
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64> {
        hashes::hdel(self, key, fields).await
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64> {
        hashes::hincr_by(self, key, field, delta).await
    }

    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
        lists::push(self, key, values).await
    }

    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>> {
        lists::range(self, key, start, stop).await
    }

    async fn len(&self, key: &str) -> StoreResult<u64> {
        lists::len(self, key).await
    }

    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>> {
        sorted::zrevrange(self, key, start, stop).await
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        sorted::zcard(self, key).await
    }

    async fn xadd(
        &self,
        stream: &str,
        fields: &[(&str, &[u8])],
        trim: Option<Trim>,
    ) -> StoreResult<EntryId> {
        streams::xadd(self, stream, fields, trim).await
    }

    async fn xlen(&self, stream: &str) -> StoreResult<u64> {
        streams::xlen(self, stream).await
    }

    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>> {
        streams::xrange(self, stream, start, end, count).await
    }

    async fn xread(
        &self,
        stream: &str,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StoreResult<Vec<StreamEntry>> {
        streams::xread(self, stream, after, count, block).await
    }

    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool> {
        groups::xgroup_create(self, stream, group, start).await
    }

    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>> {
        groups::xreadgroup(self, read).await
    }

    async fn xack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        groups::xack(self, stream, group, ids).await
    }

    async fn xpending(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        groups::xpending(self, stream, group).await
    }

    async fn xpending_range(&self, range: PendingRange<'_>) -> StoreResult<Vec<PendingEntry>> {
        groups::xpending_range(self, range).await
    }

    async fn xautoclaim(&self, claim: IdleClaim<'_>) -> StoreResult<AutoClaim> {
        groups::xautoclaim(self, claim).await
    }

    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>> {
        groups::xclaim_touch(self, stream, group, consumer, ids).await
    }

    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        groups::xgroups(self, stream).await
    }

    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        groups::xconsumers(self, stream, group).await
    }

    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool> {
        groups::xdelconsumer_idle(self, stream, group, consumer, min_idle).await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64> {
        streams::xtrim(self, stream, trim).await
    }

    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()> {
        batch::apply(self, writes).await
    }

    async fn rate_limit(&self, key: &str, request: RateLimit) -> StoreResult<RateOutcome> {
        rate::rate_limit(self, key, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_have_documented_defaults() {
        let o = RedisOptions::new("redis://127.0.0.1:6379");
        assert_eq!(o.prefix, "troupe:");
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(o.response_timeout, Duration::from_secs(2));
        assert_eq!(o.reconnect_max_delay, Duration::from_secs(5));
    }
}
