//! The daemon's actor tree, shared by `serve` and `demo`.
//!
//! ```text
//! root (supervisor)
//! ├── infra (supervisor)
//! │   ├── store-health        pings the store, drives readiness
//! │   └── limit-janitor       prunes idle keys of local rate limits
//! ├── agents (supervisor)
//! │   └── <agent>             one AgentActor per [agents.NAME]
//! ├── pools (supervisor)
//! │   └── <pool>              one PoolActor per [pools.NAME], on the workers
//! ├── workflows (supervisor)
//! │   └── router              the RouterActor: adopts unfinished workflow runs from the
//! │                           store and supervises one RunActor per run
//! ├── crons                   the CronScheduler: [crons.NAME] and run-time crons; agent
//! │                           targets run in the thread `cron-{name}` of the group `system`,
//! │                           workflow targets start a run in the group `system`
//! └── ingress                 the IngressActor (Redis store only): reads tasks from the
//!                             ingress stream with a consumer group, writes results back
//! threads (registry)          one ThreadActor per conversation thread, on the workers
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use troupe_agents::ingress::IngressActor;
use troupe_agents::rag::Rag;
use troupe_agents::workflow::{Router, RouterOptions};
use troupe_agents::{
    build_agents_with, cron_targets, AgentError, Budget, Conversations, UsageLedger,
};
use troupe_config::Config;
use troupe_runtime::cron::{CronOptions, Crons};
use troupe_runtime::limit::{Limiters, PRUNE_INTERVAL};
use troupe_runtime::pool::{Pool, PoolOptions, SetParallelism};
use troupe_runtime::store::Store;
use troupe_runtime::{
    ChildOptions, Exit, Intensity, Life, Readiness, RegistryOptions, Restart, StoreHealth,
    SupervisorSpec, Workers,
};

/// How often the store health actor pings the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// A running actor tree.
pub struct Tree {
    /// The root's life: its exit is the daemon's.
    pub life: Life,
    /// Whether the daemon is ready.
    pub readiness: Readiness,
    /// Threads and agents.
    pub conversations: Conversations,
    /// Work pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// The cron scheduler.
    pub crons: Crons,
    /// The workflow router.
    pub router: Router,
    workers: Workers,
}

impl Tree {
    /// Starts the tree on the current actix system. Fails if a model or tool cannot be set
    /// up from the config.
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Result<Tree, AgentError> {
        let daemon = &config.daemon;
        let workers = Workers::start(daemon.workers);
        let readiness = Readiness::default();
        let intensity = Intensity {
            max_restarts: daemon.max_restarts,
            within: daemon.restart_window,
        };

        let mut infra = SupervisorSpec::new("infra", intensity);
        let (health_store, health_readiness) = (store.clone(), readiness.clone());
        infra.child("store-health", ChildOptions::default(), move |_| {
            StoreHealth::new(
                health_store.clone(),
                health_readiness.clone(),
                HEALTH_INTERVAL,
            )
        });
        let limiters = Limiters::new(&config.limits, store.clone())?;
        let janitor = limiters.clone();
        infra.child("limit-janitor", ChildOptions::default(), move |_| {
            janitor.janitor(PRUNE_INTERVAL)
        });
        let budgets = config
            .budgets
            .iter()
            .map(|(group, budget)| (group.clone(), Budget::from(budget)))
            .collect();
        let usage = UsageLedger::new(store.clone(), budgets);
        let rag = Rag::from_config(config, store.clone(), usage.clone()).map_err(|err| {
            AgentError::Invalid {
                what: "rag",
                message: err.to_string(),
            }
        })?;
        let (agents, directory) = build_agents_with(
            config,
            store.clone(),
            usage.clone(),
            limiters.clone(),
            intensity,
            &rag,
        )?;
        let options = RegistryOptions {
            passivate_after: daemon.passivate_after,
            mailbox: daemon.mailbox_capacity,
            arbiters: workers.handles(),
        };
        let conversations =
            Conversations::new(store.clone(), directory, usage, options).with_rag(rag);
        conversations.spawn_sweeper();
        let mut root = SupervisorSpec::new("root", intensity);
        root.supervisor(infra);
        root.supervisor(agents);
        let (pools_spec, pools) = pools(config, store.clone(), intensity, &workers);
        root.supervisor(pools_spec);
        let router = Router::child_of(
            &mut root,
            store.clone(),
            conversations.clone(),
            Some(limiters),
            &pools,
            config,
            RouterOptions {
                owner: daemon.name.clone(),
                ..RouterOptions::default()
            },
            intensity,
        );
        let crons = Crons::child_of(
            &mut root,
            config.crons.clone(),
            store.clone(),
            cron_targets(conversations.clone(), router.clone()),
            CronOptions {
                daemon: daemon.name.clone(),
                ..CronOptions::default()
            },
            // Restarted after a failure only: shutdown stops it first, for good.
            ChildOptions {
                restart: Restart::Transient,
                ..ChildOptions::default()
            },
        );

        // Only on Redis: on the memory store no other process could publish a task.
        if store.backend() == "redis" {
            let (ingress_store, talk, ingress_router) =
                (store.clone(), conversations.clone(), router.clone());
            let workflows: BTreeSet<String> = config.workflows.keys().cloned().collect();
            let (settings, consumer) = (config.ingress.clone(), daemon.name.clone());
            let ingress_readiness = readiness.clone();
            root.child("ingress", ChildOptions::default(), move |_| {
                IngressActor::new(
                    ingress_store.clone(),
                    talk.clone(),
                    Some(ingress_router.clone()),
                    workflows.clone(),
                    settings.clone(),
                    consumer.clone(),
                )
                .with_readiness(ingress_readiness.clone())
            });
        }

        let (_root, life) = root.start();
        readiness.set_started(true);
        tracing::info!(workers = workers.len(), "actor tree started");
        Ok(Tree {
            life,
            readiness,
            conversations,
            pools,
            crons,
            router,
            workers,
        })
    }

    /// Stops taking work, stops live threads, then the supervisors (children in reverse start
    /// order), then the worker threads; all within `grace`.
    pub async fn shutdown(self, grace: Duration) -> Exit {
        // Not ready, and the ingress stops fetching before the agents stop.
        self.readiness.set_draining();
        // No new pool attempts; running attempts drain as pools stop.
        for pool in self.pools.values() {
            let _ = pool.actor().try_send(SetParallelism(0));
        }
        let quarter = grace / 4;
        // No new cron fires; a fire in progress finishes its turn while the agents still run.
        if let Some(crons) = self.crons.actor().life() {
            crons.shutdown(quarter).await;
        }
        let third = (grace - quarter) / 3;
        // Runs stop first (at a step boundary), while the agents they call still answer.
        self.router.shutdown(third).await;
        self.conversations.shutdown(third).await;
        let exit = self.life.shutdown(third).await;
        self.workers.stop();
        exit
    }
}

/// The `pools` supervisor with one pool per `[pools.NAME]`, spread over the workers.
fn pools(
    config: &Config,
    store: Arc<dyn Store>,
    intensity: Intensity,
    workers: &Workers,
) -> (SupervisorSpec, BTreeMap<String, Pool>) {
    let daemon = &config.daemon;
    let arbiters = workers.handles();
    let mut spec = SupervisorSpec::new("pools", intensity);
    let options = PoolOptions {
        instance: daemon.name.clone(),
        ..PoolOptions::default()
    };
    let pools = config
        .pools
        .iter()
        .enumerate()
        .map(|(i, (name, settings))| {
            let child = ChildOptions {
                shutdown: daemon.shutdown_grace / 4,
                mailbox: daemon.mailbox_capacity,
                arbiter: (!arbiters.is_empty()).then(|| arbiters[i % arbiters.len()].clone()),
                ..ChildOptions::default()
            };
            let pool = Pool::child_of(
                &mut spec,
                name,
                settings,
                store.clone(),
                options.clone(),
                child,
            );
            (name.clone(), pool)
        })
        .collect();
    (spec, pools)
}
