//! What this store renewed lately: the memory behind [`Write::Renew`](crate::store::Write::Renew).
//! A key renewed less than [`RENEW_EVERY`] ago is not renewed again; only renewals sent in a
//! batch that succeeded count. It holds at most [`MAX_KEYS`] keys (forgetting them all when
//! full, which only means renewing them once more).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::RENEW_EVERY;

const MAX_KEYS: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct Renewals {
    last: Mutex<HashMap<String, Instant>>,
}

impl Renewals {
    /// Whether `key` is to be renewed to `ttl` now; if so, it counts as renewed at `now`.
    pub(super) fn due(&self, key: &str, ttl: Duration, now: Instant) -> bool {
        if ttl <= RENEW_EVERY * 2 {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = last.get(key) {
            if now.saturating_duration_since(*at) < RENEW_EVERY {
                return false;
            }
        }
        if last.len() >= MAX_KEYS && !last.contains_key(key) {
            last.clear();
        }
        last.insert(key.to_owned(), now);
        true
    }

    /// Forgets `keys`' renewals (their batch failed).
    pub(super) fn forget(&self, keys: &[&str]) {
        if keys.is_empty() {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            last.remove(*key);
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
        assert!(r.due("results", day, t0));
        assert!(!r.due("results", day, t0 + Duration::from_millis(500)));
        assert!(r.due("other", day, t0 + Duration::from_millis(500)));
        r.forget(&["other"]);
        assert!(r.due("other", day, t0 + Duration::from_millis(600)));
        assert!(r.due("results", day, t0 + RENEW_EVERY));
        let short = Duration::from_secs(2);
        assert!(r.due("brief", short, t0));
        assert!(r.due("brief", short, t0), "a short TTL is always renewed");
    }
}
