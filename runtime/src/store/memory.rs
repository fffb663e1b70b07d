//! The embedded in-memory store: Redis's semantics for every [`Store`] method, in one process.
//!
//! One keyspace behind a `parking_lot` mutex; every operation is a short critical section with
//! no `.await` inside. Expiry is measured with `tokio::time::Instant`, so tests with paused
//! time can advance it. It is checked on access, and active as in Redis: every key given a TTL
//! is queued by expiry time, and every operation first frees up to `SWEEP_PER_CALL` keys
//! whose time has passed, so a key that is never read again is still freed by a long-running
//! process. Blocking stream reads wait on a [`Notify`] that every `XADD` wakes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::args::{block_millis, check_writes, ttl_millis};
use super::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, PendingEntry, PendingSummary, ReadFrom,
    Store, StoreError, StoreResult, StreamEntry, Trim, Write,
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

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Id {
    ms: u64,
    seq: u64,
}

impl Id {
    const MIN: Id = Id { ms: 0, seq: 0 };
    const MAX: Id = Id {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Parses `<ms>-<seq>` or `<ms>` (then `seq` is `missing_seq`).
    fn parse(s: &str, missing_seq: u64) -> Option<Id> {
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (s, None),
        };
        let ms = parse_u64(ms)?;
        let seq = match seq {
            Some(seq) => parse_u64(seq)?,
            None => missing_seq,
        };
        Some(Id { ms, seq })
    }

    fn next(self) -> Option<Id> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Id { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| Id { ms, seq: 0 }),
        }
    }

    fn prev(self) -> Option<Id> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(Id { ms: self.ms, seq }),
            None => self.ms.checked_sub(1).map(|ms| Id { ms, seq: u64::MAX }),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn invalid_id(op: &'static str, id: &str) -> StoreError {
    StoreError::InvalidId {
        op,
        id: id.to_owned(),
    }
}

/// An id argument: `ms-seq` or `ms` (seq 0).
fn strict_id(op: &'static str, s: &str) -> StoreResult<Id> {
    Id::parse(s, 0).ok_or_else(|| invalid_id(op, s))
}

/// The start of a range: `-`, `+`, `(id` (exclusive), `id`, `ms` (seq 0). `None`: empty range.
fn range_start(op: &'static str, s: &str) -> StoreResult<Option<Id>> {
    match s {
        "-" => return Ok(Some(Id::MIN)),
        "+" => return Ok(Some(Id::MAX)),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix('(') {
        let id = Id::parse(rest, 0).ok_or_else(|| invalid_id(op, s))?;
        return Ok(id.next());
    }
    Id::parse(s, 0).map(Some).ok_or_else(|| invalid_id(op, s))
}

/// The end of a range: `-`, `+`, `(id` (exclusive), `id`, `ms` (seq max). `None`: empty range.
fn range_end(op: &'static str, s: &str) -> StoreResult<Option<Id>> {
    match s {
        "-" => return Ok(Some(Id::MIN)),
        "+" => return Ok(Some(Id::MAX)),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix('(') {
        let id = Id::parse(rest, u64::MAX).ok_or_else(|| invalid_id(op, s))?;
        return Ok(id.prev());
    }
    Id::parse(s, u64::MAX)
        .map(Some)
        .ok_or_else(|| invalid_id(op, s))
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug)]
struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

#[derive(Debug, Default)]
struct Group {
    last_delivered: Id,
    pel: BTreeMap<Id, Pending>,
    /// Every consumer that read or claimed, with the time it last did.
    consumers: BTreeMap<String, Instant>,
}

#[derive(Debug, Default)]
struct Stream {
    entries: BTreeMap<Id, Fields>,
    /// The highest id ever added; new ids are above it even after trimming.
    last_id: Id,
    groups: HashMap<String, Group>,
}

impl Stream {
    fn entry(&self, id: Id) -> StreamEntry {
        StreamEntry {
            id: id.to_string(),
            fields: self.entries.get(&id).cloned().unwrap_or_default(),
        }
    }

    fn trim(&mut self, trim: &Trim, op: &'static str) -> StoreResult<u64> {
        let before = self.entries.len();
        match trim {
            Trim::MaxLen(max) => {
                let max = usize::try_from(*max).unwrap_or(usize::MAX);
                while self.entries.len() > max {
                    self.entries.pop_first();
                }
            }
            Trim::MinId(id) => {
                let min = strict_id(op, id)?;
                self.entries = self.entries.split_off(&min);
            }
        }
        Ok((before - self.entries.len()) as u64)
    }
}

#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Stream(Stream),
    Sorted(Sorted),
}

/// A sorted set: members by score, ties by member bytes (as Redis orders them).
#[derive(Debug, Default)]
struct Sorted {
    scores: HashMap<Vec<u8>, i64>,
    order: BTreeSet<(i64, Vec<u8>)>,
}

impl Sorted {
    fn add(&mut self, member: &[u8], score: i64) {
        if let Some(old) = self.scores.insert(member.to_vec(), score) {
            self.order.remove(&(old, member.to_vec()));
        }
        self.order.insert((score, member.to_vec()));
    }

    fn remove(&mut self, member: &[u8]) {
        if let Some(old) = self.scores.remove(member) {
            self.order.remove(&(old, member.to_vec()));
        }
    }

    fn remove_below(&mut self, below: i64) {
        while let Some((score, member)) = self.order.first().cloned() {
            if score >= below {
                break;
            }
            self.order.pop_first();
            self.scores.remove(&member);
        }
    }
}

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

#[derive(Debug, Default)]
struct Keyspace {
    map: HashMap<String, Entry>,
    /// Keys by the expiry time they were given, soonest first. An entry whose key was
    /// deleted or given another TTL since is skipped when it comes up; the queue is rebuilt
    /// from `map` when such entries outnumber the keys.
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

fn wrong_type(op: &'static str, key: &str) -> StoreError {
    StoreError::WrongType {
        op,
        key: key.to_owned(),
    }
}

fn no_group(stream: &str, group: &str) -> StoreError {
    StoreError::NoGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    }
}

/// Parses an integer the way Redis does: canonical decimal only (no `+`, spaces or leading
/// zeros).
fn parse_int(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Keyspace {
    /// Notes that `key` expires at `at` (call whenever a key is given a TTL).
    fn track(&mut self, key: &str, at: Instant) {
        if self.expiries.len() > 2 * self.map.len() + 1024 {
            self.expiries = self
                .map
                .iter()
                .filter_map(|(k, e)| e.expires_at.map(|at| Reverse((at, k.clone()))))
                .collect();
        }
        self.expiries.push(Reverse((at, key.to_owned())));
    }

    /// Inserts `entry` at `key`, replacing any.
    fn insert(&mut self, key: &str, entry: Entry) {
        if let Some(at) = entry.expires_at {
            self.track(key, at);
        }
        self.map.insert(key.to_owned(), entry);
    }

    /// Active expiry: frees up to `budget` keys whose expiry time has passed.
    fn sweep(&mut self, now: Instant, budget: usize) {
        for _ in 0..budget {
            match self.expiries.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            if let Some(Reverse((_, key))) = self.expiries.pop() {
                self.expire_stale(&key, now);
            }
        }
    }

    /// Drops `key` if it has expired.
    fn expire_stale(&mut self, key: &str, now: Instant) {
        let stale = self
            .map
            .get(key)
            .is_some_and(|e| e.expires_at.is_some_and(|at| at <= now));
        if stale {
            self.map.remove(key);
        }
    }

    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        self.expire_stale(key, now);
        self.map.get_mut(key)
    }

    fn bytes(&mut self, op: &'static str, key: &str, now: Instant) -> StoreResult<Option<&[u8]>> {
        match self.live(key, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b.as_slice())),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    fn hash_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut BTreeMap<String, Vec<u8>>>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::Hash(BTreeMap::new())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => Ok(Some(h)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    fn list_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut Vec<Vec<u8>>>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::List(Vec::new())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::List(l),
                ..
            }) => Ok(Some(l)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    fn stream_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut Stream>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::Stream(Stream::default())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Stream(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    fn sorted_mut(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
        create: bool,
    ) -> StoreResult<Option<&mut Sorted>> {
        self.expire_stale(key, now);
        if create && !self.map.contains_key(key) {
            self.map
                .insert(key.to_owned(), Entry::new(Value::Sorted(Sorted::default())));
        }
        match self.map.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Sorted(z),
                ..
            }) => Ok(Some(z)),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    /// Drops `key` if it is an empty sorted set (Redis deletes emptied keys).
    fn drop_if_empty_sorted(&mut self, key: &str) {
        if matches!(self.map.get(key), Some(Entry { value: Value::Sorted(z), .. }) if z.scores.is_empty())
        {
            self.map.remove(key);
        }
    }

    fn group_mut(
        &mut self,
        op: &'static str,
        stream: &str,
        group: &str,
        now: Instant,
    ) -> StoreResult<(&mut Group, &BTreeMap<Id, Fields>)> {
        let s = self
            .stream_mut(op, stream, now, false)?
            .ok_or_else(|| no_group(stream, group))?;
        let Stream {
            entries, groups, ..
        } = s;
        let g = groups
            .get_mut(group)
            .ok_or_else(|| no_group(stream, group))?;
        Ok((g, entries))
    }

    // ---- writes shared by the trait methods and `apply` ------------------------------------

    fn set(&mut self, key: &str, value: &[u8], ttl: Option<Duration>, now: Instant) {
        let entry = Entry {
            value: Value::Bytes(value.to_vec()),
            expires_at: ttl.map(|t| now + Duration::from_millis(ttl_millis(t))),
        };
        self.insert(key, entry);
    }

    fn del(&mut self, keys: &[String], now: Instant) -> u64 {
        let mut n = 0;
        for key in keys {
            self.expire_stale(key, now);
            if self.map.remove(key).is_some() {
                n += 1;
            }
        }
        n
    }

    fn expire(&mut self, key: &str, ttl: Duration, now: Instant) -> bool {
        let at = now + Duration::from_millis(ttl_millis(ttl));
        match self.live(key, now) {
            Some(e) => {
                e.expires_at = Some(at);
                self.track(key, at);
                true
            }
            None => false,
        }
    }

    fn hset(&mut self, key: &str, fields: &[(&str, &[u8])], now: Instant) -> StoreResult<()> {
        if fields.is_empty() {
            // Like Redis with nothing to set: the key is neither created nor type-checked.
            return Ok(());
        }
        if let Some(h) = self.hash_mut("hset", key, now, true)? {
            for (f, v) in fields {
                h.insert((*f).to_owned(), v.to_vec());
            }
        }
        Ok(())
    }

    fn push(&mut self, key: &str, values: &[&[u8]], now: Instant) -> StoreResult<u64> {
        let create = !values.is_empty();
        match self.list_mut("push", key, now, create)? {
            Some(l) => {
                l.extend(values.iter().map(|v| v.to_vec()));
                Ok(l.len() as u64)
            }
            None => Ok(0),
        }
    }

    fn xadd(
        &mut self,
        stream: &str,
        fields: &[(&[u8], &[u8])],
        trim: Option<&Trim>,
        now: Instant,
    ) -> StoreResult<EntryId> {
        if fields.is_empty() {
            return Err(StoreError::InvalidArgument {
                op: "xadd",
                message: format!("entry for stream {stream:?} has no fields"),
            });
        }
        if let Some(Trim::MinId(id)) = trim {
            strict_id("xadd", id)?;
        }
        let s = self
            .stream_mut("xadd", stream, now, true)?
            .ok_or_else(|| wrong_type("xadd", stream))?;
        let ms = unix_millis();
        let id = if ms > s.last_id.ms {
            Id { ms, seq: 0 }
        } else {
            s.last_id.next().ok_or_else(|| StoreError::Other {
                op: "xadd",
                message: format!("stream {stream:?} has exhausted its id space"),
            })?
        };
        s.last_id = id;
        let fields = fields
            .iter()
            .map(|(f, v)| (f.to_vec(), v.to_vec()))
            .collect();
        s.entries.insert(id, fields);
        if let Some(trim) = trim {
            s.trim(trim, "xadd")?;
        }
        Ok(id.to_string())
    }

    fn xack(
        &mut self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        now: Instant,
    ) -> StoreResult<u64> {
        let ids = ids
            .iter()
            .map(|id| strict_id("xack", id))
            .collect::<StoreResult<Vec<_>>>()?;
        let Some(s) = self.stream_mut("xack", stream, now, false)? else {
            return Ok(0);
        };
        let Some(g) = s.groups.get_mut(group) else {
            return Ok(0);
        };
        Ok(ids.iter().filter(|id| g.pel.remove(id).is_some()).count() as u64)
    }

    fn xdel(&mut self, stream: &str, ids: &[EntryId], now: Instant) -> StoreResult<u64> {
        let ids = ids
            .iter()
            .map(|id| strict_id("xdel", id))
            .collect::<StoreResult<Vec<_>>>()?;
        let Some(s) = self.stream_mut("xdel", stream, now, false)? else {
            return Ok(0);
        };
        Ok(ids
            .iter()
            .filter(|id| s.entries.remove(id).is_some())
            .count() as u64)
    }

    fn write(&mut self, w: &Write, now: Instant) -> StoreResult<bool> {
        let mut appended = false;
        match w {
            Write::Set { key, value, ttl } => self.set(key, value, *ttl, now),
            Write::Del { key } => {
                self.del(std::slice::from_ref(key), now);
            }
            Write::HSet { key, fields } => {
                let fields: Vec<(&str, &[u8])> = fields
                    .iter()
                    .map(|(f, v)| (f.as_str(), v.as_slice()))
                    .collect();
                self.hset(key, &fields, now)?;
            }
            Write::Push { key, values } => {
                let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                self.push(key, &values, now)?;
            }
            Write::XAdd {
                stream,
                fields,
                trim,
            } => {
                let fields: Vec<(&[u8], &[u8])> = fields
                    .iter()
                    .map(|(f, v)| (f.as_slice(), v.as_slice()))
                    .collect();
                self.xadd(stream, &fields, trim.as_ref(), now)?;
                appended = true;
            }
            Write::XAck { stream, group, ids } => {
                self.xack(stream, group, ids, now)?;
            }
            Write::XDel { stream, ids } => {
                self.xdel(stream, ids, now)?;
            }
            Write::Expire { key, ttl } => {
                self.expire(key, *ttl, now);
            }
            Write::ZAdd { key, member, score } => {
                self.sorted_mut("apply(zadd)", key, now, true)?
                    .ok_or_else(|| wrong_type("apply(zadd)", key))?
                    .add(member, *score);
            }
            Write::ZRem { key, member } => {
                if let Some(z) = self.sorted_mut("apply(zrem)", key, now, false)? {
                    z.remove(member);
                }
                self.drop_if_empty_sorted(key);
            }
            Write::ZRemBelow { key, below } => {
                if let Some(z) = self.sorted_mut("apply(zremrangebyscore)", key, now, false)? {
                    z.remove_below(*below);
                }
                self.drop_if_empty_sorted(key);
            }
            Write::Persist { key } => {
                if let Some(e) = self.live(key, now) {
                    e.expires_at = None;
                }
            }
            Write::HIncrBy { key, field, delta } => {
                self.hincr_by(key, field, *delta, now)?;
            }
        }
        Ok(appended)
    }

    fn hincr_by(&mut self, key: &str, field: &str, delta: i64, now: Instant) -> StoreResult<i64> {
        let h = self
            .hash_mut("hincr_by", key, now, true)?
            .ok_or_else(|| wrong_type("hincr_by", key))?;
        let not_integer = || StoreError::NotInteger {
            op: "hincr_by",
            key: key.to_owned(),
        };
        let current = match h.get(field) {
            None => 0,
            Some(b) => parse_int(b).ok_or_else(not_integer)?,
        };
        let next = current.checked_add(delta).ok_or_else(not_integer)?;
        h.insert(field.to_owned(), next.to_string().into_bytes());
        Ok(next)
    }

    // ---- stream reads ----------------------------------------------------------------------

    fn xread(
        &mut self,
        stream: &str,
        after: Id,
        count: usize,
        now: Instant,
    ) -> StoreResult<Vec<StreamEntry>> {
        let Some(s) = self.stream_mut("xread", stream, now, false)? else {
            return Ok(Vec::new());
        };
        let Some(from) = after.next() else {
            return Ok(Vec::new());
        };
        Ok(s.entries
            .range(from..)
            .take(count)
            .map(|(id, fields)| StreamEntry {
                id: id.to_string(),
                fields: fields.clone(),
            })
            .collect())
    }

    fn xreadgroup(
        &mut self,
        read: &GroupRead<'_>,
        from_pending: Option<Id>,
        now: Instant,
    ) -> StoreResult<Vec<StreamEntry>> {
        let count = if read.count == 0 {
            usize::MAX
        } else {
            read.count
        };
        let (g, entries) = self.group_mut("xreadgroup", read.stream, read.group, now)?;
        g.consumers.insert(read.consumer.to_owned(), now);
        let mut out = Vec::new();
        match from_pending {
            None => {
                let Some(from) = g.last_delivered.next() else {
                    return Ok(out);
                };
                for (id, fields) in entries.range(from..).take(count) {
                    g.last_delivered = *id;
                    g.pel.insert(
                        *id,
                        Pending {
                            consumer: read.consumer.to_owned(),
                            delivered_at: now,
                            deliveries: 1,
                        },
                    );
                    out.push(StreamEntry {
                        id: id.to_string(),
                        fields: fields.clone(),
                    });
                }
            }
            Some(after) => {
                let Some(from) = after.next() else {
                    return Ok(out);
                };
                let mine = g
                    .pel
                    .range_mut(from..)
                    .filter(|(_, p)| p.consumer == read.consumer)
                    .take(count);
                for (id, p) in mine {
                    p.delivered_at = now;
                    p.deliveries += 1;
                    // Entries trimmed while pending are skipped here; XAUTOCLAIM reports them.
                    if let Some(fields) = entries.get(id) {
                        out.push(StreamEntry {
                            id: id.to_string(),
                            fields: fields.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---- the trait -------------------------------------------------------------------------------

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut keys = self.lock();
        Ok(keys.bytes("get", key, Instant::now())?.map(<[u8]>::to_vec))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let mut ks = self.lock();
        let now = Instant::now();
        // Like MGET: a key of another kind reads as missing.
        Ok(keys
            .iter()
            .map(|k| {
                ks.bytes("get_many", k, now)
                    .ok()
                    .flatten()
                    .map(<[u8]>::to_vec)
            })
            .collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.lock().set(key, value, ttl, Instant::now());
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        if keys.live(key, now).is_some() {
            return Ok(false);
        }
        keys.set(key, value, ttl, now);
        Ok(true)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        let current = keys.bytes("compare_and_set", key, now)?;
        if current != expected {
            return Ok(false);
        }
        match new {
            Some(v) => keys.set(key, v, ttl, now),
            None => {
                keys.map.remove(key);
            }
        }
        Ok(true)
    }

    async fn del(&self, keys: &[String]) -> StoreResult<u64> {
        Ok(self.lock().del(keys, Instant::now()))
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(self.lock().live(key, Instant::now()).is_some())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        Ok(self.lock().expire(key, ttl, Instant::now()))
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        let mut keys = self.lock();
        let now = Instant::now();
        Ok(keys
            .live(key, now)
            .and_then(|e| e.expires_at)
            .map(|at| at.saturating_duration_since(now)))
    }

    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64> {
        let mut keys = self.lock();
        let now = Instant::now();
        let not_integer = || StoreError::NotInteger {
            op: "incr_by",
            key: key.to_owned(),
        };
        let current = match keys.bytes("incr_by", key, now)? {
            None => 0,
            Some(b) => parse_int(b).ok_or_else(not_integer)?,
        };
        let next = current.checked_add(delta).ok_or_else(not_integer)?;
        let bytes = next.to_string().into_bytes();
        match keys.live(key, now) {
            // Keeps the TTL, like INCRBY.
            Some(e) => e.value = Value::Bytes(bytes),
            None => {
                keys.map
                    .insert(key.to_owned(), Entry::new(Value::Bytes(bytes)));
            }
        }
        Ok(next)
    }

    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut keys = self.lock();
        let now = Instant::now();
        keys.map
            .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
        let mut out: Vec<String> = keys
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        out.sort();
        Ok(out)
    }

    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        match keys.bytes("acquire_lease", key, now)? {
            None => {
                keys.set(key, owner.as_bytes(), Some(ttl), now);
                Ok(true)
            }
            Some(holder) if holder == owner.as_bytes() => Ok(keys.expire(key, ttl, now)),
            Some(_) => Ok(false),
        }
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        match keys.bytes("renew_lease", key, now)? {
            Some(holder) if holder == owner.as_bytes() => Ok(keys.expire(key, ttl, now)),
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        match keys.bytes("release_lease", key, now)? {
            Some(holder) if holder == owner.as_bytes() => {
                keys.map.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()> {
        self.lock().hset(key, fields, Instant::now())
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut keys = self.lock();
        Ok(keys
            .hash_mut("hget", key, Instant::now(), false)?
            .and_then(|h| h.get(field).cloned()))
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut keys = self.lock();
        Ok(keys
            .hash_mut("hgetall", key, Instant::now(), false)?
            .map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64> {
        let mut keys = self.lock();
        let Some(h) = keys.hash_mut("hdel", key, Instant::now(), false)? else {
            return Ok(0);
        };
        let n = fields.iter().filter(|f| h.remove(**f).is_some()).count() as u64;
        if h.is_empty() {
            // Redis removes a hash with no fields left.
            keys.map.remove(key);
        }
        Ok(n)
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64> {
        self.lock().hincr_by(key, field, delta, Instant::now())
    }

    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
        self.lock().push(key, values, Instant::now())
    }

    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>> {
        let mut keys = self.lock();
        let Some(l) = keys.list_mut("range", key, Instant::now(), false)? else {
            return Ok(Vec::new());
        };
        Ok(lrange(l, start, stop).to_vec())
    }

    async fn len(&self, key: &str) -> StoreResult<u64> {
        let mut keys = self.lock();
        Ok(keys
            .list_mut("len", key, Instant::now(), false)?
            .map_or(0, |l| l.len() as u64))
    }

    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>> {
        let mut keys = self.keys.lock();
        let Some(z) = keys.sorted_mut("zrevrange", key, Instant::now(), false)? else {
            return Ok(Vec::new());
        };
        let (start, stop) = (
            usize::try_from(start).unwrap_or(usize::MAX),
            usize::try_from(stop).unwrap_or(usize::MAX),
        );
        if start > stop {
            return Ok(Vec::new());
        }
        Ok(z.order
            .iter()
            .rev()
            .skip(start)
            .take(stop - start + 1)
            .map(|(_, member)| member.clone())
            .collect())
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        let mut keys = self.keys.lock();
        Ok(keys
            .sorted_mut("zcard", key, Instant::now(), false)?
            .map_or(0, |z| z.scores.len() as u64))
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
        let mut keys = self.lock();
        Ok(keys
            .stream_mut("xlen", stream, Instant::now(), false)?
            .map_or(0, |s| s.entries.len() as u64))
    }

    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>> {
        let (start, end) = (range_start("xrange", start)?, range_end("xrange", end)?);
        let mut keys = self.lock();
        let Some(s) = keys.stream_mut("xrange", stream, Instant::now(), false)? else {
            return Ok(Vec::new());
        };
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        Ok(s.entries
            .range(start..=end)
            .take(count.unwrap_or(usize::MAX))
            .map(|(id, _)| s.entry(*id))
            .collect())
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
            let mut keys = self.lock();
            keys.stream_mut("xread", stream, Instant::now(), false)?
                .map_or(Id::MIN, |s| s.last_id)
        } else {
            strict_id("xread", after)?
        };
        let deadline = block.map(|b| Instant::now() + Duration::from_millis(block_millis(b)));
        self.read_blocking(deadline, |keys, now| keys.xread(stream, after, count, now))
            .await
    }

    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool> {
        let start = match start {
            "$" => None,
            id => Some(strict_id("xgroup_create", id)?),
        };
        let mut keys = self.lock();
        let s = keys
            .stream_mut("xgroup_create", stream, Instant::now(), true)?
            .ok_or_else(|| wrong_type("xgroup_create", stream))?;
        let last_delivered = start.unwrap_or(s.last_id);
        if s.groups.contains_key(group) {
            return Ok(false);
        }
        s.groups.insert(
            group.to_owned(),
            Group {
                last_delivered,
                pel: BTreeMap::new(),
                consumers: BTreeMap::new(),
            },
        );
        Ok(true)
    }

    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>> {
        let (from_pending, deadline) = match &read.from {
            ReadFrom::New => (
                None,
                read.block
                    .map(|b| Instant::now() + Duration::from_millis(block_millis(b))),
            ),
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
        let mut keys = self.lock();
        let (g, _) = keys.group_mut("xpending", stream, group, Instant::now())?;
        let mut consumers: BTreeMap<&str, u64> = BTreeMap::new();
        for p in g.pel.values() {
            *consumers.entry(p.consumer.as_str()).or_default() += 1;
        }
        Ok(PendingSummary {
            count: g.pel.len() as u64,
            lowest: g.pel.keys().next().map(Id::to_string),
            highest: g.pel.keys().next_back().map(Id::to_string),
            consumers: consumers
                .into_iter()
                .map(|(c, n)| (c.to_owned(), n))
                .collect(),
        })
    }

    async fn xpending_range(
        &self,
        stream: &str,
        group: &str,
        start: &str,
        end: &str,
        count: usize,
        consumer: Option<&str>,
    ) -> StoreResult<Vec<PendingEntry>> {
        let op = "xpending_range";
        let (start, end) = (range_start(op, start)?, range_end(op, end)?);
        let mut keys = self.lock();
        let now = Instant::now();
        let (g, _) = keys.group_mut(op, stream, group, now)?;
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        Ok(g.pel
            .range(start..=end)
            .filter(|(_, p)| consumer.is_none_or(|c| p.consumer == c))
            .take(count)
            .map(|(id, p)| PendingEntry {
                id: id.to_string(),
                consumer: p.consumer.clone(),
                idle: now.saturating_duration_since(p.delivered_at),
                deliveries: p.deliveries,
            })
            .collect())
    }

    async fn xautoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> StoreResult<AutoClaim> {
        let op = "xautoclaim";
        if count == 0 {
            return Err(StoreError::InvalidArgument {
                op,
                message: "count must be at least 1".into(),
            });
        }
        let start = range_start(op, start)?;
        let mut keys = self.lock();
        let now = Instant::now();
        let (g, entries) = keys.group_mut(op, stream, group, now)?;
        g.consumers.insert(consumer.to_owned(), now);
        let mut result = AutoClaim {
            next: Id::MIN.to_string(),
            ..AutoClaim::default()
        };
        let Some(start) = start else {
            return Ok(result);
        };
        // As Redis: scan at most 10 * count pending entries, claim at most `count`.
        let mut attempts = count.saturating_mul(10);
        let mut left = count;
        let ids: Vec<Id> = g.pel.range(start..).map(|(id, _)| *id).collect();
        let mut scanned = 0;
        for id in &ids {
            if attempts == 0 || left == 0 {
                break;
            }
            attempts -= 1;
            scanned += 1;
            if !entries.contains_key(id) {
                g.pel.remove(id);
                result.deleted.push(id.to_string());
                continue;
            }
            let Some(p) = g.pel.get_mut(id) else {
                continue;
            };
            if now.saturating_duration_since(p.delivered_at) < min_idle {
                continue;
            }
            p.consumer = consumer.to_owned();
            p.delivered_at = now;
            p.deliveries += 1;
            left -= 1;
            result.claimed.push(StreamEntry {
                id: id.to_string(),
                fields: entries.get(id).cloned().unwrap_or_default(),
            });
        }
        if let Some(next) = ids.get(scanned) {
            result.next = next.to_string();
        }
        Ok(result)
    }

    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>> {
        let op = "xclaim_touch";
        let ids = ids
            .iter()
            .map(|id| strict_id(op, id))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut keys = self.lock();
        let now = Instant::now();
        let (g, _) = keys.group_mut(op, stream, group, now)?;
        g.consumers.insert(consumer.to_owned(), now);
        let mut touched = Vec::new();
        for id in ids {
            if let Some(p) = g.pel.get_mut(&id) {
                p.consumer = consumer.to_owned();
                p.delivered_at = now;
                touched.push(id.to_string());
            }
        }
        Ok(touched)
    }

    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        let mut keys = self.lock();
        let Some(s) = keys.stream_mut("xgroups", stream, Instant::now(), false)? else {
            return Ok(Vec::new());
        };
        let mut groups: Vec<GroupInfo> = s
            .groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                consumers: g.consumers.len() as u64,
                pending: g.pel.len() as u64,
                last_delivered: g.last_delivered.to_string(),
                lag: Some(
                    s.entries
                        .keys()
                        .rev()
                        .take_while(|id| **id > g.last_delivered)
                        .count() as u64,
                ),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        let mut keys = self.lock();
        let now = Instant::now();
        let (g, _) = keys.group_mut("xconsumers", stream, group, now)?;
        Ok(g.consumers
            .iter()
            .map(|(name, seen)| ConsumerInfo {
                name: name.clone(),
                pending: g.pel.values().filter(|p| &p.consumer == name).count() as u64,
                idle: now.saturating_duration_since(*seen),
            })
            .collect())
    }

    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool> {
        let mut keys = self.lock();
        let now = Instant::now();
        let (g, _) = keys.group_mut("xdelconsumer_idle", stream, group, now)?;
        let Some(seen) = g.consumers.get(consumer) else {
            return Ok(false);
        };
        let idle = now.saturating_duration_since(*seen);
        if idle < min_idle || g.pel.values().any(|p| p.consumer == consumer) {
            return Ok(false);
        }
        g.consumers.remove(consumer);
        Ok(true)
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64> {
        if let Trim::MinId(id) = &trim {
            strict_id("xtrim", id)?;
        }
        let mut keys = self.lock();
        match keys.stream_mut("xtrim", stream, Instant::now(), false)? {
            Some(s) => s.trim(&trim, "xtrim"),
            None => Ok(0),
        }
    }

    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()> {
        check_writes(&writes)?;
        let mut first_error = None;
        let mut appended = false;
        {
            let mut keys = self.lock();
            let now = Instant::now();
            // Like MULTI/EXEC: a failing write does not stop the others; its error is returned.
            for w in &writes {
                match keys.write(w, now) {
                    Ok(a) => appended |= a,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if appended {
            self.appended.notify_waiters();
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn rate_limit(
        &self,
        key: &str,
        request: super::RateLimit,
    ) -> StoreResult<super::RateOutcome> {
        use super::micros::{self, Micros, MicrosAlgorithm};
        // The same arithmetic as the Redis scripts, in the same microsecond units.
        let params = Micros::new(&request)?;
        let not_integer = || StoreError::NotInteger {
            op: "rate_limit",
            key: key.to_owned(),
        };
        let mut keys = self.lock();
        let now = Instant::now();
        let outcome = match params.algorithm {
            MicrosAlgorithm::Gcra(gcra) => {
                let now_us = micros::micros_since_base(now);
                let tat = match keys.bytes("rate_limit", key, now)? {
                    None => None,
                    Some(b) => Some(parse_int(b).ok_or_else(not_integer)?),
                };
                let ahead = tat.map_or(0, |t| u64::try_from(t.saturating_sub(now_us)).unwrap_or(0));
                let (outcome, next) = gcra.step(ahead, params.op);
                if next != ahead {
                    if next == 0 {
                        keys.map.remove(key);
                    } else {
                        let tat = now_us.saturating_add(i64::try_from(next).unwrap_or(i64::MAX));
                        let entry = Entry {
                            value: Value::Bytes(tat.to_string().into_bytes()),
                            expires_at: Some(now + Duration::from_micros(next)),
                        };
                        keys.insert(key, entry);
                    }
                }
                outcome
            }
            MicrosAlgorithm::Window(window) => {
                let now_us = micros::unix_micros();
                let state = match keys.hash_mut("rate_limit", key, now, false)? {
                    None => None,
                    Some(h) => Some(
                        micros::window_from_fields(|f| h.get(f).and_then(|v| parse_int(v)))
                            .ok_or_else(not_integer)?,
                    ),
                };
                let (outcome, next) = window.step(state, now_us, params.op);
                let peek = matches!(params.op, crate::rate::gcra::Op::Peek { .. });
                match next {
                    _ if peek => {}
                    None => {
                        keys.map.remove(key);
                    }
                    Some(state) => {
                        let fields = micros::window_fields(&state)
                            .into_iter()
                            .map(|(f, v)| (f.to_owned(), v.into_bytes()))
                            .collect();
                        let entry = Entry {
                            value: Value::Hash(fields),
                            expires_at: Some(now + Duration::from_micros(outcome.reset_after)),
                        };
                        keys.insert(key, entry);
                    }
                }
                outcome
            }
        };
        Ok(micros::outcome_from_micros(outcome))
    }
}

/// The slice `LRANGE start stop` returns.
fn lrange(list: &[Vec<u8>], start: i64, stop: i64) -> &[Vec<u8>] {
    let len = i64::try_from(list.len()).unwrap_or(i64::MAX);
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return &[];
    }
    // 0 <= start <= stop < len here.
    let (start, stop) = (
        usize::try_from(start).unwrap_or(0),
        usize::try_from(stop).unwrap_or(0),
    );
    &list[start..=stop]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrange_follows_redis_index_rules() {
        let list: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
        let check = |start, stop, expected: &[u8]| {
            let got: Vec<u8> = lrange(&list, start, stop).iter().map(|v| v[0]).collect();
            assert_eq!(got, expected, "LRANGE {start} {stop}");
        };
        check(0, -1, &[0, 1, 2, 3, 4]);
        check(1, 2, &[1, 2]);
        check(-2, -1, &[3, 4]);
        check(-100, 1, &[0, 1]);
        check(3, 100, &[3, 4]);
        check(5, 10, &[]);
        check(2, 1, &[]);
        check(0, -6, &[]);
        check(-1, -1, &[4]);
        assert!(lrange(&[], 0, -1).is_empty());
    }

    #[test]
    fn ids_parse_like_redis() {
        assert_eq!(Id::parse("5-3", 0), Some(Id { ms: 5, seq: 3 }));
        assert_eq!(Id::parse("5", 7), Some(Id { ms: 5, seq: 7 }));
        for bad in ["", "-", "a-1", "1-", "1-b", "-1", "1-2-3", "+1"] {
            assert_eq!(Id::parse(bad, 0), None, "{bad:?}");
        }
        assert_eq!(
            range_start("t", "(5-3").ok().flatten(),
            Some(Id { ms: 5, seq: 4 })
        );
        assert_eq!(
            range_end("t", "(5-0").ok().flatten(),
            Some(Id {
                ms: 4,
                seq: u64::MAX
            })
        );
        assert_eq!(
            range_end("t", "5").ok().flatten(),
            Some(Id {
                ms: 5,
                seq: u64::MAX
            })
        );
    }

    #[test]
    fn integers_are_canonical() {
        assert_eq!(parse_int(b"-12"), Some(-12));
        for bad in [&b"+1"[..], b"01", b" 1", b"1.0", b"", b"-0"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
