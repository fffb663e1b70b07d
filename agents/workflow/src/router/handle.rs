//! [`Router`]: the daemon's handle on the router — the store API plus the actor, told about
//! local submissions — and the wiring of the `workflows` supervisor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_runtime::limit::Limiters;
use troupe_runtime::pool::Pool;
use troupe_runtime::store::{Store, Write};
use troupe_runtime::ActorRef;

use super::actor::RouterActor;
use super::messages::{AdoptRun, CountRuns, ScanRuns, StopRuns};
use crate::env::{Env, Snapshots, Waiters};
use crate::error::WorkflowError;
use crate::journal::Reply;
use crate::options::RouterOptions;
use crate::runs::{Runs, Submit, TaskRun};
use troupe_agents::conversations::Conversations;

/// The router as the daemon holds it: the store API plus the actor, told about local
/// submissions so they start without waiting for a scan. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    runs: Runs,
    actor: ActorRef<RouterActor>,
}

impl Router {
    /// Adds the `workflows` supervisor's `router` child to `parent`, and registers the
    /// [`WORKFLOW_CALL`](crate::pool_call::WORKFLOW_CALL) handler on every pool of `pools`
    /// (the daemon's `[pools.NAME]`), where steps naming a pool run their calls.
    #[allow(clippy::too_many_arguments)]
    pub fn child_of(
        parent: &mut troupe_runtime::SupervisorSpec,
        store: Arc<dyn Store>,
        talk: Conversations,
        limiters: Option<Limiters>,
        pools: &BTreeMap<String, Pool>,
        config: &troupe_config::Config,
        options: RouterOptions,
        intensity: troupe_runtime::Intensity,
    ) -> Router {
        for pool in pools.values() {
            pool.register_handler(
                crate::pool_call::WORKFLOW_CALL,
                crate::pool_call::handler(talk.clone()),
            );
        }
        let pools = pools.clone();
        let waiters = Waiters::default();
        let snapshots = Arc::new(Snapshots::new(Arc::new(config.workflows.clone())));
        // The daemon gives its conversations the knowledge bases of `[rag]`; without them
        // (an embedding program's own wiring), knowledge steps embed locally.
        let rag = talk.rag().cloned().unwrap_or_else(|| {
            tracing::warn!("no knowledge bases: knowledge steps use the local embedder");
            troupe_agents::rag::Rag::new(
                store.clone(),
                config.rag.clone(),
                Arc::new(troupe_agents::rag::LocalEmbedder::new(
                    config.rag.dimensions,
                )),
            )
        });
        let env = Arc::new(Env {
            store: store.clone(),
            talk,
            limiters,
            pools,
            snapshots: snapshots.clone(),
            options,
            rag,
            waiters: waiters.clone(),
        });
        let mut spec = troupe_runtime::SupervisorSpec::new("workflows", intensity);
        let actor = spec.child(
            "router",
            troupe_runtime::ChildOptions::default(),
            move |_| RouterActor::new(env.clone()),
        );
        parent.supervisor(spec);
        Router {
            runs: Runs::with(store, snapshots, Some(waiters)),
            actor,
        }
    }

    /// The store API.
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Submits a run and has this daemon adopt it at once if it has room.
    pub async fn submit(&self, submit: Submit) -> Result<String, WorkflowError> {
        let fresh = self.runs.create(submit, false).await?;
        let run = fresh.record.id.clone();
        // Awaited (mailbox backpressure): a dropped adoption would wait for the next scan.
        let _ = self.actor.send(AdoptRun(Box::new(fresh))).await;
        Ok(run)
    }

    /// `Runs::create_task`, and this daemon adopts a run it created at once if it has room.
    pub async fn submit_task(
        &self,
        submit: Submit,
        reply: Reply,
        extra: Vec<Write>,
    ) -> Result<TaskRun, WorkflowError> {
        let (run, fresh) = self.runs.create_task(submit, reply, extra).await?;
        match fresh {
            Some(fresh) => {
                let _ = self.actor.send(AdoptRun(Box::new(fresh))).await;
            }
            // Opened again by this delivery: a scan adopts it.
            None => {
                let _ = self.actor.send(ScanRuns).await;
            }
        }
        Ok(run)
    }

    /// How many runs this daemon runs now.
    pub async fn running(&self) -> usize {
        self.actor.send(CountRuns).await.unwrap_or(0)
    }

    /// Stops adopting runs and stops the running ones at their next step boundary or wait,
    /// waiting up to `grace` for them; unfinished runs stay in the store for recovery.
    pub async fn shutdown(&self, grace: Duration) {
        // Once stopping, the router adopts nothing more: the runs it told are all it runs.
        let Ok(lives) = self.actor.send(StopRuns).await else {
            return;
        };
        let ended = futures::future::join_all(lives.iter().map(|life| life.exited()));
        let _ = tokio::time::timeout(grace, ended).await;
    }
}
