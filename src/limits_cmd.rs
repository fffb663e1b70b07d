//! `troupe limits`: operator tools for the configured rate limits — exercise one (`try`),
//! show a key's state (`status`), or reset a key (`reset`). They use the same store and
//! limiter code as the daemon, so `try` run from two machines shows a distributed limit
//! holding across daemons.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use troupe_runtime::retry::Transient as _;

use clap::Subcommand;
use troupe_runtime::limit::{Admission, Limiters};

use crate::serve::open_store;

/// `troupe limits …`
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Call a limit as fast as it admits for a while, then print
    /// `admitted=<n> limited=<m> errors=<k>`. A refused call waits its `retry_after`.
    Try {
        /// The limit (`[limits.NAME]`).
        name: String,
        /// The key to count against.
        #[arg(long, default_value = "global")]
        key: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Units per call.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// How long to keep calling, e.g. `3s`.
        #[arg(long = "for", default_value = "3s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Print what a key has left: `capacity=<c> remaining=<r> reset_after=<d>`.
    Status {
        /// The limit (`[limits.NAME]`).
        name: String,
        /// The key.
        #[arg(long, default_value = "global")]
        key: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Forget a key's usage (and any penalty): it is back to full.
    Reset {
        /// The limit (`[limits.NAME]`).
        name: String,
        /// The key.
        #[arg(long, default_value = "global")]
        key: String,
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs a `troupe limits` command.
pub fn run(command: LimitsCommand) -> anyhow::Result<()> {
    crate::serve::block_on(async move {
        match command {
            LimitsCommand::Try {
                name,
                key,
                config,
                count,
                duration,
            } => {
                let limiters = open(&config, &name).await?;
                let report = hammer(&limiters, &name, &key, count, duration).await?;
                println!(
                    "admitted={} limited={} errors={}",
                    report.admitted, report.limited, report.errors
                );
            }
            LimitsCommand::Status { name, key, config } => {
                let limiters = open(&config, &name).await?;
                let status = limiters.status(&name, &key).await?;
                println!(
                    "capacity={} remaining={} reset_after={}",
                    status.capacity,
                    status.remaining,
                    humantime::format_duration(status.reset_after)
                );
            }
            LimitsCommand::Reset { name, key, config } => {
                let limiters = open(&config, &name).await?;
                limiters.reset(&name, &key).await?;
                println!("reset {name} for key {key}");
            }
        }
        Ok(())
    })
}

/// Loads the config and builds its limits; `name` must be one of them.
async fn open(config: &std::path::Path, name: &str) -> anyhow::Result<Limiters> {
    let config = troupe_config::load(config).map_err(|err| anyhow::anyhow!("{err}"))?;
    let store = open_store(&config.store).await?;
    let limiters = Limiters::new(&config.limits, store)?;
    if limiters.settings(name).is_none() {
        let known: Vec<&str> = limiters.names().collect();
        anyhow::bail!("no limit named {name:?} (configured: {})", known.join(", "));
    }
    Ok(limiters)
}

/// What `try` counted.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    limited: u64,
    errors: u64,
}

/// Calls the limit until `duration` has passed.
async fn hammer(
    limiters: &Limiters,
    name: &str,
    key: &str,
    count: u64,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + duration;
    let mut tally = Tally::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(tally);
        }
        let pause = match limiters.limit(name, key, count).await {
            Ok(Admission::Admitted) => {
                tally.admitted += 1;
                Duration::ZERO
            }
            Ok(Admission::Limited { retry_after }) => {
                tally.limited += 1;
                retry_after
            }
            Err(err) if err.is_retryable() => {
                tally.errors += 1;
                tracing::warn!(error = %err, "limit call failed");
                Duration::from_millis(100)
            }
            Err(err) => return Err(err.into()),
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(left)).await;
        }
    }
}
