//! The daemon started in-process from a config text, through the production builder
//! (`troupe::Daemon::builder`), without its ingress consumer: the tests reach it through
//! [`Conversations`], and the ingress tests run a consumer of their own settings.

use std::sync::Arc;
use std::time::Duration;

use troupe::Daemon;
use troupe_agents::Conversations;
use troupe_runtime::store::Store;
use troupe_runtime::Exit;

/// A running daemon over a store, and its conversations API.
pub struct Rig {
    /// The conversations API.
    pub talk: Conversations,
    daemon: Daemon,
}

impl Rig {
    /// Starts the daemon of `config` (TOML text) over `store`.
    pub async fn start(config: &str, store: Arc<dyn Store>) -> Rig {
        let config = troupe_config::load_str(config, "troupe.toml", &[])
            .unwrap_or_else(|err| panic!("config: {err}"));
        let daemon = Daemon::builder(&config, store)
            .ingress(false)
            .start()
            .unwrap_or_else(|err| panic!("daemon: {err}"));
        let talk = daemon.conversations.clone();
        Rig { talk, daemon }
    }

    /// Stops the daemon; it must stop cleanly.
    pub async fn stop(self) {
        assert_eq!(
            self.daemon.shutdown(Duration::from_secs(6)).await,
            Exit::Stopped
        );
    }
}
