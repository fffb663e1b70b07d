//! The turn lease: at most one daemon changes a thread at a time.
//!
//! Every daemon sharing a store may hold an actor for the same thread. Before a turn, an
//! approval, an archive or a delete, the actor takes the thread's lease
//! (`thread:{group}:{thread}:lease`, held by a token of this change alone), then checks what
//! it remembers against the store; the lease is renewed while the change runs and released
//! after it. A daemon that finds the lease held waits for it, as a second turn in one daemon
//! waits for the first. A change whose lease may have lapsed (the store was unreachable for
//! longer than [`TTL`]) checks that it still holds it before it writes messages, and fails
//! with [`AgentError::LeaseLost`] rather than number them after another daemon's.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use troupe_runtime::store::Store;

use crate::error::AgentError;
use crate::thread_store::ThreadId;

/// How long a lease lasts unless renewed: a daemon that dies during a turn holds its thread
/// this long at most.
pub(crate) const TTL: Duration = Duration::from_secs(30);

/// How long a change waits for another daemon's turn before it fails with
/// [`AgentError::Busy`] (retryable).
pub(crate) const WAIT: Duration = Duration::from_secs(600);

/// A held turn lease. Not released, it lapses after [`TTL`].
pub(crate) struct TurnLease {
    store: Arc<dyn Store>,
    key: String,
    thread: String,
    owner: String,
    /// When the store last confirmed the lease.
    confirmed: Mutex<Instant>,
}

impl TurnLease {
    /// Takes the lease of `id`, waiting (up to [`WAIT`]) while another change holds it.
    pub(crate) async fn acquire(store: Arc<dyn Store>, id: &ThreadId) -> Result<Self, AgentError> {
        let key = id.lease_key();
        let owner = format!("{:016x}", rand::random::<u64>());
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let asked = Instant::now();
            if store.acquire_lease(&key, &owner, TTL).await? {
                return Ok(TurnLease {
                    store,
                    key,
                    thread: id.thread().to_owned(),
                    owner,
                    confirmed: Mutex::new(asked),
                });
            }
            if Instant::now() >= deadline {
                return Err(AgentError::Busy {
                    thread: id.thread().to_owned(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `work`, renewing the lease every third of its [`TTL`] until it ends.
    pub(crate) async fn hold<F: Future>(&self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + TTL / 3, TTL / 3);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = renewals.tick() => {
                    match self.renew().await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(thread = %self.thread, "turn lease lost"),
                        Err(err) => tracing::warn!(thread = %self.thread, error = %err, "cannot renew the turn lease"),
                    }
                }
            }
        }
    }

    /// Fails with [`AgentError::LeaseLost`] unless the lease is surely still held: confirmed
    /// by the store within half its TTL, or now.
    pub(crate) async fn confirm(&self) -> Result<(), AgentError> {
        if self
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            < TTL / 2
            || self.renew().await?
        {
            Ok(())
        } else {
            Err(AgentError::LeaseLost {
                thread: self.thread.clone(),
            })
        }
    }

    async fn renew(&self) -> Result<bool, AgentError> {
        let asked = Instant::now();
        let renewed = self.store.renew_lease(&self.key, &self.owner, TTL).await?;
        if renewed {
            *self
                .confirmed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = asked;
        }
        Ok(renewed)
    }

    /// Gives the lease up (a failure leaves it to lapse).
    pub(crate) async fn release(&self) {
        if let Err(err) = self.store.release_lease(&self.key, &self.owner).await {
            tracing::warn!(thread = %self.thread, error = %err, "cannot release the turn lease");
        }
    }
}
