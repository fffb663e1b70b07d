//! String values in the memory store: `GET`/`MGET`/`SET`/`SET NX`, compare-and-set, `INCRBY`,
//! and the leases built on them (a value holding its owner, with a TTL).

use std::time::Duration;

use tokio::time::Instant;

use super::keyspace::{parse_int, wrong_type, Keyspace};
use super::{Entry, Value};
use crate::store::args::ttl_millis;
use crate::store::{StoreError, StoreResult};

impl Keyspace {
    /// `key` as a string value.
    pub(super) fn bytes(
        &mut self,
        op: &'static str,
        key: &str,
        now: Instant,
    ) -> StoreResult<Option<&[u8]>> {
        match self.live(key, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b.as_slice())),
            Some(_) => Err(wrong_type(op, key)),
        }
    }

    pub(super) fn get(&mut self, key: &str, now: Instant) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.bytes("get", key, now)?.map(<[u8]>::to_vec))
    }

    pub(super) fn get_many(&mut self, keys: &[String], now: Instant) -> Vec<Option<Vec<u8>>> {
        // Like MGET: a key of another kind reads as missing.
        keys.iter()
            .map(|k| {
                self.bytes("get_many", k, now)
                    .ok()
                    .flatten()
                    .map(<[u8]>::to_vec)
            })
            .collect()
    }

    pub(super) fn set(&mut self, key: &str, value: &[u8], ttl: Option<Duration>, now: Instant) {
        let entry = Entry {
            value: Value::Bytes(value.to_vec()),
            expires_at: ttl.map(|t| now + Duration::from_millis(ttl_millis(t))),
        };
        self.insert(key, entry);
    }

    pub(super) fn set_nx(
        &mut self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        now: Instant,
    ) -> bool {
        if self.live(key, now).is_some() {
            return false;
        }
        self.set(key, value, ttl, now);
        true
    }

    pub(super) fn compare_and_set(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> StoreResult<bool> {
        let current = self.bytes("compare_and_set", key, now)?;
        if current != expected {
            return Ok(false);
        }
        match new {
            Some(v) => self.set(key, v, ttl, now),
            None => {
                self.map.remove(key);
            }
        }
        Ok(true)
    }

    pub(super) fn incr_by(&mut self, key: &str, delta: i64, now: Instant) -> StoreResult<i64> {
        let not_integer = || StoreError::NotInteger {
            op: "incr_by",
            key: key.to_owned(),
        };
        let current = match self.bytes("incr_by", key, now)? {
            None => 0,
            Some(b) => parse_int(b).ok_or_else(not_integer)?,
        };
        let next = current.checked_add(delta).ok_or_else(not_integer)?;
        let bytes = next.to_string().into_bytes();
        match self.live(key, now) {
            // Keeps the TTL, like INCRBY.
            Some(e) => e.value = Value::Bytes(bytes),
            None => {
                self.map
                    .insert(key.to_owned(), Entry::new(Value::Bytes(bytes)));
            }
        }
        Ok(next)
    }

    // ---- leases ----------------------------------------------------------------------------

    /// Acquires or renews (`claim`) `owner`'s lease on `key` for `ttl`: a lease `owner` holds
    /// is extended; a free one is taken only when acquiring. Whether `owner` holds it now.
    pub(super) fn claim_lease(
        &mut self,
        claim: LeaseClaim,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Instant,
    ) -> StoreResult<bool> {
        match self.bytes(claim.op(), key, now)? {
            None if claim == LeaseClaim::Acquire => {
                self.set(key, owner.as_bytes(), Some(ttl), now);
                Ok(true)
            }
            Some(holder) if holder == owner.as_bytes() => Ok(self.expire(key, ttl, now)),
            _ => Ok(false),
        }
    }

    pub(super) fn release_lease(
        &mut self,
        key: &str,
        owner: &str,
        now: Instant,
    ) -> StoreResult<bool> {
        match self.bytes("release_lease", key, now)? {
            Some(holder) if holder == owner.as_bytes() => {
                self.map.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// How [`Keyspace::claim_lease`] treats a free lease: [`Store::acquire_lease`] takes it,
/// [`Store::renew_lease`] does not.
///
/// [`Store::acquire_lease`]: crate::store::Store::acquire_lease
/// [`Store::renew_lease`]: crate::store::Store::renew_lease
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseClaim {
    /// Take the lease if it is free.
    Acquire,
    /// Only extend a lease the owner holds.
    Renew,
}

impl LeaseClaim {
    /// The store operation, as errors name it.
    fn op(self) -> &'static str {
        match self {
            LeaseClaim::Acquire => "acquire_lease",
            LeaseClaim::Renew => "renew_lease",
        }
    }
}
