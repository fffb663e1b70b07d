//! `troupe serve`: run the daemon until SIGTERM/SIGINT, then drain within the grace period;
//! SIGHUP reloads the config file (see [`reload`]).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use troupe_config::{Config, StoreSettings};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{Exit, Readiness};

use troupe::Daemon;

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

/// Runs a CLI command's future to completion on a single-threaded runtime.
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(future)
}

/// Runs the daemon. Returns when a signal has been handled (after draining) or when the
/// root supervisor gave up.
pub fn run(config: Config) -> anyhow::Result<()> {
    let system = actix::System::new();
    let result = system.block_on(async move {
        let mut terminate =
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let store = open_store(&config.store).await?;
        let readiness = Readiness::default();
        let mut tree = Daemon::builder(&config, store.clone())
            .readiness(readiness.clone())
            .start()?;
        if let Some(addr) = config.daemon.metrics_addr {
            crate::http::serve(addr, readiness.clone()).await?;
        }
        tracing::info!(
            daemon = %config.daemon.name,
            config = %config.origin,
            store = store.backend(),
            "troupe serving"
        );
        let mut config = config;
        let mut generation = 0;
        let cause = loop {
            let root_life = tree.life.clone();
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => {
                    match reload(&config, &store, &readiness, generation + 1) {
                        Ok((next_config, next_tree)) => {
                            generation += 1;
                            let old = std::mem::replace(&mut tree, next_tree);
                            config = next_config;
                            tracing::info!(generation, "config reloaded: new work runs on it; the previous generation finishes its work");
                            let grace = config.daemon.shutdown_grace;
                            actix::spawn(async move {
                                let exit = old.retire(grace).await;
                                tracing::info!(?exit, "previous generation retired");
                            });
                        }
                        Err(err) => tracing::error!("config reload rejected, the running config stays: {err:#}"),
                    }
                }
                exit = root_life.exited() => {
                    anyhow::bail!("the root supervisor stopped: {exit:?}");
                }
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

/// Reads the config file again and starts a tree on it. Refused (the caller keeps the
/// running config) when the file is invalid, or changes what only a restart can change.
fn reload(
    running: &Config,
    store: &Arc<dyn Store>,
    readiness: &Readiness,
    generation: u64,
) -> anyhow::Result<(Config, Daemon)> {
    let path = std::path::Path::new(&running.origin);
    let next = troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
    if next.store != running.store {
        anyhow::bail!("[store] changed: restart the daemon to use another store");
    }
    let (now, then) = (&running.daemon, &next.daemon);
    if then.name != now.name || then.metrics_addr != now.metrics_addr || then.workers != now.workers
    {
        anyhow::bail!("daemon.name, daemon.metrics_addr and daemon.workers apply on restart only");
    }
    let tree = Daemon::builder(&next, store.clone())
        .readiness(readiness.clone())
        .generation(generation)
        .start()
        .context("starting the new configuration")?;
    Ok((next, tree))
}
