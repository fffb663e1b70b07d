//! Fixed windows enforced in this process ([`LocalWindow`]): one small state per key. The
//! window arithmetic, shared with the store backends, is [`crate::rate::window`].

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::Clock as _;

use super::local::LimitClock;
use crate::rate::gcra::{Op, Outcome};
use crate::rate::window::{Window, WindowState, EMPTY};

/// A fixed-window limit enforced in this process: one small state per key in a `DashMap`
/// (each operation holds one shard's lock for a few arithmetic steps).
#[derive(Debug)]
pub(crate) struct LocalWindow {
    window: Window,
    clock: LimitClock,
    states: DashMap<String, WindowState>,
}

impl LocalWindow {
    /// A limiter for `window` (in nanoseconds) reading `clock`.
    pub(crate) fn new(window: Window, clock: LimitClock) -> Self {
        LocalWindow {
            window,
            clock,
            states: DashMap::new(),
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now().as_u64()).unwrap_or(i64::MAX)
    }

    /// Applies `op` to `key`'s window.
    pub(crate) fn apply(&self, key: &str, op: Op) -> Outcome {
        let now = self.now();
        if matches!(op, Op::Peek { .. }) {
            let state = self.states.get(key).map(|s| *s);
            return self.window.step(state, now, op).0;
        }
        // A known key: no allocation, one shard lock.
        if let Some(mut entry) = self.states.get_mut(key) {
            let (outcome, next) = self.window.step(Some(*entry), now, op);
            *entry = next.unwrap_or(EMPTY);
            return outcome;
        }
        let (outcome, next) = self.window.step(None, now, op);
        let Some(next) = next else {
            return outcome;
        };
        // Another caller may have inserted the key since: apply to what is there now.
        match self.states.entry(key.to_owned()) {
            Entry::Occupied(mut entry) => {
                let (outcome, next) = self.window.step(Some(*entry.get()), now, op);
                *entry.get_mut() = next.unwrap_or(EMPTY);
                outcome
            }
            Entry::Vacant(entry) => {
                entry.insert(next);
                outcome
            }
        }
    }

    /// Forgets `key`.
    pub(crate) fn reset(&self, key: &str) {
        self.states.remove(key);
    }

    /// Drops keys whose state no longer matters (their windows are over), then gives the
    /// memory back.
    pub(crate) fn prune(&self) {
        let now = self.now();
        let window = self.window;
        self.states.retain(|_, s| {
            window
                .step(Some(*s), now, Op::Peek { count: 0 })
                .1
                .is_some()
        });
        self.states.shrink_to_fit();
    }

    /// Keys held, and the slots allocated for them.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.states.len(), self.states.capacity())
    }
}
