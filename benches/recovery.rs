//! Load generator: recovery time after SIGKILL with 1,000 workflow runs in flight. Not
//! criterion: it prints figures.
//!
//! Starts a private redis-server and this build's `troupe serve` with the research pipeline of
//! `examples/research.toml` (the file itself, patched: Redis store, the scripted model's
//! latency per call raised so runs are mid-flight, the `research` pool wide enough for every
//! run's three parallel calls, `[daemon] max_runs` above the number of runs). It submits the
//! runs through the store API (`Runs::submit`, what `troupe workflow start` does), waits until
//! every run has journaled a started step, SIGKILLs the daemon and starts it again at once:
//!
//! - **same name**: the restarted daemon has the killed one's `daemon.name`, so the run leases
//!   it finds are its own and it takes them back at once (a supervisor restarting the daemon
//!   in place);
//! - **new name**: the restarted daemon has another name, so it must wait for the killed
//!   daemon's leases to expire (another node taking over).
//!
//! Measured from the restart (the moment the process is spawned), from journal timestamps
//! read after the fact, so that the bench adds no load while the daemon recovers (it only
//! reads `HLEN wf-open` every 100 ms to see the end): when the router started (log line),
//! when the last run was adopted (its `adopted` entry), when the last run journaled a started
//! step again, when the last run completed a call again, and when the last run completed (its
//! record's last update). Every run is checked to have completed with an output. Medians over
//! `REPS` repetitions per mode.
//!
//! Run with `cargo bench --bench recovery`. `TROUPE_BENCH_RUNS` (default 1000),
//! `TROUPE_BENCH_LATENCY` (per model call, default `2s`), `TROUPE_BENCH_REPS` (default 3),
//! `TROUPE_BENCH_MODES` (`same`, `new` or `same,new`, the default), `TROUPE_BENCH_KILL_AFTER`
//! (how long after every run has started a step the daemon is killed, default `0s`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use troupe_runtime::store::{RedisOptions, RedisStore, Store};
use troupe_workflow::{EntryKind, RunStatus, Runs, Submit};

use troupe_testkit::redis as redis_support;

use troupe_testkit::daemon;

/// Key prefix of the daemons' Redis keys.
const PREFIX: &str = "rec:";
/// Store calls in flight when submitting and reading runs.
const CONCURRENCY: usize = 64;
/// The name of the daemon that is killed (and of its successor in the `same` mode).
const FIRST: &str = "bench-a";
/// The successor's name in the `new` mode.
const SECOND: &str = "bench-b";

/// `examples/research.toml` with a Redis store, the model's `latency`, a pool wide enough for
/// `runs` runs and the daemon `name`.
fn config(url: &str, name: &str, runs: usize, latency: &str) -> tempfile::NamedTempFile {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let example =
        std::fs::read_to_string(format!("{dir}/research.toml")).expect("read the example");
    let mut text = format!(
        "[daemon]\nname = \"{name}\"\nmax_runs = {}\nshutdown_grace = \"5s\"\n\n",
        runs * 2
    );
    let mut patched = example;
    for (from, to) in [
        (
            "backend = \"memory\"".to_owned(),
            format!("backend = \"redis\"\nurl = \"{url}\"\nprefix = \"{PREFIX}\""),
        ),
        (
            "script = \"scripted/research.toml\"".to_owned(),
            format!("script = \"{dir}/scripted/research.toml\""),
        ),
        (
            "latency = \"20ms\"".to_owned(),
            format!("latency = \"{latency}\""),
        ),
        (
            "max_parallelism = 8 ".to_owned(),
            format!("max_parallelism = {} ", runs * 3),
        ),
    ] {
        assert!(
            patched.contains(&from),
            "examples/research.toml no longer contains {from:?}: update this bench"
        );
        patched = patched.replace(&from, &to);
    }
    text.push_str(&patched);
    daemon::config_file(&text)
}

use troupe_runtime::clock::now_ms;

fn serve(file: &tempfile::NamedTempFile) -> daemon::Daemon {
    let path = file.path().to_str().expect("utf-8 path");
    daemon::Daemon::spawn(&["serve", "--config", path])
}

/// What one repetition measured, in ms from the restart.
struct Recovery {
    /// Runs submitted, and in flight (not completed) at the kill.
    in_flight: usize,
    /// Runs with a completed step at the kill.
    with_completed_step: usize,
    router_started: u64,
    first_adopted: u64,
    all_adopted: u64,
    all_resumed: u64,
    /// Every run completed a call after the restart.
    all_progressed: u64,
    all_completed: u64,
    /// The adoption times' median (half the runs were adopted by then).
    median_adopted: u64,
}

/// Submits `n` runs; returns their ids.
async fn submit(runs: &Runs, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let runs = runs.clone();
            async move {
                runs.submit(Submit {
                    workflow: "research".into(),
                    group: "bench".into(),
                    user: "u".into(),
                    input: format!("How do async runtimes schedule task {i}?"),
                })
                .await
                .expect("submit")
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// Every run's journal, in the order of `ids`.
async fn journals(runs: &Runs, ids: &[String]) -> Vec<Vec<troupe_workflow::Entry>> {
    futures::stream::iter(ids)
        .map(|id| {
            let runs = runs.clone();
            async move { runs.journal_entries("bench", id).await.expect("journal") }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

async fn open_runs(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("HLEN")
        .arg(format!("{PREFIX}wf-open"))
        .query_async(conn)
        .await
        .expect("HLEN wf-open")
}

fn repetition(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    mode: &str,
    n: usize,
    latency: &str,
    kill_after: Duration,
) -> Recovery {
    let first = config(url, FIRST, n, latency);
    let second = config(url, if mode == "same" { FIRST } else { SECOND }, n, latency);
    let loaded = troupe_config::load(first.path()).expect("the patched example is valid");
    let (runs, mut conn) = runtime.block_on(async {
        let mut options = RedisOptions::new(url);
        options.prefix = PREFIX.to_owned();
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(options).await.expect("connect"));
        let conn = redis::Client::open(url)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        (Runs::new(store, loaded.workflows.clone()), conn)
    });

    let mut daemon = serve(&first);
    daemon.wait_for_log("workflow router started", Duration::from_secs(30));
    let ids = runtime.block_on(submit(&runs, n));
    // Wait until every run has started a step: all of them in flight. Not `eventually`: it
    // reads every journal, so it polls slowly, not to load the daemon it measures.
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let journals = runtime.block_on(journals(&runs, &ids));
        let started = journals
            .iter()
            .filter(|j| j.iter().any(|e| e.kind == EntryKind::Started))
            .count();
        if started == n {
            break journals;
        }
        assert!(
            Instant::now() < deadline,
            "only {started} of {n} runs started a step"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(kill_after);
    let at_kill = if kill_after.is_zero() {
        at_kill
    } else {
        runtime.block_on(journals(&runs, &ids))
    };
    daemon.signal("KILL");
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "the daemon survived SIGKILL"
    );
    let killed_ms = now_ms();
    drop(daemon);
    let with_completed_step = at_kill
        .iter()
        .filter(|j| j.iter().any(|e| e.kind == EntryKind::Completed))
        .count();
    let open = runtime.block_on(open_runs(&mut conn)) as usize;

    let restart_ms = now_ms();
    let restarted = Instant::now();
    let mut daemon = serve(&second);
    daemon.wait_for_log("workflow router started", Duration::from_secs(30));
    let router_started = restarted.elapsed().as_millis() as u64;
    // Not `eventually`: it polls slowly, not to load the recovery it measures.
    let deadline = Instant::now() + Duration::from_secs(300);
    while runtime.block_on(open_runs(&mut conn)) > 0 {
        assert!(
            Instant::now() < deadline,
            "runs still open 300 s after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Nothing lost: every run completed, and was adopted by the restarted daemon.
    let mut last_update = 0;
    for id in &ids {
        let record = runtime
            .block_on(runs.record("bench", id))
            .expect("the run's record");
        assert_eq!(
            record.status,
            RunStatus::Completed,
            "run {id}: {:?}",
            record.error
        );
        assert!(record.output.as_deref().is_some_and(|o| !o.is_empty()));
        last_update = last_update.max(record.updated_ms);
    }
    let after = runtime.block_on(journals(&runs, &ids));
    let since = |at: u64| at.saturating_sub(restart_ms);
    let mut adopted = Vec::with_capacity(n);
    let mut resumed = Vec::with_capacity(n);
    let mut progressed = 0;
    for (id, journal) in ids.iter().zip(&after) {
        let adoption = journal
            .iter()
            .find(|e| e.kind == EntryKind::Adopted && e.at >= killed_ms)
            .unwrap_or_else(|| panic!("run {id} was not adopted after the restart"));
        adopted.push(since(adoption.at));
        let start = journal
            .iter()
            .find(|e| e.kind == EntryKind::Started && e.at >= killed_ms)
            .unwrap_or_else(|| panic!("run {id} started no step after the restart"));
        resumed.push(since(start.at));
        let done = journal
            .iter()
            .find(|e| e.kind == EntryKind::Completed && e.at >= killed_ms)
            .unwrap_or_else(|| panic!("run {id} completed no call after the restart"));
        progressed = progressed.max(since(done.at));
    }
    adopted.sort_unstable();
    resumed.sort_unstable();
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(10));
    Recovery {
        in_flight: open,
        with_completed_step,
        router_started,
        first_adopted: adopted[0],
        all_adopted: adopted[n - 1],
        median_adopted: adopted[n / 2],
        all_resumed: resumed[n - 1],
        all_progressed: progressed,
        all_completed: since(last_update),
    }
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this in test mode: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(server) = redis_support::start_for_bench("recovery") else {
        return;
    };
    let env = |name: &str| std::env::var(name).ok();
    let n: usize = env("TROUPE_BENCH_RUNS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let latency = env("TROUPE_BENCH_LATENCY").unwrap_or_else(|| "2s".to_owned());
    let reps: usize = env("TROUPE_BENCH_REPS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let kill_after = env("TROUPE_BENCH_KILL_AFTER")
        .map(|v| humantime::parse_duration(&v).expect("TROUPE_BENCH_KILL_AFTER: a duration"))
        .unwrap_or(Duration::ZERO);
    let modes = env("TROUPE_BENCH_MODES").unwrap_or_else(|| "same,new".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for mode in modes.split(',').map(str::trim) {
        assert!(mode == "same" || mode == "new", "unknown mode {mode}");
        let mut figures: Vec<(&str, Vec<u64>)> = Vec::new();
        for rep in 1..=reps {
            // Our own private server: nothing of another repetition left behind.
            let () = runtime
                .block_on(async {
                    let mut conn = redis::Client::open(server.url())?
                        .get_multiplexed_async_connection()
                        .await?;
                    redis::cmd("FLUSHALL").query_async(&mut conn).await
                })
                .expect("FLUSHALL on the private server");
            let r = repetition(&runtime, &server.url(), mode, n, &latency, kill_after);
            println!(
                "recovery/{mode} rep {rep}: {} runs in flight at the kill ({} with a completed \
                 step); from the restart: router started {} ms, first adopted {} ms, half {} ms, \
                 all adopted {} ms, all resumed a step {} ms, all completed a call {} ms, all \
                 completed {} ms",
                r.in_flight,
                r.with_completed_step,
                r.router_started,
                r.first_adopted,
                r.median_adopted,
                r.all_adopted,
                r.all_resumed,
                r.all_progressed,
                r.all_completed
            );
            for (key, value) in [
                ("router started", r.router_started),
                ("first adopted", r.first_adopted),
                ("half adopted", r.median_adopted),
                ("all adopted", r.all_adopted),
                ("all resumed a step", r.all_resumed),
                ("all completed a call", r.all_progressed),
                ("all completed", r.all_completed),
            ] {
                match figures.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, values)) => values.push(value),
                    None => figures.push((key, vec![value])),
                }
            }
        }
        for (key, mut values) in figures {
            println!(
                "recovery/{mode} ({n} runs, model latency {latency}): {key} {} ms after the \
                 restart (median of {reps})",
                median(&mut values)
            );
        }
    }
    drop(server);
}
