//! `troupe serve`: run the daemon until SIGTERM/SIGINT, then drain within the grace period.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use troupe_config::{Config, StoreSettings};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::Exit;

use crate::tree::Tree;

/// Opens the configured store. A Redis store is returned even while Redis is down: it
/// reconnects in the background and the daemon reports not ready meanwhile.
pub async fn open_store(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings {
        StoreSettings::Memory => Arc::new(MemoryStore::new()),
        StoreSettings::Redis(redis) => {
            let options = RedisOptions {
                url: redis.url.clone(),
                prefix: redis.prefix.clone(),
                connect_timeout: redis.connect_timeout,
                response_timeout: redis.response_timeout,
                reconnect_max_delay: redis.reconnect_max_delay,
            };
            let store = RedisStore::connect(options)
                .await
                .with_context(|| format!("opening the Redis store at {}", redis.redacted_url()))?;
            Arc::new(store)
        }
    })
}

/// Runs the daemon. Returns when a signal has been handled (after draining) or when the
/// root supervisor gave up.
pub fn run(config: Config) -> anyhow::Result<()> {
    let system = actix::System::new();
    let result = system.block_on(async move {
        let mut terminate =
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let store = open_store(&config.store).await?;
        let tree = Tree::start(&config, store.clone())?;
        if let Some(addr) = config.daemon.metrics_addr {
            crate::http::serve(addr, tree.readiness.clone()).await?;
        }
        tracing::info!(
            daemon = %config.daemon.name,
            config = %config.origin,
            store = store.backend(),
            "troupe serving"
        );
        let root_life = tree.life.clone();
        let cause = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            exit = root_life.exited() => {
                anyhow::bail!("the root supervisor stopped: {exit:?}");
            }
        };
        let grace = config.daemon.shutdown_grace;
        tracing::info!(
            signal = cause,
            ?grace,
            "shutting down: draining in-flight work"
        );
        match tokio::time::timeout(grace, tree.shutdown(grace)).await {
            Ok(Exit::Stopped) => tracing::info!("stopped cleanly"),
            Ok(exit) => tracing::warn!(?exit, "stopped after a failure"),
            Err(_) => tracing::warn!(
                ?grace,
                "grace period over: exiting with work left pending for recovery"
            ),
        }
        Ok(())
    });
    actix::System::current().stop();
    result
}
