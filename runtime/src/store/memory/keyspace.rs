//! The memory store's keyspace: every key with its [`Entry`], expiry (on access, and active
//! through a queue of keys by expiry time), and the commands that work on keys of any kind
//! (`DEL`, `EXISTS`, `PEXPIRE`, `PTTL`, `PERSIST`, listing by prefix).
//!
//! The typed accessors (a key as a hash, a list, a stream, ...) live with their data type;
//! each checks the kind and answers [`StoreError::WrongType`] for another one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::Entry;
use crate::store::args::ttl_millis;
use crate::store::StoreError;

#[derive(Debug, Default)]
pub(super) struct Keyspace {
    pub(super) map: HashMap<String, Entry, foldhash::fast::RandomState>,
    /// Keys by the expiry time they were given, soonest first. An entry whose key was
    /// deleted or given another TTL since is skipped when it comes up; the queue is rebuilt
    /// from `map` when such entries outnumber the keys.
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

pub(super) fn wrong_type(op: &'static str, key: &str) -> StoreError {
    StoreError::WrongType {
        op,
        key: key.to_owned(),
    }
}

/// Parses an integer the way Redis does: canonical decimal only (no `+`, spaces or leading
/// zeros).
pub(super) fn parse_int(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
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
    pub(super) fn insert(&mut self, key: &str, entry: Entry) {
        if let Some(at) = entry.expires_at {
            self.track(key, at);
        }
        self.map.insert(key.to_owned(), entry);
    }

    /// Active expiry: frees up to `budget` keys whose expiry time has passed.
    pub(super) fn sweep(&mut self, now: Instant, budget: usize) {
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
    pub(super) fn expire_stale(&mut self, key: &str, now: Instant) {
        let stale = self
            .map
            .get(key)
            .is_some_and(|e| e.expires_at.is_some_and(|at| at <= now));
        if stale {
            self.map.remove(key);
        }
    }

    pub(super) fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        self.expire_stale(key, now);
        self.map.get_mut(key)
    }

    // ---- commands on keys of any kind ------------------------------------------------------

    pub(super) fn del(&mut self, keys: &[String], now: Instant) -> u64 {
        let mut n = 0;
        for key in keys {
            self.expire_stale(key, now);
            if self.map.remove(key).is_some() {
                n += 1;
            }
        }
        n
    }

    pub(super) fn exists(&mut self, key: &str, now: Instant) -> bool {
        self.live(key, now).is_some()
    }

    pub(super) fn expire(&mut self, key: &str, ttl: Duration, now: Instant) -> bool {
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

    pub(super) fn persist(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.live(key, now) {
            e.expires_at = None;
        }
    }

    pub(super) fn ttl(&mut self, key: &str, now: Instant) -> Option<Duration> {
        self.live(key, now)
            .and_then(|e| e.expires_at)
            .map(|at| at.saturating_duration_since(now))
    }

    pub(super) fn keys_with_prefix(&mut self, prefix: &str, now: Instant) -> Vec<String> {
        self.map
            .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
        let mut out: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_canonical() {
        assert_eq!(parse_int(b"-12"), Some(-12));
        for bad in [&b"+1"[..], b"01", b" 1", b"1.0", b"", b"-0"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
