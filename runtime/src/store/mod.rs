//! The store: the one async boundary for everything troupe persists.
//!
//! Two backends implement [`Store`]: [`MemoryStore`] (the embedded default, no external
//! dependency) and [`RedisStore`] (the redis crate, with reconnect and a key prefix). Both are
//! held to the same semantics by one conformance suite (`tests/it/store.rs`), so code written
//! against the trait behaves the same on either.
//!
//! The data model is Redis's, reduced to what troupe needs: string keys holding a value with an
//! optional TTL, hashes, append-only lists, and streams with consumer groups. A key holds one
//! kind of value; using it as another kind is [`StoreError::WrongType`].

mod args;
mod error;
mod memory;
mod micros;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::error::StoreError;
pub use self::memory::MemoryStore;
pub use self::redis::{RedisOptions, RedisStore};
pub use crate::rate::{RateAlgorithm, RateLimit, RateOp, RateOutcome};

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A stream entry id, `"<ms>-<seq>"` as Redis writes it.
pub type EntryId = String;

/// One entry read from a stream: its id and its field/value pairs in insertion order.
///
/// Field names are bytes, as Redis keeps them: any client can `XADD` a name that is not UTF-8,
/// and a reader must still see the entry (to dead-letter it) rather than fail its whole read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: EntryId,
    /// Field/value pairs, in the order they were added.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StreamEntry {
    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The entry's size: the bytes of every field name and value.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// How a stream is bounded when an entry is added or when it is trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trim {
    /// Keep at most this many entries (exact: `MAXLEN n`).
    MaxLen(u64),
    /// Drop entries whose id is lower than this one (`MINID id`).
    MinId(EntryId),
}

/// Where a consumer-group read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries never delivered to any consumer of the group (`>`).
    New,
    /// This consumer's own pending entries with an id greater than the given one (`0` for all).
    Pending(EntryId),
}

/// A consumer-group read request.
#[derive(Debug, Clone)]
pub struct GroupRead<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// The reading consumer.
    pub consumer: &'a str,
    /// At most this many entries.
    pub count: usize,
    /// Wait up to this long for new entries when there are none (`BLOCK`); `None` returns at
    /// once. Only meaningful with [`ReadFrom::New`].
    pub block: Option<Duration>,
    /// Where to start.
    pub from: ReadFrom,
}

/// A listing of a group's pending entries (`XPENDING stream group start end count [consumer]`).
#[derive(Debug, Clone)]
pub struct PendingRange<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// The lowest id listed (`-`: the first).
    pub start: &'a str,
    /// The highest id listed (`+`: the last).
    pub end: &'a str,
    /// At most this many entries.
    pub count: usize,
    /// Only the entries this consumer holds, if given.
    pub consumer: Option<&'a str>,
}

/// A claim of a group's idle pending entries for one consumer (`XAUTOCLAIM`).
#[derive(Debug, Clone)]
pub struct IdleClaim<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// The consumer that takes the entries over.
    pub consumer: &'a str,
    /// Only entries idle for at least this long.
    pub min_idle: Duration,
    /// Where the scan starts (`0`, or the cursor a previous claim returned).
    pub start: &'a str,
    /// At most this many entries (at least 1).
    pub count: usize,
}

/// Summary of a group's pending entries (`XPENDING stream group`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingSummary {
    /// Number of delivered, unacknowledged entries.
    pub count: u64,
    /// Lowest pending id.
    pub lowest: Option<EntryId>,
    /// Highest pending id.
    pub highest: Option<EntryId>,
    /// Pending count per consumer, sorted by consumer name.
    pub consumers: Vec<(String, u64)>,
}

/// One consumer group of a stream (`XINFO GROUPS`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Consumers known to the group.
    pub consumers: u64,
    /// Delivered, unacknowledged entries.
    pub pending: u64,
    /// The id of the last entry delivered to the group.
    pub last_delivered: EntryId,
    /// Entries not yet delivered to the group, when the server can tell.
    pub lag: Option<u64>,
}

/// One consumer of a group (`XINFO CONSUMERS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Time since its last read or claim.
    pub idle: Duration,
}

/// One pending entry (`XPENDING stream group start end count [consumer]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: EntryId,
    /// The consumer that holds it.
    pub consumer: String,
    /// Time since it was last delivered.
    pub idle: Duration,
    /// How many times it has been delivered.
    pub deliveries: u64,
}

/// Result of [`Store::xautoclaim`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutoClaim {
    /// Cursor for the next call (`"0-0"` when the scan is complete).
    pub next: EntryId,
    /// Entries now owned by the claiming consumer (their delivery count was incremented).
    pub claimed: Vec<StreamEntry>,
    /// Ids that were pending but whose entry no longer exists in the stream (trimmed or
    /// deleted); they were removed from the pending list. Callers count these as losses.
    pub deleted: Vec<EntryId>,
}

/// One write in a [`Store::apply`] batch.
// The fields are the arguments of the Redis command each variant's doc names.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `SET key value [PX ttl]`.
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// `DEL key`.
    Del { key: String },
    /// `HSET key field value...`.
    HSet {
        key: String,
        fields: Vec<(String, Vec<u8>)>,
    },
    /// `HDEL key field...`.
    HDel { key: String, fields: Vec<String> },
    /// `RPUSH key value...`.
    Push { key: String, values: Vec<Vec<u8>> },
    /// `XADD stream [MAXLEN|MINID] * field value...`. Field names are bytes, as in Redis.
    XAdd {
        stream: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        trim: Option<Trim>,
    },
    /// `XACK stream group id...`.
    XAck {
        stream: String,
        group: String,
        ids: Vec<EntryId>,
    },
    /// `XDEL stream id...`.
    XDel { stream: String, ids: Vec<EntryId> },
    /// `PEXPIRE key ttl`.
    Expire { key: String, ttl: Duration },
    /// `PEXPIRE key ttl` for a key written many times a second (a shared stream, an index)
    /// whose expiry may be renewed up to [`RENEW_EVERY`] late: the store may leave it out of
    /// the batch if it renewed `key` less than that ago, and `ttl` is longer than twice that
    /// (so the key cannot have expired since). Only for keys whose every write renews them.
    Renew { key: String, ttl: Duration },
    /// `PERSIST key`: the key no longer expires.
    Persist { key: String },
    /// `HINCRBY key field delta`.
    HIncrBy {
        key: String,
        field: String,
        delta: i64,
    },
    /// `ZADD key score member`: adds `member`, or moves it to `score`.
    ZAdd {
        key: String,
        member: Vec<u8>,
        score: i64,
    },
    /// `ZREM key member`.
    ZRem { key: String, member: Vec<u8> },
    /// `ZREMRANGEBYSCORE key -inf (below`: drops every member scored below `below`.
    ZRemBelow { key: String, below: i64 },
    /// [`ZRemBelow`](Write::ZRemBelow) for a sorted set written many times a second whose
    /// members past a horizon may stay up to [`RENEW_EVERY`] longer: the store may leave it out
    /// of the batch if it pruned `key` less than that ago.
    Prune { key: String, below: i64 },
}

/// How late a [`Write::Renew`] may be.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The persistence boundary. Every method is one round trip on Redis (scripts for the atomic
/// ones); [`Store::apply`] sends several writes in one.
///
/// Keys are given without the backend's prefix: the Redis backend adds its configured prefix,
/// so two deployments can share a server.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`"memory"` or `"redis"`), for logs and status.
    fn backend(&self) -> &'static str;

    /// What the backend prepends to every key (`""` in memory): a key `k` given to the store
    /// is the Redis key `{prefix}k`, the name other Redis clients use.
    fn key_prefix(&self) -> &str {
        ""
    }

    /// Checks that the backend answers; `Ok` means reads and writes can be expected to work.
    async fn ping(&self) -> StoreResult<()>;

    // ---- keys and values -------------------------------------------------------------------

    /// The value at `key`, if any.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Several values at once (`MGET`), in the order of `keys`.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>>;
    /// Sets `key` to `value`, replacing any value and TTL; expires after `ttl` if given.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()>;
    /// Sets `key` only if it does not exist; returns whether it was set.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool>;
    /// Atomically replaces the value at `key` when it currently equals `expected` (`None`:
    /// the key must not exist). `new = None` deletes the key. Returns whether it swapped.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StoreResult<bool>;
    /// Deletes keys of any kind; returns how many existed.
    async fn del(&self, keys: &[String]) -> StoreResult<u64>;
    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> StoreResult<bool>;
    /// Sets a TTL on an existing key; returns whether the key exists.
    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool>;
    /// Remaining TTL of `key`: `None` if the key does not exist or has no TTL.
    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>>;
    /// Adds `delta` to the integer at `key` (missing counts as 0); returns the new value.
    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64>;
    /// Keys (without prefix) that start with `prefix`. For admin and tests; O(keys).
    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>>;

    // ---- leases ----------------------------------------------------------------------------

    /// Takes the lease `key` for `owner` for `ttl` if it is free or already `owner`'s (then it
    /// is renewed). Returns whether `owner` holds it now.
    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool>;
    /// Extends the lease if `owner` still holds it; returns whether it did.
    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool>;
    /// Releases the lease if `owner` holds it; returns whether it did.
    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool>;
    /// Extends every lease of `keys` that `owner` still holds, in one round trip on Redis;
    /// returns, in the order of `keys`, whether it did.
    async fn renew_leases(
        &self,
        keys: &[String],
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        let mut renewed = Vec::with_capacity(keys.len());
        for key in keys {
            renewed.push(self.renew_lease(key, owner, ttl).await?);
        }
        Ok(renewed)
    }

    // ---- hashes ----------------------------------------------------------------------------

    /// Sets fields of the hash at `key`.
    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()>;
    /// One field of the hash at `key`.
    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>>;
    /// All fields of the hash at `key`, sorted by field name.
    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// Deletes fields; returns how many existed.
    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64>;
    /// Adds `delta` to an integer field; returns the new value.
    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64>;

    // ---- append-only lists -----------------------------------------------------------------

    /// Appends values to the list at `key`; returns its new length.
    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64>;
    /// Elements `start..=stop` with Redis's `LRANGE` index rules (negative counts from the end).
    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>>;
    /// Length of the list at `key` (0 if missing).
    async fn len(&self, key: &str) -> StoreResult<u64>;

    // ---- sorted sets -----------------------------------------------------------------------

    /// `ZREVRANGE key start stop`: members by rank from the highest score (equal scores in
    /// reverse byte order of the members), positions `start..=stop`.
    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>>;
    /// `ZCARD key`.
    async fn zcard(&self, key: &str) -> StoreResult<u64>;

    // ---- streams ---------------------------------------------------------------------------

    /// Appends an entry with an auto-generated id, optionally trimming; returns the id.
    async fn xadd(
        &self,
        stream: &str,
        fields: &[(&str, &[u8])],
        trim: Option<Trim>,
    ) -> StoreResult<EntryId>;
    /// Number of entries in the stream (0 if missing).
    async fn xlen(&self, stream: &str) -> StoreResult<u64>;
    /// Entries with `start <= id <= end` (`"-"` and `"+"` for the ends), at most `count`.
    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>>;
    /// Entries with an id greater than `after` (`"0"` for all, `"$"` for only new ones),
    /// waiting up to `block` for one to arrive. For tailing without a group.
    async fn xread(
        &self,
        stream: &str,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StoreResult<Vec<StreamEntry>>;
    /// Creates a consumer group starting after `start` (`"$"`: only new entries, `"0"`: all),
    /// creating the stream if missing. Returns `false` if the group already existed.
    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool>;
    /// Reads for a consumer of a group (`XREADGROUP`). A missing stream or group is
    /// [`StoreError::NoGroup`].
    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>>;
    /// Acknowledges entries; returns how many were pending.
    async fn xack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64>;
    /// Summary of the group's pending entries.
    async fn xpending(&self, stream: &str, group: &str) -> StoreResult<PendingSummary>;
    /// Pending entries as `range` lists them.
    async fn xpending_range(&self, range: PendingRange<'_>) -> StoreResult<Vec<PendingEntry>>;
    /// Transfers pending entries idle for at least `claim.min_idle` to `claim.consumer`,
    /// scanning from `claim.start`, at most `claim.count` (`XAUTOCLAIM`).
    async fn xautoclaim(&self, claim: IdleClaim<'_>) -> StoreResult<AutoClaim>;
    /// Resets the idle time of `ids` pending in `group` and makes `consumer` their owner,
    /// without counting a delivery (`XCLAIM ... 0 ids JUSTID`): a consumer still working on
    /// entries keeps others from reclaiming them. Returns the ids that were still pending.
    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>>;
    /// Trims the stream; returns how many entries were removed.
    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64>;
    /// The stream's consumer groups (`XINFO GROUPS`); empty when the stream does not exist.
    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>>;
    /// The consumers of a group (`XINFO CONSUMERS`), sorted by name.
    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>>;
    /// Deletes `consumer` from `group` only if it holds no pending entry and has been idle
    /// (no read or claim) for at least `min_idle`, atomically: `XGROUP DELCONSUMER` drops a
    /// consumer's pending entries, so the check and the delete are one step (Redis: one
    /// script running `XINFO CONSUMERS` then `XGROUP DELCONSUMER`). Returns whether it was
    /// deleted (`false` also when there is no such consumer). A missing stream or group is
    /// [`StoreError::NoGroup`].
    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool>;

    // ---- batches ---------------------------------------------------------------------------

    /// Applies the writes in order, atomically (`MULTI`/`EXEC` on Redis; under one lock in
    /// memory): no reader sees some of them without the others.
    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()>;

    // ---- rate limits -----------------------------------------------------------------------

    /// Applies one rate-limit operation to the counter at `key`, atomically, on the store's
    /// clock (Redis: one script reading `TIME`, so daemons with skewed clocks agree). The key
    /// expires once its state no longer matters. Times have microsecond resolution; a key
    /// holding something else is [`StoreError::WrongType`] or [`StoreError::NotInteger`].
    async fn rate_limit(&self, key: &str, limit: RateLimit) -> StoreResult<RateOutcome>;
}
