//! A daemon whose config is replaced while it runs (`troupe serve` on SIGHUP): each accepted
//! config starts a new *generation* of the actor tree on the same store and readiness; the
//! previous generation stops taking work and retires in the background, finishing what it
//! runs (see [`DaemonBuilder::generation`](crate::DaemonBuilder::generation)).

use std::sync::Arc;

use troupe_config::Config;
use troupe_runtime::store::Store;
use troupe_runtime::{Exit, Readiness};

use crate::{Daemon, StartError};

/// Why a new config was refused; the running generation goes on with its config.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `[store]` changed: another store needs a restart.
    #[error("[store] changed: restart the daemon to use another store")]
    StoreChanged,
    /// A setting that applies at process start changed.
    #[error("daemon.{0} changed: it applies on restart only")]
    RestartOnly(&'static str),
    /// The new generation could not start.
    #[error("starting the new configuration: {0}")]
    Start(#[from] StartError),
}

/// The running generation of a daemon and its config.
pub struct Generations {
    config: Config,
    store: Arc<dyn Store>,
    readiness: Readiness,
    generation: u64,
    current: Daemon,
}

impl Generations {
    /// Starts generation 0 of `config` over `store`, reporting to `readiness`.
    pub fn start(
        config: Config,
        store: Arc<dyn Store>,
        readiness: Readiness,
    ) -> Result<Generations, StartError> {
        let current = Daemon::builder(&config, store.clone())
            .readiness(readiness.clone())
            .start()?;
        Ok(Generations {
            config,
            store,
            readiness,
            generation: 0,
            current,
        })
    }

    /// The running generation.
    pub fn daemon(&self) -> &Daemon {
        &self.current
    }

    /// The running generation's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The running generation's number (0 at start, one more per accepted reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts the next generation on `next` and retires the running one in the background
    /// (within its `shutdown_grace`). Refused when `next` changes what only a restart can
    /// change (the store, the daemon's name, metrics address or workers) or cannot start.
    pub fn reload(&mut self, next: Config) -> Result<(), ReloadError> {
        if next.store != self.config.store {
            return Err(ReloadError::StoreChanged);
        }
        let (now, then) = (&self.config.daemon, &next.daemon);
        if then.name != now.name {
            return Err(ReloadError::RestartOnly("name"));
        }
        if then.metrics_addr != now.metrics_addr {
            return Err(ReloadError::RestartOnly("metrics_addr"));
        }
        if then.workers != now.workers {
            return Err(ReloadError::RestartOnly("workers"));
        }
        let daemon = Daemon::builder(&next, self.store.clone())
            .readiness(self.readiness.clone())
            .generation(self.generation + 1)
            .start()?;
        self.generation += 1;
        let old = std::mem::replace(&mut self.current, daemon);
        let grace = std::mem::replace(&mut self.config, next)
            .daemon
            .shutdown_grace;
        let generation = self.generation - 1;
        actix::spawn(async move {
            let exit = old.retire(grace).await;
            tracing::info!(generation, ?exit, "previous generation retired");
        });
        Ok(())
    }

    /// Stops the running generation (see [`Daemon::shutdown`]) within `grace`.
    pub async fn shutdown(self, grace: std::time::Duration) -> Exit {
        self.current.shutdown(grace).await
    }
}
