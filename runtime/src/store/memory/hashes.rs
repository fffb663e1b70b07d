//! Hashes in the memory store: `HSET`, `HGET`, `HGETALL`, `HDEL`, `HINCRBY`, with fields kept
//! sorted by name.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::keyspace::{parse_int, wrong_type, Keyspace};
use super::{Entry, Value};
use crate::store::{StoreError, StoreResult};

impl Keyspace {
    /// `key` as a hash, created empty first if `create` and it does not exist.
    pub(super) fn hash_mut(
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

    pub(super) fn hset(
        &mut self,
        key: &str,
        fields: &[(&str, &[u8])],
        now: Instant,
    ) -> StoreResult<()> {
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

    pub(super) fn hget(
        &mut self,
        key: &str,
        field: &str,
        now: Instant,
    ) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .hash_mut("hget", key, now, false)?
            .and_then(|h| h.get(field).cloned()))
    }

    pub(super) fn hgetall(
        &mut self,
        key: &str,
        now: Instant,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self
            .hash_mut("hgetall", key, now, false)?
            .map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    pub(super) fn hdel(&mut self, key: &str, fields: &[&str], now: Instant) -> StoreResult<u64> {
        let Some(h) = self.hash_mut("hdel", key, now, false)? else {
            return Ok(0);
        };
        let n = fields.iter().filter(|f| h.remove(**f).is_some()).count() as u64;
        if h.is_empty() {
            // Redis removes a hash with no fields left.
            self.map.remove(key);
        }
        Ok(n)
    }

    pub(super) fn hincr_by(
        &mut self,
        key: &str,
        field: &str,
        delta: i64,
        now: Instant,
    ) -> StoreResult<i64> {
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
}
