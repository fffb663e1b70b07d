//! troupe-ingress, the stream ingress: tasks published with plain `XADD` to the ingress
//! stream are read with a consumer group, run (an agent turn or a workflow run), and answered
//! on a results stream.
//!
//! - [`wire`]: the wire format (tasks, results, dead letters) and task validation.
//! - [`IngressActor`]: the consumer, one per daemon (the consumer name is the daemon's).
//! - `read`: the read loop (own pending entries, new ones, reclaims) and the dispatch of each
//!   entry under the in-flight semaphore and the group's quota (`quota`).
//! - `task`: one task from its entry to its answer (replay and completion checks, the lease,
//!   the agent turn or the workflow submission, the result batch that acks it).
//! - `maintenance`: every few seconds, the ingress stream trimmed below what a group still
//!   needs (foreign groups nobody reads left out after `abandoned_group_after`), and other
//!   consumers owning nothing deleted after `consumer_expiry`; [`OwnConsumer`] deletes a
//!   drained generation's own.
//!
//! Guarantees (at-least-once): an entry is acknowledged in the same `MULTI` as its result
//! (and its idempotency record) is written, so an acked entry always has its result. A task
//! whose run fails with a transient error (store unavailable, daemon stopping) is left pending
//! and delivered again: after a restart from this consumer's own pending entries, or by any
//! consumer's `XAUTOCLAIM` once idle for `claim_idle`. An entry delivered more than
//! `max_deliveries` times, and a malformed one at once, is dead-lettered (written to the dead
//! stream and acked in one batch). A task id that completed (per group) is answered from its
//! stored result for `reply_retention` instead of running again; a reply stream expires
//! `reply_retention` after the last result or notice written to it; an agent task id
//! running anywhere holds a lease and is not started twice while the lease lasts.
//!
//! A workflow task is acknowledged as soon as its run is submitted: the `accepted` notice
//! (naming the run) and the `XACK` are written in the batch that makes the run adoptable, and
//! the run's end writes the final result and the `done` record, on whichever daemon ends it.
//! Its run id is derived from the group and task id, and created with `SET NX`, so a task
//! delivered again finds its run instead of starting another. With
//! `max_in_flight_per_group`, a task whose group is at its quota is parked (see `quota`).

#![warn(missing_docs)]

pub mod auth;
mod maintenance;
mod quota;
mod read;
mod task;
pub mod wire;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use quota::GroupQuota;
use tokio::sync::Semaphore;
use troupe_config::IngressSettings;
use troupe_runtime::store::Store;
use troupe_runtime::Readiness;

use troupe_agents::conversations::Conversations;
use troupe_workflow::Router;

pub use auth::{sign, ProducerAuth};
pub use maintenance::OwnConsumer;
pub use wire::{DeadLetter, Rejection, Target, Task, TaskResult};

/// How often the ingress stream is trimmed below its oldest entry still needed (and idle
/// consumers owning nothing are deleted).
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Everything the consumer and its tasks share.
struct Shared {
    store: Arc<dyn Store>,
    conversations: Conversations,
    router: Option<Router>,
    agents: BTreeSet<String>,
    workflows: BTreeSet<String>,
    settings: IngressSettings,
    consumer: String,
    permits: Arc<Semaphore>,
    /// Tasks of one group running at once (`max_in_flight_per_group`); `None` when that is
    /// no bound of its own.
    quota: Option<Arc<GroupQuota>>,
    /// Room for tasks parked while their group is at its quota (`max_in_flight`).
    parking: Arc<Semaphore>,
    /// Told whether the consumer reads (the daemon's readiness).
    readiness: Readiness,
    /// Producer authentication, when `[ingress.auth]` asks for it.
    auth: Option<ProducerAuth>,
}

/// The ingress consumer. Reads in a loop on its own context; each valid task runs as its own
/// future (at most `max_in_flight`; reading pauses while all are taken). Stopping the actor
/// stops reading; tasks already running finish on their own, and whatever is not acked stays
/// pending for the next delivery.
pub struct IngressActor {
    shared: Arc<Shared>,
}

impl IngressActor {
    /// A consumer named `consumer` of `settings.group`, running agent tasks through
    /// `conversations` and workflow tasks through `router` (workflow tasks are refused as
    /// unknown without one).
    pub fn new(
        store: Arc<dyn Store>,
        conversations: Conversations,
        router: Option<Router>,
        workflows: BTreeSet<String>,
        settings: IngressSettings,
        consumer: String,
    ) -> IngressActor {
        let agents = conversations.agent_names().into_iter().collect();
        let workflows = if router.is_some() {
            workflows
        } else {
            BTreeSet::new()
        };
        let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let quota = (settings.max_in_flight_per_group < settings.max_in_flight)
            .then(|| GroupQuota::new(settings.max_in_flight_per_group));
        let parking = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let auth = ProducerAuth::from_settings(&settings.auth);
        IngressActor {
            shared: Arc::new(Shared {
                store,
                conversations,
                router,
                agents,
                workflows,
                settings,
                consumer,
                permits,
                quota,
                parking,
                readiness: Readiness::default(),
                auth,
            }),
        }
    }

    /// Runs tasks under `in_flight` (shared by every incarnation of the consumer, so its
    /// owner can wait for them); its size replaces `max_in_flight`.
    pub fn with_in_flight(mut self, in_flight: &InFlight) -> IngressActor {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.permits = in_flight.permits.clone();
        }
        self
    }

    /// Reports to `readiness` whether the consumer reads (it is then expected to).
    pub fn with_readiness(mut self, readiness: Readiness) -> IngressActor {
        readiness.expect_consumer();
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.readiness = readiness;
        }
        self
    }
}

impl Actor for IngressActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        tracing::info!(
            stream = %shared.settings.stream,
            group = %shared.settings.group,
            consumer = %shared.consumer,
            "ingress consumer started"
        );
        ctx.spawn(
            async move { shared.consume().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }
}

/// The tasks a consumer has running; see [`IngressActor::in_flight`].
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    /// Room for `max` tasks at once (at least 1).
    pub fn new(max: usize) -> InFlight {
        let max = max.max(1);
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Tasks running now.
    pub fn count(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// Waits until no task runs, at most `limit`; whether none runs. Woken by the last
    /// task's end (it takes every permit for an instant, so call it once the ingress no
    /// longer starts tasks: a task waiting for a permit meanwhile queues behind it).
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        match tokio::time::timeout(limit, self.permits.acquire_many(all)).await {
            Ok(Ok(_every_permit)) => true,
            // Closed (never, today) or timed out.
            Ok(Err(_)) | Err(_) => self.count() == 0,
        }
    }
}

/// The metric labels of a task: its target kind and name.
fn labels(task: &Task) -> (&'static str, &str) {
    match &task.target {
        Target::Agent(name) => ("agent", name),
        Target::Workflow(name) => ("workflow", name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_wakes_when_the_last_task_ends_and_gives_up_after_its_limit() {
        let in_flight = InFlight::new(4);
        let task = in_flight
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("a permit");
        assert_eq!(in_flight.count(), 1);
        assert!(!in_flight.wait_idle(Duration::from_millis(30)).await);
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(task);
        });
        assert!(in_flight.wait_idle(Duration::from_secs(30)).await);
        assert_eq!(in_flight.count(), 0);
        ends.await.expect("the task ended");
        // Idle again: the waiter gave every permit back.
        assert!(in_flight.wait_idle(Duration::ZERO).await);
    }
}
