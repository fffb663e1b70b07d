//! `troupe bench workflows`: a load generator for a workflow — by default the research
//! pipeline of `examples/research.toml` (classify, three research agents in parallel,
//! synthesis, report, archive — every step journaled), or `--workflow NAME` of `--config
//! FILE` — on the real actor tree of this process, with every scripted model at a chosen
//! latency, on the config's store, the memory store or a Redis. It keeps `--concurrency` runs
//! in flight until `--runs` have completed and prints runs per second, wall time, end-to-end
//! latency (p50, p99), the CPU time per run and the process's peak RSS. Not a test: it prints
//! figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures::stream::{FuturesUnordered, StreamExt};
use troupe_config::{Config, Provider};
use troupe_workflow::{RunStatus, Submit};

use super::{process, quantile};
use crate::demo::{RESEARCH, RESEARCH_RULES};
use crate::serve::open_store;
use troupe::Daemon;

/// `troupe bench workflows`
#[derive(Debug, clap::Args)]
pub struct WorkflowArgs {
    /// Runs to complete.
    #[arg(long, default_value_t = 5_000)]
    runs: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 5_000)]
    concurrency: usize,
    /// Latency of every scripted model's replies.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    latency: Duration,
    /// The config to run (default: the built-in `examples/research.toml`). Its store is used
    /// unless `--redis` is given.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The workflow to run (default: `research`).
    #[arg(long, default_value = "research")]
    workflow: String,
    /// Journal on this Redis (`redis://…`, under a fresh key prefix) instead of the config's
    /// store.
    #[arg(long)]
    redis: Option<String>,
    /// Call the model over HTTP: the mock OpenAI-compatible server, started in this
    /// process with the same replies and latency, through the OpenAI client (the built-in
    /// research pipeline only).
    #[arg(long)]
    mock: bool,
}

/// Runs `troupe bench workflows`.
pub fn run(args: WorkflowArgs) -> anyhow::Result<()> {
    let WorkflowArgs {
        runs,
        concurrency,
        latency,
        config,
        workflow,
        redis,
        mock,
    } = args;
    ensure!(
        runs > 0 && concurrency > 0,
        "--runs and --concurrency must be positive"
    );
    ensure!(
        !(mock && config.is_some()),
        "--mock works with the built-in research pipeline only, not with --config"
    );
    let dir = std::env::temp_dir().join(format!("troupe-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("scripted")).context("creating a temp dir")?;
    std::fs::write(dir.join("scripted").join("research.toml"), RESEARCH_RULES)
        .context("writing the scripted rules")?;
    let origin = dir.join("research.toml").display().to_string();
    let system = actix::System::new();
    let result = system.block_on(async move {
        // Kept alive for the whole run.
        let mut _server = None;
        let mut config = match &config {
            Some(path) => troupe_config::load(path).map_err(|err| anyhow::anyhow!("{err}"))?,
            None => {
                let text = if mock {
                    let mut rules =
                        troupe_mock_llm::MockConfig::from_toml(RESEARCH_RULES, "research rules")
                            .map_err(|err| anyhow::anyhow!("the research rules: {err}"))?;
                    rules.latency = latency;
                    let server = troupe_mock_llm::MockServer::start(rules).await?;
                    let url = server.base_url();
                    _server = Some(server);
                    RESEARCH.replace(
                        "provider = \"scripted\"\nscript = \"scripted/research.toml\"\nlatency = \"20ms\"",
                        &format!("provider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"mock-model\""),
                    )
                } else {
                    RESEARCH.to_owned()
                };
                troupe_config::load_str(&text, &origin, &[])
                    .map_err(|err| anyhow::anyhow!("{err}"))?
            }
        };
        ensure!(
            config.workflows.contains_key(&workflow),
            "no workflow {workflow:?} in {} (it has: {})",
            config.origin,
            config.workflows.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        tune(&mut config, concurrency, latency, redis.as_deref())?;
        let store_name = match &config.store {
            troupe_config::StoreSettings::Memory => "memory",
            troupe_config::StoreSettings::Redis(_) => "redis",
        };
        let store = open_store(&config.store).await?;
        let tree = Daemon::builder(&config, store).start()?;
        let cpu_before = process::cpu_time(None);
        let outcome = drive(&tree, &workflow, runs, concurrency).await;
        let cpu = process::cpu_time(None)
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        tree.shutdown(Duration::from_secs(5)).await;
        let (wall, mut latencies) = outcome?;
        latencies.sort();
        println!(
            "bench/workflows: {runs} runs of {workflow:?} ({}), {concurrency} at once, model latency {latency:?}, store {store_name}, model {}",
            config.origin,
            if mock { "mock server over HTTP" } else { "scripted" }
        );
        println!(
            "  wall {wall:.2?}, {:.0} runs/s, end-to-end p50 {:.1?} p99 {:.1?}, CPU per run {}, peak RSS {}",
            runs as f64 / wall.as_secs_f64(),
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            cpu.map_or_else(|| "unknown".to_owned(), |cpu| format!("{:.0} µs", cpu.as_secs_f64() * 1e6 / runs as f64)),
            process::mib(process::rss_kib(None).map(|(_, peak)| peak)),
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Makes `config` measure the runtime: `concurrency` runs admitted at once, every pool wide
/// enough for three calls of each (a configured throttle is not what is measured), every
/// scripted model at `latency`, and the store on `redis` under a fresh prefix if given.
fn tune(
    config: &mut Config,
    concurrency: usize,
    latency: Duration,
    redis: Option<&str>,
) -> anyhow::Result<()> {
    config.daemon.max_runs = concurrency;
    config.daemon.max_runs_per_group = concurrency;
    for pool in config.pools.values_mut() {
        pool.max_parallelism = pool.max_parallelism.max(3 * concurrency);
    }
    for model in config.models.values_mut() {
        if let Provider::Scripted { latency: l, .. } = &mut model.provider {
            *l = latency;
        }
    }
    if let Some(url) = redis {
        let text = format!(
            "[store]\nbackend = \"redis\"\nurl = \"{url}\"\nprefix = \"bench-{}:\"",
            std::process::id()
        );
        config.store = troupe_config::load_str(&text, "--redis", &[])
            .map_err(|err| anyhow::anyhow!("--redis {url}: {err}"))?
            .store;
    }
    Ok(())
}

/// Keeps `concurrency` runs in flight until `runs` completed: (wall time, latencies).
async fn drive(
    tree: &Daemon,
    workflow: &str,
    runs: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let one = |i: usize| async move {
        let started = Instant::now();
        let submit = Submit {
            workflow: workflow.to_owned(),
            group: format!("g{}", i % 16),
            user: "bench".to_owned(),
            input: format!("How do async runtimes schedule task {i}?"),
        };
        let id = tree.router.submit(submit).await?;
        let group = format!("g{}", i % 16);
        let record = tree
            .router
            .runs()
            .wait(&group, &id, Duration::from_secs(600))
            .await?;
        if record.status != RunStatus::Completed {
            bail!("run {id} ended {:?}: {:?}", record.status, record.error);
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0;
    let mut latencies = Vec::with_capacity(runs);
    while latencies.len() < runs {
        while next < runs && in_flight.len() < concurrency {
            in_flight.push(one(next));
            next += 1;
        }
        match in_flight.next().await {
            Some(result) => latencies.push(result?),
            None => break,
        }
    }
    Ok((started.elapsed(), latencies))
}
