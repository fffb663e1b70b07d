//! `troupe bench workflows`: a load generator for the research pipeline of
//! `examples/research.toml` (classify, three research agents in parallel, synthesis, report,
//! archive — every step journaled) on the real actor tree of this process, with the scripted
//! model at a chosen latency, on the memory store or a Redis. It keeps `--concurrency` runs in
//! flight until `--runs` have completed and prints runs per second, wall time, end-to-end
//! latency (p50, p99) and the process's peak RSS. Not a test: it prints figures.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Subcommand;
use futures::stream::{FuturesUnordered, StreamExt};
use troupe_workflow::{RunStatus, Submit};

use crate::demo::{RESEARCH, RESEARCH_RULES};
use crate::serve::open_store;
use troupe::Daemon;

/// `troupe bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Runs of the research pipeline: runs/s, wall time, latency, peak RSS.
    Workflows {
        /// Runs to complete.
        #[arg(long, default_value_t = 5_000)]
        runs: usize,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 5_000)]
        concurrency: usize,
        /// Latency of every model call.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
        latency: Duration,
        /// Journal on this Redis (`redis://…`) instead of the memory store.
        #[arg(long)]
        redis: Option<String>,
        /// Call the model over HTTP: the mock OpenAI-compatible server, started in this
        /// process with the same replies and latency, through the OpenAI client.
        #[arg(long)]
        mock: bool,
    },
}

/// Runs `troupe bench …`.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Workflows {
        runs,
        concurrency,
        latency,
        redis,
        mock,
    } = command;
    ensure!(
        runs > 0 && concurrency > 0,
        "--runs and --concurrency must be positive"
    );
    let dir = std::env::temp_dir().join(format!("troupe-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("scripted")).context("creating a temp dir")?;
    std::fs::write(dir.join("scripted").join("research.toml"), RESEARCH_RULES)
        .context("writing the scripted rules")?;
    let store = match &redis {
        None => "[store]\nbackend = \"memory\"".to_owned(),
        Some(url) => format!(
            "[store]\nbackend = \"redis\"\nurl = \"{url}\"\nprefix = \"bench-{}:\"",
            std::process::id()
        ),
    };
    let text = RESEARCH
        .replace("[store]\nbackend = \"memory\"", &store)
        .replace(
            "latency = \"20ms\"",
            &format!("latency = \"{}ms\"", latency.as_millis()),
        )
        // Every research call of every run at once: the bench measures the runtime, not a
        // configured throttle.
        .replace(
            "max_parallelism = 8",
            &format!("max_parallelism = {}", 3 * concurrency),
        )
        .replace(
            "[store]",
            &format!("[daemon]\nmax_runs = {concurrency}\n\n[store]"),
        );
    let origin = dir.join("research.toml").display().to_string();
    let system = actix::System::new();
    let result = system.block_on(async move {
        // Kept alive for the whole run.
        let mut _server = None;
        let text = if mock {
            let mut rules = troupe_mock_llm::MockConfig::from_toml(RESEARCH_RULES, "research rules")
                .map_err(|err| anyhow::anyhow!("the research rules: {err}"))?;
            rules.latency = latency;
            let server = troupe_mock_llm::MockServer::start(rules).await?;
            let url = server.base_url();
            _server = Some(server);
            text.replace(
                &format!(
                    "provider = \"scripted\"\nscript = \"scripted/research.toml\"\nlatency = \"{}ms\"",
                    latency.as_millis()
                ),
                &format!("provider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"mock-model\""),
            )
        } else {
            text
        };
        let config = troupe_config::load_str(&text, &origin, &[])
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let store = open_store(&config.store).await?;
        let tree = Daemon::builder(&config, store).start()?;
        let outcome = drive(&tree, runs, concurrency).await;
        tree.shutdown(Duration::from_secs(5)).await;
        let (wall, mut latencies) = outcome?;
        latencies.sort();
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        println!(
            "bench/workflows: {runs} research runs, {concurrency} at once, model latency {latency:?}, store {}, model {}",
            redis.as_deref().map_or("memory", |_| "redis"),
            if mock { "mock server over HTTP" } else { "scripted" }
        );
        println!(
            "  wall {wall:.2?}, {:.0} runs/s, end-to-end p50 {:.1?} p99 {:.1?}, peak RSS {}",
            runs as f64 / wall.as_secs_f64(),
            at(0.5),
            at(0.99),
            peak_rss().map_or_else(|| "unknown".to_owned(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Keeps `concurrency` runs in flight until `runs` completed: (wall time, latencies).
async fn drive(
    tree: &Daemon,
    runs: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let one = |i: usize| async move {
        let started = Instant::now();
        let submit = Submit {
            workflow: "research".to_owned(),
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

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
