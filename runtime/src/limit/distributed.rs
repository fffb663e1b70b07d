//! Limits shared by every daemon: each operation is one [`Store::rate_limit`] call — on Redis
//! one atomic script on the server's clock — and what happens when the store cannot answer
//! (the limit's `on_store_error`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use troupe_config::OnStoreError;

use super::LimitError;
use crate::rate::{RateAlgorithm, RateLimit, RateOp, RateOutcome};
use crate::store::Store;

/// A limit whose counters live in the store.
pub(crate) struct Distributed {
    store: Arc<dyn Store>,
    algorithm: RateAlgorithm,
    policy: OnStoreError,
    /// Whether the last call failed, to log transitions rather than every call.
    degraded: AtomicBool,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributed")
            .field("backend", &self.store.backend())
            .field("algorithm", &self.algorithm)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Distributed {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        algorithm: RateAlgorithm,
        policy: OnStoreError,
    ) -> Self {
        Distributed {
            store,
            algorithm,
            policy,
            degraded: AtomicBool::new(false),
        }
    }

    /// Runs `op` on the counter at `key`. With `admission`, a store failure follows the
    /// limit's `on_store_error` (fail open: admitted); otherwise it is an error.
    pub(crate) async fn apply(
        &self,
        limit: &str,
        key: &str,
        op: RateOp,
        admission: bool,
    ) -> Result<RateOutcome, LimitError> {
        let request = RateLimit {
            algorithm: self.algorithm,
            op,
        };
        match self.store.rate_limit(key, request).await {
            Ok(outcome) => {
                if self.degraded.swap(false, Ordering::AcqRel) {
                    tracing::info!(limit, "rate limit store reachable again: enforcing");
                }
                Ok(outcome)
            }
            Err(err) => {
                let open = admission && self.policy == OnStoreError::FailOpen;
                if !self.degraded.swap(true, Ordering::AcqRel) {
                    let action = if open {
                        "admitting (on_store_error = fail_open)"
                    } else {
                        "refusing (on_store_error = fail_closed)"
                    };
                    tracing::warn!(limit, error = %err, "rate limit store unreachable: {action}");
                } else {
                    tracing::debug!(limit, error = %err, "rate limit store still unreachable");
                }
                if open {
                    Ok(RateOutcome {
                        allowed: true,
                        wait: Duration::ZERO,
                        remaining: 0,
                        reset_after: Duration::ZERO,
                    })
                } else {
                    Err(LimitError::store(limit, err))
                }
            }
        }
    }

    /// Deletes the counters at `keys`.
    pub(crate) async fn reset(&self, limit: &str, keys: &[String]) -> Result<(), LimitError> {
        self.store
            .del(keys)
            .await
            .map(drop)
            .map_err(|err| LimitError::store(limit, err))
    }
}
