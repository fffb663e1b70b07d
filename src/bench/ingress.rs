//! `troupe bench ingress`: a load generator for a daemon's public interface. It `XADD`s agent
//! or workflow tasks to the ingress stream from a plain Redis connection and reads their
//! results from the results stream on another, exactly as any client does, either keeping
//! `--concurrency` tasks in flight or sending at a fixed `--rate`. The daemon is a `troupe
//! serve --config FILE` it starts (or the running process `--pid`). It prints throughput,
//! XADD-to-result latency (p50, p99, max), the daemon's CPU per task and memory, and, from
//! `INFO commandstats` and `INFO cpu` before and after, the Redis commands (the daemon's, this
//! generator's own subtracted; commands a script runs count one each, as Redis counts them)
//! and the Redis CPU per task. Not a test: it prints figures.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands as _;
use tokio::sync::Semaphore;
use troupe_config::StoreSettings;

use super::{process, quantile};

/// Tasks per `XADD` pipeline.
const CHUNK: usize = 500;
/// Results read per `XREAD`.
const READ: usize = 2_000;
/// Without a new result for this long the bench gives up.
const STALL: Duration = Duration::from_secs(60);

/// `troupe bench ingress`
#[derive(Debug, clap::Args)]
pub struct IngressArgs {
    /// The daemon's config: its `[store]` (Redis) and `[ingress]` say where tasks and results
    /// go.
    #[arg(long)]
    config: PathBuf,
    /// Send agent tasks to this agent.
    #[arg(
        long,
        conflicts_with = "workflow",
        required_unless_present = "workflow"
    )]
    agent: Option<String>,
    /// Send workflow tasks for this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Tasks measured.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Tasks sent and awaited before the measurement (threads, connections, scripts warm).
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Tasks in flight at once (closed loop).
    #[arg(long, default_value_t = 1_000, conflicts_with = "rate")]
    concurrency: usize,
    /// Send this many tasks per second whatever the results (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Tasks are spread over this many groups (`bench-0`, `bench-1`, …).
    #[arg(long, default_value_t = 16)]
    groups: usize,
    /// The input of every task.
    #[arg(long, default_value = "How do async runtimes schedule tasks?")]
    input: String,
    /// Measure this running daemon instead of starting one.
    #[arg(long)]
    pid: Option<u32>,
}

/// Where tasks go and results come from, as Redis keys.
struct Streams {
    tasks: String,
    results: String,
    group: String,
}

/// Runs `troupe bench ingress`.
pub fn run(args: IngressArgs) -> anyhow::Result<()> {
    ensure!(
        args.tasks > 0 && args.concurrency > 0 && args.groups > 0,
        "--tasks, --concurrency and --groups must be positive"
    );
    if let Some(rate) = args.rate {
        ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of tasks per second"
        );
    }
    let config = troupe_config::load(&args.config).map_err(|err| anyhow::anyhow!("{err}"))?;
    let StoreSettings::Redis(redis) = &config.store else {
        bail!(
            "{}: the ingress needs a Redis store ([store] backend = \"redis\")",
            config.origin
        );
    };
    // What every task asks for: (`agent` or `workflow`, its name).
    let target = match (&args.agent, &args.workflow) {
        (Some(agent), _) => {
            ensure!(
                config.agents.contains_key(agent),
                "no agent {agent:?} in {}",
                config.origin
            );
            ("agent", agent.clone())
        }
        (None, Some(workflow)) => {
            ensure!(
                config.workflows.contains_key(workflow),
                "no workflow {workflow:?} in {}",
                config.origin
            );
            ("workflow", workflow.clone())
        }
        (None, None) => bail!("give --agent NAME or --workflow NAME"),
    };
    let streams = Arc::new(Streams {
        tasks: format!("{}{}", redis.prefix, config.ingress.stream),
        results: format!("{}{}", redis.prefix, config.ingress.results),
        group: config.ingress.group.clone(),
    });
    let url = redis.url.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("a runtime")?;
    runtime.block_on(async move {
        let client = redis::Client::open(url.as_str()).context("the Redis URL")?;
        let mut info = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis")?;
        let mut daemon = match args.pid {
            Some(pid) => Daemon::Running(pid),
            None => Daemon::start(&args.config)?,
        };
        let result = async {
            daemon.wait_ready(&mut info, &streams).await?;
            let task = TaskTemplate {
                target,
                input: args.input.clone(),
                groups: args.groups,
            };
            let load = Load::new(&client, streams.clone(), task).await?;
            if args.warmup > 0 {
                load.drive(
                    "warmup",
                    args.warmup,
                    Some(args.concurrency.min(args.warmup)),
                    None,
                )
                .await?;
            }
            let before = Snapshot::take(&mut info, daemon.pid()).await?;
            let measured = load
                .drive("run", args.tasks, Some(args.concurrency), args.rate)
                .await?;
            let after = Snapshot::take(&mut info, daemon.pid()).await?;
            report(&args, &measured, &before, &after, daemon.pid());
            Ok(())
        }
        .await;
        daemon.stop();
        result
    })
}

/// The daemon measured: one this bench started, or one already running.
enum Daemon {
    Started(Child),
    Running(u32),
}

impl Daemon {
    fn start(config: &std::path::Path) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("this executable's path")?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its warnings and errors, not a line per task.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .spawn()
            .context("starting `troupe serve`")?;
        Ok(Daemon::Started(child))
    }

    fn pid(&self) -> u32 {
        match self {
            Daemon::Started(child) => child.id(),
            Daemon::Running(pid) => *pid,
        }
    }

    /// Until the ingress consumer group has a consumer (30 s at most).
    async fn wait_ready(
        &mut self,
        conn: &mut MultiplexedConnection,
        streams: &Streams,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Daemon::Started(child) = self {
                if let Some(status) = child.try_wait()? {
                    bail!("`troupe serve` exited before its ingress started: {status}");
                }
            }
            let consumers: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&streams.tasks)
                .arg(&streams.group)
                .query_async(conn)
                .await;
            if consumers.is_ok_and(|c| !c.is_empty()) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no consumer in group {:?} of {:?} after 30 s: is the daemon serving this config?",
                streams.group,
                streams.tasks
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Daemon::Started(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one drive measured.
struct Measured {
    wall: Duration,
    latencies: Vec<Duration>,
    failed: usize,
    /// The error of the first task that failed.
    first_error: Option<String>,
    /// Commands this generator sent (`XADD`s and `XREAD`s).
    own_commands: u64,
}

/// Sends tasks and reads their results.
struct Load {
    client: redis::Client,
    streams: Arc<Streams>,
    task: TaskTemplate,
    /// The results stream's last id before this bench sent anything.
    cursor: Mutex<String>,
    /// Tasks sent so far, for unique ids across drives.
    sent: AtomicU64,
    run: String,
}

/// The JSON of a task, but for its id and group.
struct TaskTemplate {
    target: (&'static str, String),
    input: String,
    groups: usize,
}

impl TaskTemplate {
    fn json(&self, id: &str, n: u64) -> String {
        serde_json::json!({
            "id": id,
            self.target.0: self.target.1,
            "input": self.input,
            "group": format!("bench-{}", n % self.groups as u64),
            "user": "bench",
        })
        .to_string()
    }
}

impl Load {
    async fn new(
        client: &redis::Client,
        streams: Arc<Streams>,
        task: TaskTemplate,
    ) -> anyhow::Result<Load> {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let last: StreamRangeReply = conn.xrevrange_count(&streams.results, "+", "-", 1).await?;
        let cursor = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        Ok(Load {
            client: client.clone(),
            streams,
            task,
            cursor: Mutex::new(cursor),
            sent: AtomicU64::new(0),
            run: format!("b{}-{:x}", std::process::id(), rand::random::<u32>()),
        })
    }

    /// Sends `n` tasks, at most `window` in flight or at `rate` per second, and reads their
    /// results.
    async fn drive(
        &self,
        what: &str,
        n: usize,
        window: Option<usize>,
        rate: Option<f64>,
    ) -> anyhow::Result<Measured> {
        let first = self.sent.fetch_add(n as u64, Ordering::Relaxed);
        let ids: Vec<(String, u64)> = (first..first + n as u64)
            .map(|k| (format!("{}-{k}", self.run), k))
            .collect();
        let sent_at: Arc<Mutex<HashMap<String, Instant>>> =
            Arc::new(Mutex::new(HashMap::with_capacity(n)));
        // In a closed loop a permit is a task in flight; an open loop takes none.
        let window_size = window.unwrap_or(usize::MAX);
        let window = match rate {
            Some(_) => None,
            None => window.map(|w| Arc::new(Semaphore::new(w))),
        };
        // Replies wait as long as a blocking read does, and a pipeline of large tasks.
        let patient =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let mut send_conn = self
            .client
            .get_multiplexed_async_connection_with_config(&patient)
            .await?;
        let mut read_conn = self
            .client
            .get_multiplexed_async_connection_with_config(&patient)
            .await?;
        let started = Instant::now();
        let sender = {
            let (streams, sent_at, window) =
                (self.streams.clone(), sent_at.clone(), window.clone());
            let tasks: Vec<(String, String)> = ids
                .iter()
                .map(|(id, k)| (id.clone(), self.task.json(id, *k)))
                .collect();
            async move {
                let mut commands = 0_u64;
                let mut next = 0;
                while next < tasks.len() {
                    let mut take = CHUNK.min(tasks.len() - next);
                    if window.is_some() {
                        // Never more than the window holds, or the sender waits forever.
                        take = take.min(window_size.max(1));
                    }
                    if let Some(rate) = rate {
                        let due =
                            ((started.elapsed().as_secs_f64() * rate) as usize).min(tasks.len());
                        if due <= next {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        take = take.min(due - next);
                    }
                    if let Some(window) = &window {
                        window
                            .acquire_many(u32::try_from(take).unwrap_or(u32::MAX))
                            .await
                            .context("the window closed")?
                            .forget();
                    }
                    let chunk = &tasks[next..next + take];
                    let mut pipe = redis::pipe();
                    for (_, json) in chunk {
                        pipe.xadd(&streams.tasks, "*", &[("task", json.as_str())])
                            .ignore();
                    }
                    {
                        let now = Instant::now();
                        let mut map = sent_at.lock().unwrap_or_else(PoisonError::into_inner);
                        for (id, _) in chunk {
                            map.insert(id.clone(), now);
                        }
                    }
                    let () = pipe.query_async(&mut send_conn).await.context("XADD")?;
                    commands += take as u64;
                    next += take;
                }
                Ok::<u64, anyhow::Error>(commands)
            }
        };
        let mut cursor = self
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let reader = async {
            let options = StreamReadOptions::default().block(1_000).count(READ);
            let mut latencies = Vec::with_capacity(n);
            let mut failed = 0;
            let mut first_error = None;
            let mut commands = 0_u64;
            let mut last_progress = Instant::now();
            while latencies.len() < n {
                let reply: StreamReadReply = read_conn
                    .xread_options(&[&self.streams.results], &[cursor.as_str()], &options)
                    .await
                    .context("XREAD results")?;
                commands += 1;
                let now = Instant::now();
                let mut done = 0;
                for key in reply.keys {
                    for entry in key.ids {
                        cursor.clone_from(&entry.id);
                        let Some(redis::Value::BulkString(json)) = entry.map.get("result") else {
                            continue;
                        };
                        let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
                            continue;
                        };
                        let Some(id) = value["task_id"].as_str() else {
                            continue;
                        };
                        // A workflow task's acceptance: its result follows when the run ends.
                        if value["status"] == "accepted" {
                            continue;
                        }
                        let sent = sent_at
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(id);
                        let Some(sent) = sent else {
                            continue;
                        };
                        latencies.push(now.duration_since(sent));
                        if value["status"] != "ok" {
                            failed += 1;
                            if first_error.is_none() {
                                first_error = Some(value["error"].to_string());
                            }
                        }
                        done += 1;
                    }
                }
                if done > 0 {
                    last_progress = now;
                    if let Some(window) = &window {
                        window.add_permits(done);
                    }
                }
                ensure!(
                    now.duration_since(last_progress) < STALL,
                    "{what}: no result for {STALL:?}; {} of {n} tasks answered",
                    latencies.len()
                );
            }
            Ok::<_, anyhow::Error>((latencies, failed, first_error, commands))
        };
        // Either failing ends both (a sender waiting for a window the reader no longer opens).
        let (sent_commands, (mut latencies, failed, first_error, read_commands)) =
            tokio::try_join!(sender, reader)?;
        let wall = started.elapsed();
        *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = cursor;
        latencies.sort();
        Ok(Measured {
            wall,
            latencies,
            failed,
            first_error,
            own_commands: sent_commands + read_commands,
        })
    }
}

/// Counters read before and after a measurement.
struct Snapshot {
    /// Calls per command (`INFO commandstats`).
    commands: BTreeMap<String, u64>,
    /// Redis's own CPU time (`used_cpu_user` + `used_cpu_sys`), seconds.
    redis_cpu: f64,
    daemon_cpu: Option<Duration>,
}

impl Snapshot {
    async fn take(conn: &mut MultiplexedConnection, pid: u32) -> anyhow::Result<Snapshot> {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
        Ok(Snapshot {
            commands: parse_commandstats(&stats),
            redis_cpu: parse_cpu(&cpu),
            daemon_cpu: process::cpu_time(Some(pid)),
        })
    }
}

/// `cmdstat_xadd:calls=12,usec=…` lines as command → calls.
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// `used_cpu_sys` + `used_cpu_user` of `INFO cpu`, seconds.
fn parse_cpu(info: &str) -> f64 {
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

fn report(args: &IngressArgs, m: &Measured, before: &Snapshot, after: &Snapshot, pid: u32) {
    let n = m.latencies.len().max(1) as f64;
    let target = match (&args.agent, &args.workflow) {
        (Some(agent), _) => format!("agent {agent:?}"),
        (None, workflow) => format!("workflow {:?}", workflow.as_deref().unwrap_or_default()),
    };
    let mode = match args.rate {
        Some(rate) => format!("at {rate:.0} tasks/s"),
        None => format!("{} in flight", args.concurrency),
    };
    println!(
        "bench/ingress: {} tasks for {target}, {mode}, over {} groups ({})",
        m.latencies.len(),
        args.groups,
        args.config.display()
    );
    println!(
        "  wall {:.2?}, {:.0} tasks/s, XADD-to-result p50 {:.2?} p99 {:.2?} max {:.2?}, {} failed",
        m.wall,
        n / m.wall.as_secs_f64(),
        quantile(&m.latencies, 0.5),
        quantile(&m.latencies, 0.99),
        quantile(&m.latencies, 1.0),
        m.failed
    );
    if let Some(error) = &m.first_error {
        println!("  first failure: {error}");
    }
    let daemon_cpu = after
        .daemon_cpu
        .zip(before.daemon_cpu)
        .map(|(a, b)| a.saturating_sub(b));
    let rss = process::rss_kib(Some(pid));
    println!(
        "  daemon (pid {pid}): CPU per task {}, RSS {} (peak {})",
        daemon_cpu.map_or_else(
            || "unknown".to_owned(),
            |cpu| format!("{:.0} µs", cpu.as_secs_f64() * 1e6 / n)
        ),
        process::mib(rss.map(|(now, _)| now)),
        process::mib(rss.map(|(_, peak)| peak)),
    );
    let mut delta: Vec<(String, u64)> = after
        .commands
        .iter()
        .map(|(name, calls)| {
            let was = before.commands.get(name).copied().unwrap_or(0);
            (name.clone(), calls.saturating_sub(was))
        })
        .filter(|(name, calls)| *calls > 0 && name != "info")
        .collect();
    // This generator's own commands: its XADDs and XREADs.
    let own_xadd = m.latencies.len() as u64;
    for (name, calls) in &mut delta {
        match name.as_str() {
            "xadd" => *calls = calls.saturating_sub(own_xadd),
            "xread" => *calls = calls.saturating_sub(m.own_commands.saturating_sub(own_xadd)),
            _ => {}
        }
    }
    delta.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: u64 = delta.iter().map(|(_, c)| c).sum();
    let breakdown: Vec<String> = delta
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(name, calls)| format!("{name} {:.2}", *calls as f64 / n))
        .collect();
    println!(
        "  Redis: {:.1} commands per task by the daemon ({}), Redis CPU per task {:.0} µs",
        total as f64 / n,
        breakdown.join(", "),
        (after.redis_cpu - before.redis_cpu).max(0.0) * 1e6 / n
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_info_is_read_as_counters() {
        let stats = "# Commandstats\r\ncmdstat_xadd:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\ncmdstat_client|setname:calls=2,usec=1\r\n";
        let parsed = parse_commandstats(stats);
        assert_eq!(parsed.get("xadd"), Some(&12));
        assert_eq!(parsed.get("client|setname"), Some(&2));
        let cpu = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9\r\n";
        assert!((parse_cpu(cpu) - 3.75).abs() < 1e-9);
    }
}
