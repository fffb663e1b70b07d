//! The in-process index cache: one [`Slot`] per namespace searched, weighed by the
//! approximate heap size of the index it holds ([`Loaded::weight`](super::namespace::Loaded)),
//! the least recently used dropped once the total passes a byte budget (`[rag] index_cache`).
//!
//! A dropped namespace is loaded again from the store at its next search; a search in
//! progress keeps its index alive through its own `Arc`. The namespace just loaded is never
//! the one dropped, even when it alone is over the budget.
//!
//! Eviction order comes from the `lru` crate (an unbounded [`LruCache`] used only for its
//! recency list); the weights and the budget are kept here.

use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use super::namespace::Slot;
use super::store::Keys;

/// A namespace in the cache: its slot and the weight of the index it held when last weighed.
struct Cached {
    slot: Arc<Slot>,
    weight: usize,
}

struct State {
    lru: LruCache<Keys, Cached>,
    weight: usize,
}

/// Namespace slots under a byte budget, least recently used evicted first.
pub(crate) struct IndexCache {
    budget: usize,
    state: Mutex<State>,
}

/// What the in-process index cache holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexCacheStats {
    /// The budget, in bytes (`[rag] index_cache`).
    pub budget: usize,
    /// Approximate bytes of the indexes held.
    pub bytes: usize,
    /// The namespaces held as `(group, namespace)`, the most recently used first.
    pub namespaces: Vec<(String, String)>,
}

impl IndexCache {
    /// An empty cache of `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        IndexCache {
            budget,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                weight: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of namespace `keys` (an empty one if it is not cached), now the most recently
    /// used.
    pub(crate) fn slot(&self, keys: &Keys) -> Arc<Slot> {
        let mut state = self.state();
        if let Some(cached) = state.lru.get(keys) {
            return cached.slot.clone();
        }
        let slot = Arc::new(Slot::default());
        state.lru.put(
            keys.clone(),
            Cached {
                slot: slot.clone(),
                weight: 0,
            },
        );
        metrics().rag_index_cache_namespaces.inc();
        slot
    }

    /// Records that `slot`, the slot of `keys`, holds an index of `weight` bytes now, then
    /// evicts the least recently used other namespaces while the total is over the budget.
    /// A slot evicted while it was loading is put back (as the most recently used); one
    /// replaced meanwhile by a newer slot of the same namespace is left out.
    pub(crate) fn weigh(&self, keys: &Keys, slot: &Arc<Slot>, weight: usize) {
        let mut state = self.state();
        let previous = match state.lru.get_mut(keys) {
            Some(cached) if Arc::ptr_eq(&cached.slot, slot) => {
                std::mem::replace(&mut cached.weight, weight)
            }
            Some(_) => return,
            None => {
                state.lru.put(
                    keys.clone(),
                    Cached {
                        slot: slot.clone(),
                        weight,
                    },
                );
                metrics().rag_index_cache_namespaces.inc();
                0
            }
        };
        state.weight = state.weight - previous + weight;
        gauge_add(previous, weight);
        while state.weight > self.budget && state.lru.len() > 1 {
            // `keys` was just used: with another namespace left, it is not the oldest.
            let Some((evicted, cached)) = state.lru.pop_lru() else {
                break;
            };
            state.weight -= cached.weight;
            gauge_add(cached.weight, 0);
            metrics().rag_index_cache_namespaces.dec();
            tracing::debug!(
                namespace = %evicted.state(),
                bytes = cached.weight,
                cached = state.weight,
                budget = self.budget,
                "namespace index evicted"
            );
        }
    }

    /// What the cache holds now.
    pub(crate) fn stats(&self) -> IndexCacheStats {
        let state = self.state();
        IndexCacheStats {
            budget: self.budget,
            bytes: state.weight,
            namespaces: state
                .lru
                .iter()
                .map(|(keys, _)| (keys.group().to_owned(), keys.namespace().to_owned()))
                .collect(),
        }
    }
}

impl Drop for IndexCache {
    fn drop(&mut self) {
        let state = self.state();
        gauge_add(state.weight, 0);
        metrics()
            .rag_index_cache_namespaces
            .dec_by(i64::try_from(state.lru.len()).unwrap_or(i64::MAX));
    }
}

fn metrics() -> &'static troupe_runtime::metrics::Metrics {
    troupe_runtime::metrics::metrics()
}

/// Moves the process-wide bytes gauge from `from` to `to` (every cache of the process adds
/// its own share).
fn gauge_add(from: usize, to: usize) {
    let gauge = &metrics().rag_index_cache_bytes;
    let delta = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    if to >= from {
        gauge.inc_by(delta(to - from));
    } else {
        gauge.dec_by(delta(from - to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Keys {
        Keys::new("acme", name).expect("key names")
    }

    fn held(cache: &IndexCache) -> Vec<String> {
        cache
            .stats()
            .namespaces
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    /// Uses namespace `name` as a search does: takes its slot, then weighs what it loaded.
    fn load(cache: &IndexCache, name: &str, weight: usize) -> Arc<Slot> {
        let slot = cache.slot(&ns(name));
        cache.weigh(&ns(name), &slot, weight);
        slot
    }

    #[test]
    fn evicts_the_least_recently_used_past_the_budget() {
        let cache = IndexCache::new(100);
        load(&cache, "a", 40);
        load(&cache, "b", 40);
        // `a` used again: `b` is now the oldest.
        let a = cache.slot(&ns("a"));
        cache.weigh(&ns("a"), &a, 40);
        load(&cache, "c", 40);
        assert_eq!(held(&cache), vec!["c", "a"]);
        assert_eq!(cache.stats().bytes, 80);
        // A reload that grows `a` pushes out `c`, the other one.
        cache.weigh(&ns("a"), &a, 70);
        assert_eq!(held(&cache), vec!["a"]);
        assert_eq!(cache.stats().bytes, 70);
    }

    #[test]
    fn keeps_the_namespace_just_loaded_even_over_the_budget() {
        let cache = IndexCache::new(100);
        load(&cache, "a", 30);
        load(&cache, "huge", 500);
        assert_eq!(held(&cache), vec!["huge"]);
        assert_eq!(cache.stats().bytes, 500);
        load(&cache, "b", 30);
        assert_eq!(held(&cache), vec!["b"]);
        assert_eq!(cache.stats().bytes, 30);
    }

    #[test]
    fn a_slot_evicted_while_loading_comes_back_and_a_replaced_one_does_not() {
        let cache = IndexCache::new(100);
        let slow = cache.slot(&ns("a"));
        load(&cache, "b", 90);
        load(&cache, "c", 90);
        assert_eq!(held(&cache), vec!["c"]);
        // The load of `a` started before its eviction ends now: it is cached again.
        cache.weigh(&ns("a"), &slow, 20);
        assert_eq!(held(&cache), vec!["a"]);
        assert!(Arc::ptr_eq(&cache.slot(&ns("a")), &slow));
        // A stale slot of `d`, replaced by a newer one, does not displace it.
        let stale = cache.slot(&ns("d"));
        load(&cache, "e", 95);
        load(&cache, "f", 95);
        assert_eq!(held(&cache), vec!["f"]);
        let fresh = load(&cache, "d", 10);
        cache.weigh(&ns("d"), &stale, 60);
        assert!(Arc::ptr_eq(&cache.slot(&ns("d")), &fresh));
        assert_eq!(cache.stats().bytes, 10);
    }
}
