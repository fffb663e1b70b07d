//! Sorted sets in the memory store: the [`Sorted`] structure (members by score, ties by
//! member bytes) and `ZADD`, `ZREM`, `ZREMRANGEBYSCORE`, `ZREVRANGE`, `ZCARD`.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

use super::keyspace::{wrong_type, Keyspace};
use super::{Entry, Value};
use crate::store::StoreResult;

/// A sorted set: members by score, ties by member bytes (as Redis orders them).
#[derive(Debug, Default)]
pub(super) struct Sorted {
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

impl Keyspace {
    /// `key` as a sorted set, created empty first if `create` and it does not exist.
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

    /// `ZADD key score member` (a write of a batch).
    pub(super) fn zadd(
        &mut self,
        key: &str,
        member: &[u8],
        score: i64,
        now: Instant,
    ) -> StoreResult<()> {
        self.sorted_mut("apply(zadd)", key, now, true)?
            .ok_or_else(|| wrong_type("apply(zadd)", key))?
            .add(member, score);
        Ok(())
    }

    /// `ZREM key member` (a write of a batch).
    pub(super) fn zrem(&mut self, key: &str, member: &[u8], now: Instant) -> StoreResult<()> {
        if let Some(z) = self.sorted_mut("apply(zrem)", key, now, false)? {
            z.remove(member);
        }
        self.drop_if_empty_sorted(key);
        Ok(())
    }

    /// `ZREMRANGEBYSCORE key -inf (below` (a write of a batch).
    pub(super) fn zrem_below(&mut self, key: &str, below: i64, now: Instant) -> StoreResult<()> {
        if let Some(z) = self.sorted_mut("apply(zremrangebyscore)", key, now, false)? {
            z.remove_below(below);
        }
        self.drop_if_empty_sorted(key);
        Ok(())
    }

    pub(super) fn zrevrange(
        &mut self,
        key: &str,
        start: u64,
        stop: u64,
        now: Instant,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let Some(z) = self.sorted_mut("zrevrange", key, now, false)? else {
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
            .take((stop - start).saturating_add(1))
            .map(|(_, member)| member.clone())
            .collect())
    }

    pub(super) fn zcard(&mut self, key: &str, now: Instant) -> StoreResult<u64> {
        Ok(self
            .sorted_mut("zcard", key, now, false)?
            .map_or(0, |z| z.scores.len() as u64))
    }
}
