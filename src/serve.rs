//! `troupe serve`: run the daemon until SIGTERM/SIGINT, then drain within the grace period;
//! SIGHUP reloads the config file (see [`reload`]).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use troupe_config::{Config, StoreSettings};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{Exit, Readiness};

use troupe::Generations;

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
        let metrics_addr = config.daemon.metrics_addr;
        let (name, origin) = (config.daemon.name.clone(), config.origin.clone());
        let mut daemon = Generations::start(config, store.clone(), readiness.clone())?;
        if let Some(addr) = metrics_addr {
            crate::http::serve(addr, readiness.clone()).await?;
        }
        tracing::info!(daemon = %name, config = %origin, store = store.backend(), "troupe serving");
        let cause = loop {
            let root_life = daemon.daemon().life.clone();
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => match reload(&mut daemon) {
                    Ok(()) => tracing::info!(
                        generation = daemon.generation(),
                        "config reloaded: new work runs on it; the previous generation finishes its work"
                    ),
                    Err(err) => tracing::error!("config reload rejected, the running config stays: {err:#}"),
                },
                exit = root_life.exited() => {
                    anyhow::bail!("the root supervisor stopped: {exit:?}");
                }
            }
        };
        let grace = daemon.config().daemon.shutdown_grace;
        tracing::info!(
            signal = cause,
            ?grace,
            "shutting down: draining in-flight work"
        );
        match tokio::time::timeout(grace, daemon.shutdown(grace)).await {
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

/// Reads the config file again and starts the next generation on it. Refused (the running
/// config stays) when the file is invalid, or changes what only a restart can change.
fn reload(daemon: &mut Generations) -> anyhow::Result<()> {
    let path = std::path::Path::new(&daemon.config().origin);
    let next = troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
    daemon.reload(next)?;
    Ok(())
}
