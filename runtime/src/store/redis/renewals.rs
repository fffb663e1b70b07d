//! What this store renewed or pruned lately: the memory behind
//! [`Write::Renew`](crate::store::Write::Renew) and [`Write::Prune`](crate::store::Write::Prune).
//! A key renewed (pruned) less than [`RENEW_EVERY`] ago is not renewed (pruned) again; only
//! those sent in a batch that succeeded count. It holds at most [`MAX_KEYS`] keys (forgetting
//! them all when full, which only means renewing them once more).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::RENEW_EVERY;

const MAX_KEYS: usize = 4096;

/// What was done to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Slot {
    /// Its expiry renewed.
    Expiry,
    /// Its members below a score dropped.
    Prune,
}

#[derive(Debug, Default)]
pub(super) struct Renewals {
    last: Mutex<HashMap<(Slot, String), Instant>>,
}

impl Renewals {
    /// Whether `slot` of `key` is to be done now (for a renewal, to `ttl`; a prune passes
    /// `Duration::MAX`); if so, it counts as done at `now`.
    pub(super) fn due(&self, slot: Slot, key: &str, ttl: Duration, now: Instant) -> bool {
        if ttl <= RENEW_EVERY * 2 {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (slot, key.to_owned());
        if let Some(at) = last.get(&id) {
            if now.saturating_duration_since(*at) < RENEW_EVERY {
                return false;
            }
        }
        if last.len() >= MAX_KEYS && !last.contains_key(&id) {
            last.clear();
        }
        last.insert(id, now);
        true
    }

    /// Forgets what `done` says was done (their batch failed).
    pub(super) fn forget(&self, done: &[(Slot, String)]) {
        if done.is_empty() {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for id in done {
            last.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_renewed_once_a_second_unless_its_batch_failed_or_its_ttl_is_short() {
        let r = Renewals::default();
        let t0 = Instant::now();
        let day = Duration::from_secs(86_400);
        let ms = Duration::from_millis;
        assert!(r.due(Slot::Expiry, "results", day, t0));
        assert!(!r.due(Slot::Expiry, "results", day, t0 + ms(500)));
        assert!(r.due(Slot::Prune, "results", Duration::MAX, t0 + ms(500)));
        assert!(!r.due(Slot::Prune, "results", Duration::MAX, t0 + ms(600)));
        assert!(r.due(Slot::Expiry, "other", day, t0 + ms(500)));
        r.forget(&[(Slot::Expiry, "other".to_owned())]);
        assert!(r.due(Slot::Expiry, "other", day, t0 + ms(600)));
        assert!(r.due(Slot::Expiry, "results", day, t0 + RENEW_EVERY));
        let short = Duration::from_secs(2);
        assert!(r.due(Slot::Expiry, "brief", short, t0));
        assert!(
            r.due(Slot::Expiry, "brief", short, t0),
            "a short TTL is always renewed"
        );
    }
}
