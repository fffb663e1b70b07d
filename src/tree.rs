//! The daemon's actor tree, shared by `serve` and `demo`.
//!
//! ```text
//! root (supervisor)
//! └── infra (supervisor)
//!     └── store-health        pings the store, drives readiness
//! threads (registry)          one ThreadActor per conversation thread, on the workers
//! ```

use std::sync::Arc;
use std::time::Duration;

use troupe_agents::{ThreadActor, ThreadId};
use troupe_config::Config;
use troupe_runtime::store::Store;
use troupe_runtime::{
    ChildOptions, Exit, Intensity, Life, Readiness, Registry, RegistryOptions, StoreHealth,
    SupervisorSpec, Workers,
};

/// How often the store health actor pings the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Messages a live thread keeps in memory.
const THREAD_WINDOW: usize = 50;

/// A running actor tree.
pub struct Tree {
    /// The root's life: its exit is the daemon's.
    pub life: Life,
    /// Whether the daemon is ready.
    pub readiness: Readiness,
    /// Live conversation threads.
    pub threads: Registry<ThreadId, ThreadActor>,
    workers: Workers,
}

impl Tree {
    /// Starts the tree on the current actix system.
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Tree {
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
        let mut root = SupervisorSpec::new("root", intensity);
        root.supervisor(infra);

        let options = RegistryOptions {
            passivate_after: daemon.passivate_after,
            mailbox: daemon.mailbox_capacity,
            arbiters: workers.handles(),
        };
        let threads = Registry::new("threads", options, move |id: &ThreadId, life: &Life| {
            ThreadActor::new(id.clone(), store.clone(), THREAD_WINDOW, life.clone())
        });
        threads.spawn_sweeper();

        let (_root, life) = root.start();
        readiness.set_started(true);
        tracing::info!(workers = workers.len(), "actor tree started");
        Tree {
            life,
            readiness,
            threads,
            workers,
        }
    }

    /// Stops taking work, stops live threads, then the supervisors (children in reverse start
    /// order), then the worker threads; all within `grace`.
    pub async fn shutdown(self, grace: Duration) -> Exit {
        self.readiness.set_started(false);
        let half = grace / 2;
        self.threads.shutdown(half).await;
        let exit = self.life.shutdown(half).await;
        self.workers.stop();
        exit
    }
}
