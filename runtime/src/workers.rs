//! The worker arbiters: the threads that actors run on, one per core by default.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

/// A fixed set of actix arbiters that children and entities are spread over.
pub struct Workers {
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("arbiters", &self.arbiters.len())
            .finish()
    }
}

impl Workers {
    /// Starts `count` arbiters (0: one per available core). Call inside an actix system.
    pub fn start(count: usize) -> Self {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            count
        };
        Workers {
            arbiters: (0..count).map(|_| Arbiter::new()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Handles of every arbiter.
    pub fn handles(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(Arbiter::handle).collect()
    }

    /// The next arbiter, round-robin.
    pub fn next(&self) -> ArbiterHandle {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.arbiters[n % self.arbiters.len()].handle()
    }

    /// How many arbiters there are.
    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    /// Whether there are none (never true for a started set).
    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Stops every arbiter once its queued work is done.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
