//! Agents and conversations started in-process from a config text: the agents supervisor,
//! rate limits and budgets from the config, and the thread registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_agents::{build_agents, Budget, Conversations, UsageLedger};
use troupe_runtime::limit::Limiters;
use troupe_runtime::store::Store;
use troupe_runtime::{Exit, Intensity, Life, RegistryOptions, SupervisorSpec};

/// A running set of agents and threads over a store.
pub struct Rig {
    /// The conversations API.
    pub talk: Conversations,
    life: Life,
}

impl Rig {
    /// Starts the agents of `config` over `store`, with `budgets` added to the config's.
    pub async fn start(
        config: &str,
        store: Arc<dyn Store>,
        budgets: BTreeMap<String, Budget>,
    ) -> Rig {
        Rig::start_with(config, store, budgets, RegistryOptions::default()).await
    }

    /// Like [`Rig::start`], with the thread registry's options.
    pub async fn start_with(
        config: &str,
        store: Arc<dyn Store>,
        mut budgets: BTreeMap<String, Budget>,
        options: RegistryOptions,
    ) -> Rig {
        let config = troupe_config::load_str(config, "troupe.toml", &[]).expect("config");
        budgets.extend(
            config
                .budgets
                .iter()
                .map(|(g, b)| (g.clone(), Budget::from(b))),
        );
        let usage = UsageLedger::new(store.clone(), budgets);
        let limiters = Limiters::new(&config.limits, store.clone()).expect("limits");
        let (agents, directory) = build_agents(
            &config,
            store.clone(),
            usage.clone(),
            limiters,
            Intensity::default(),
        )
        .expect("agents");
        let mut root = SupervisorSpec::new("root", Intensity::default());
        root.supervisor(agents);
        let (_root, life) = root.start();
        let retention = config.daemon.thread_retention;
        let talk = Conversations::new(store, directory, usage, options, retention);
        Rig { talk, life }
    }

    /// Stops the threads and the agents; both must stop cleanly.
    pub async fn stop(self) {
        self.talk.shutdown(Duration::from_secs(2)).await;
        assert_eq!(
            self.life.shutdown(Duration::from_secs(2)).await,
            Exit::Stopped
        );
    }
}
