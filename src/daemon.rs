//! The daemon: its actor tree, started by [`Daemon::builder`] — the one wiring that `serve`,
//! `demo`, the CLI's in-process commands and the load generators run.
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

use troupe_agents::rag::RagError;
use troupe_agents::usage::UsageTally;
use troupe_agents::{build_agents, AgentError, Budget, Conversations, Policies, UsageLedger};
use troupe_config::Config;
use troupe_ingress::{InFlight, IngressActor, OwnConsumer};
use troupe_runtime::cron::{CronOptions, Crons};
use troupe_runtime::limit::{LimitError, Limiters, PRUNE_INTERVAL};
use troupe_runtime::pool::{Pool, PoolOptions, SetParallelism};
use troupe_runtime::store::Store;
use troupe_runtime::{
    ActorRef, ChildOptions, Exit, Intensity, Life, Readiness, RegistryOptions, Restart,
    StoreHealth, SupervisorSpec, Workers,
};
use troupe_workflow::cron_targets::cron_targets;
use troupe_workflow::{Router, RouterOptions};

/// How often the store health actor pings the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the usage log is folded into the counters.
const TALLY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a daemon could not start from its config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A model, tool or agent could not be set up.
    #[error("agents: {0}")]
    Agents(#[from] AgentError),
    /// A rate limit could not be set up.
    #[error("limits: {0}")]
    Limits(#[from] LimitError),
    /// The knowledge bases could not be set up (`[rag]`).
    #[error("rag: {0}")]
    Rag(#[from] RagError),
}

/// A running daemon: its actor tree and the handles clients use.
pub struct Daemon {
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
    /// The ingress consumer, its running tasks and its name in the group (Redis store only).
    ingress: Option<(ActorRef<IngressActor>, InFlight, OwnConsumer)>,
    workers: Workers,
}

/// A change to the router's options, applied after the config's.
type TuneRouter<'a> = Box<dyn FnOnce(&mut RouterOptions) + 'a>;

/// How to start a [`Daemon`]: its config and store, and optionally the readiness it reports
/// to and its generation.
#[must_use = "a builder does nothing until `start`"]
pub struct DaemonBuilder<'a> {
    config: &'a Config,
    store: Arc<dyn Store>,
    readiness: Readiness,
    generation: u64,
    ingress: bool,
    tune_router: Option<TuneRouter<'a>>,
}

impl<'a> DaemonBuilder<'a> {
    /// Reports readiness to `readiness` (shared by the generations of one process) instead
    /// of a readiness of its own.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Starts generation `generation` (0 at start, one more per config reload). Run leases,
    /// pool runners, cron fires of each generation and its ingress consumer are its own
    /// (`<daemon>~<generation>`), so a retiring generation finishes its work while the next
    /// one takes new work; what it leaves unfinished is reclaimed by the next after
    /// `claim_idle` (or the lease) like a dead daemon's.
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Whether the daemon reads tasks from the ingress stream (default: yes, on the Redis
    /// store). Without it, only in-process clients reach the daemon — an embedding program's
    /// own API, or a test that runs an ingress consumer of its own settings.
    pub fn ingress(mut self, enabled: bool) -> Self {
        self.ingress = enabled;
        self
    }

    /// Adjusts the workflow router's options after the config set them (tests and benches:
    /// shorter leases and scans, a step hook that injects faults).
    pub fn tune_router(mut self, tune: impl FnOnce(&mut RouterOptions) + 'a) -> Self {
        self.tune_router = Some(Box::new(tune));
        self
    }

    /// Starts the daemon's actor tree on the current actix system. Fails if a model, tool or
    /// knowledge base cannot be set up from the config.
    pub fn start(self) -> Result<Daemon, StartError> {
        Daemon::start(self)
    }
}

impl Daemon {
    /// A daemon of `config` over `store`, started by [`DaemonBuilder::start`].
    pub fn builder(config: &Config, store: Arc<dyn Store>) -> DaemonBuilder<'_> {
        DaemonBuilder {
            config,
            store,
            readiness: Readiness::default(),
            generation: 0,
            ingress: true,
            tune_router: None,
        }
    }

    fn start(builder: DaemonBuilder<'_>) -> Result<Daemon, StartError> {
        let DaemonBuilder {
            config,
            store,
            readiness,
            generation,
            ingress: read_ingress,
            tune_router,
        } = builder;
        let daemon = &config.daemon;
        let instance = if generation == 0 {
            daemon.name.clone()
        } else {
            format!("{}~{generation}", daemon.name)
        };
        let workers = Workers::start(daemon.workers);
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
        if usage.is_logged() {
            let (tally_store, owner) = (store.clone(), instance.clone());
            infra.child("usage-tally", ChildOptions::default(), move |_| {
                UsageTally::new(tally_store.clone(), owner.clone(), TALLY_INTERVAL)
            });
        }
        let policies = Policies::new(store.clone(), usage.clone(), limiters.clone());
        let rag =
            troupe_agents::embedder::rag_from_config(config, store.clone(), policies.clone())?;
        let (agents, directory) = build_agents(
            config,
            store.clone(),
            policies,
            intensity,
            &rag,
            &workers.handles(),
        )?;
        let options = RegistryOptions {
            passivate_after: daemon.passivate_after,
            mailbox: daemon.mailbox_capacity,
            arbiters: workers.handles(),
        };
        let conversations = Conversations::new(
            store.clone(),
            directory,
            usage,
            options,
            daemon.thread_retention,
        )
        .with_rag(rag);
        conversations.spawn_sweeper();
        let mut root = SupervisorSpec::new("root", intensity);
        root.supervisor(infra);
        root.supervisor(agents);
        let (pools_spec, pools) = pools(config, &instance, store.clone(), intensity, &workers);
        root.supervisor(pools_spec);
        let mut router_options = RouterOptions {
            owner: instance.clone(),
            max_runs: daemon.max_runs,
            max_runs_per_group: daemon.max_runs_per_group,
            retention: daemon.run_retention,
            arbiters: workers.handles(),
            ..RouterOptions::default()
        };
        if let Some(tune) = tune_router {
            tune(&mut router_options);
        }
        let router = Router::child_of(
            &mut root,
            store.clone(),
            conversations.clone(),
            Some(limiters),
            &pools,
            config,
            router_options,
            intensity,
        );
        let crons = Crons::child_of(
            &mut root,
            config.crons.clone(),
            store.clone(),
            cron_targets(conversations.clone(), router.clone()),
            CronOptions {
                daemon: instance.clone(),
                ..CronOptions::default()
            },
            // Restarted after a failure only: shutdown stops it first, for good.
            ChildOptions {
                restart: Restart::Transient,
                ..ChildOptions::default()
            },
        );

        // Only on Redis: on the memory store no other process could publish a task.
        let mut ingress = None;
        if read_ingress && store.backend() == "redis" {
            let make = {
                let (store, talk, router) = (store.clone(), conversations.clone(), router.clone());
                let workflows: BTreeSet<String> = config.workflows.keys().cloned().collect();
                // Its own consumer per generation: a new generation never re-reads (and judges
                // by its own config) entries an older one still works on.
                let (settings, consumer) = (config.ingress.clone(), instance.clone());
                move || {
                    IngressActor::new(
                        store.clone(),
                        talk.clone(),
                        Some(router.clone()),
                        workflows.clone(),
                        settings.clone(),
                        consumer.clone(),
                    )
                }
            };
            let in_flight = InFlight::new(config.ingress.max_in_flight);
            let (shared, ingress_readiness) = (in_flight.clone(), readiness.clone());
            let actor = root.child(
                "ingress",
                // Restarted after a failure only: shutdown stops it first, for good.
                ChildOptions {
                    restart: Restart::Transient,
                    ..ChildOptions::default()
                },
                move |_| {
                    make()
                        .with_in_flight(&shared)
                        .with_readiness(ingress_readiness.clone())
                },
            );
            let own = OwnConsumer::new(store.clone(), &config.ingress, &instance);
            ingress = Some((actor, in_flight, own));
        }

        let (_root, life) = root.start();
        readiness.set_started(true);
        tracing::info!(workers = workers.len(), "actor tree started");
        Ok(Daemon {
            life,
            readiness,
            conversations,
            pools,
            crons,
            router,
            ingress,
            workers,
        })
    }

    /// Stops taking work, stops live threads, then the supervisors (children in reverse start
    /// order), then the worker threads; all within `grace`.
    pub async fn shutdown(self, grace: Duration) -> Exit {
        // Not ready, and the ingress stops fetching before the agents stop.
        self.readiness.set_draining();
        self.retire(grace).await
    }

    /// Like [`shutdown`](Self::shutdown), leaving the readiness (shared with the next
    /// generation) alone: the ingress stops reading and its running tasks finish first.
    pub async fn retire(self, grace: Duration) -> Exit {
        let deadline = tokio::time::Instant::now() + grace;
        if let Some((actor, in_flight, own)) = &self.ingress {
            if let Some(life) = actor.life() {
                life.shutdown(grace / 16).await;
            }
            // Half the grace for running tasks, while everything they use still runs.
            if in_flight.wait_idle(grace / 2).await {
                // Nothing reads or claims as this consumer any more: if it owns nothing, it
                // leaves the group (else the others claim its entries, then delete it).
                own.retire().await;
            } else {
                tracing::warn!(
                    running = in_flight.count(),
                    "ingress tasks still running; they stay pending for redelivery"
                );
            }
        }
        // No new pool attempts; running attempts drain as pools stop.
        for pool in self.pools.values() {
            let _ = pool.actor().try_send(SetParallelism(0));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let quarter = left / 4;
        // No new cron fires; a fire in progress finishes its turn while the agents still run.
        if let Some(crons) = self.crons.actor().life() {
            crons.shutdown(quarter).await;
        }
        let third = (left - quarter) / 3;
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
    instance: &str,
    store: Arc<dyn Store>,
    intensity: Intensity,
    workers: &Workers,
) -> (SupervisorSpec, BTreeMap<String, Pool>) {
    let daemon = &config.daemon;
    let arbiters = workers.handles();
    let mut spec = SupervisorSpec::new("pools", intensity);
    let options = PoolOptions {
        instance: instance.to_owned(),
        // Two live daemons must not share a name (see `daemon.name`).
        instance_is_unique: true,
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
