//! Load generator: memory per idle thread actor and per passivated thread. Not criterion: it
//! prints figures.
//!
//! Each measurement runs in a fresh child process (this executable again), so every one starts
//! from the same baseline and no allocator state carries over: it starts the daemon through
//! `troupe::Daemon::builder` (its thread registry on worker arbiters, with mimalloc as the
//! global allocator as in the binary) on the memory store or on a private redis-server, with
//! the scripted model. It then
//!
//! 1. activates N threads by giving each one short turn (a new thread: owner, metadata,
//!    indexes, creation event; the user and the assistant message) and reads the process RSS
//!    (`VmRSS`) after settling: the delta over the baseline, per thread, is what a live idle
//!    thread costs in the process;
//! 2. passivates them through the registry (`passivate_idle`, the path the daemon's sweeper
//!    takes; the config's `passivate_after` is long, so only the bench passivates) and waits
//!    until every actor has stopped. The allocator keeps
//!    freed pages for reuse, so RSS hardly falls; what a passivated thread really leaves in
//!    the process shows when N new threads are activated in their place: the RSS growth over
//!    the first peak, per thread (the actor alone is the live figure minus that);
//! 3. measures what a passivated thread keeps in the store: on the memory store the bytes of
//!    its own keys and values (a sample of threads); on Redis `MEMORY USAGE` over its own keys
//!    (a sample) and the `used_memory` delta of `INFO memory` per thread, which also counts
//!    its entries in the shared per-group indexes and event stream.
//!
//! The parent prints the medians over `REPS` children per backend and size. Run with `cargo
//! bench --bench threads`; `TROUPE_BENCH_THREADS=10000,50000` sets the sizes (default both),
//! `TROUPE_BENCH_REPS` the repetitions (default 3).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use troupe::Daemon;
use troupe_agents::{Ask, Conversations};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_testkit::{eventually, redis as redis_support};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in a child: `BACKEND:N`.
const CHILD: &str = "TROUPE_THREADS_BENCH_CHILD";
/// Set in a child on Redis: the private server's URL.
const REDIS_URL: &str = "TROUPE_THREADS_BENCH_REDIS";
/// Key prefix on Redis.
const PREFIX: &str = "bench:";
/// Pause before each RSS reading: stopped actors dropped, the allocator's purge delay over.
const SETTLE: Duration = Duration::from_secs(3);
/// Turns in flight while activating threads.
const CONCURRENCY: usize = 256;
/// Threads whose keys are measured one by one.
const SAMPLE: usize = 200;
/// Threads activated and passivated before the baseline (connections, scripts, agents' first
/// allocations).
const WARM_UP: usize = 500;

const CONFIG: &str = r#"
[daemon]
passivate_after = "1h"

[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"
"#;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this in test mode: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let sizes: Vec<usize> = std::env::var("TROUPE_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 50_000]);
    let reps: usize = std::env::var("TROUPE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let server = redis_support::start_for_bench("threads (Redis)");
    let mut backends = vec!["memory"];
    if server.is_some() {
        backends.push("redis");
    }
    for backend in backends {
        for &n in &sizes {
            let mut results = Vec::new();
            for rep in 1..=reps {
                if let Some(server) = &server {
                    flush(&server.url());
                }
                let mut command = Command::new(std::env::current_exe().expect("current exe"));
                command.arg("--bench").env(CHILD, format!("{backend}:{n}"));
                if let Some(server) = &server {
                    command.env(REDIS_URL, server.url());
                }
                let output = command.output().expect("run a child measurement");
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(
                    output.status.success(),
                    "child {backend}:{n} failed: {}\n{stdout}\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
                let line = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("RESULT "))
                    .expect("the child prints RESULT");
                let result: BTreeMap<String, f64> =
                    serde_json::from_str(line).expect("RESULT is a JSON object of numbers");
                println!("threads/{backend}/{n} rep {rep}: {line}");
                results.push(result);
            }
            report(backend, n, &results);
        }
    }
}

/// Flushes the bench's own private server (never any other).
fn flush(url: &str) {
    let client = redis::Client::open(url).expect("redis client");
    let mut conn = client
        .get_connection()
        .expect("connect to the private server");
    let () = redis::cmd("FLUSHALL")
        .query(&mut conn)
        .expect("FLUSHALL on the private server");
}

fn median(results: &[BTreeMap<String, f64>], key: &str) -> Option<f64> {
    let mut values: Vec<f64> = results.iter().filter_map(|r| r.get(key).copied()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn report(backend: &str, n: usize, results: &[BTreeMap<String, f64>]) {
    let reps = results.len();
    let line = |label: &str, key: &str| {
        if let Some(v) = median(results, key) {
            println!("threads/{backend}/{n}: {label}: {v:.0} B (median of {reps})");
        }
    };
    line(
        "RSS per live idle thread (actor + what the store keeps in the process)",
        "live_rss_per_thread",
    );
    line("RSS per passivated thread left in the process (growth when as many new threads replace them)", "passivated_rss_per_thread");
    line(
        "RSS of the live actor alone (live minus passivated)",
        "actor_rss_per_thread",
    );
    line(
        "RSS not given back to the OS after passivation (allocator keeps freed pages)",
        "rss_not_returned_per_thread",
    );
    line(
        "store: bytes of a thread's own keys and values (memory store, sample)",
        "memory_store_own_bytes",
    );
    line(
        "store: MEMORY USAGE of a thread's own keys (Redis, sample)",
        "redis_own_keys_bytes",
    );
    line(
        "store: Redis used_memory delta per thread (own keys + shared indexes, events, usage)",
        "redis_used_memory_per_thread",
    );
}

/// The process's resident set, in bytes.
fn rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024.0
}

fn child(spec: &str) {
    let (backend, n) = spec.split_once(':').expect("BACKEND:N");
    let n: usize = n.parse().expect("N");
    let system = actix::System::new();
    let result = system.block_on(measure(backend, n));
    println!(
        "RESULT {}",
        serde_json::to_string(&result).expect("serialize the result")
    );
}

fn ask(i: usize) -> Ask {
    Ask {
        group: "bench".into(),
        user: "u".into(),
        agent: "echo".into(),
        thread: None,
        input: format!("hello {i}"),
        stream: false,
        started: None,
    }
}

/// Activates `count` new threads with one turn each; returns the first `SAMPLE` thread ids.
async fn activate(talk: &Conversations, from: usize, count: usize) -> Vec<String> {
    let turns = futures::stream::iter(from..from + count).map(|i| {
        let talk = talk.clone();
        async move { talk.ask(ask(i)).await.expect("turn") }
    });
    let mut turns = turns.buffer_unordered(CONCURRENCY);
    let mut sample = Vec::new();
    while let Some(outcome) = turns.next().await {
        if sample.len() < SAMPLE {
            sample.push(outcome.thread);
        }
    }
    sample
}

/// Passivates every thread and waits until no actor is live.
async fn passivate_all(talk: &Conversations, expected: usize) {
    let passivated = talk.passivate_idle(Duration::ZERO);
    assert_eq!(passivated, expected, "every thread is idle");
    eventually("threads still live", Duration::from_secs(60), || async {
        talk.thread_stats().active == 0
    })
    .await;
}

async fn measure(backend: &str, n: usize) -> BTreeMap<String, f64> {
    let redis_url = std::env::var(REDIS_URL).ok();
    let store: Arc<dyn Store> = match backend {
        "memory" => Arc::new(MemoryStore::new()),
        "redis" => {
            let mut options = RedisOptions::new(redis_url.clone().expect("REDIS url"));
            options.prefix = PREFIX.to_owned();
            Arc::new(RedisStore::connect(options).await.expect("connect"))
        }
        other => panic!("unknown backend {other}"),
    };
    let config = troupe_config::load_str(CONFIG, "troupe.toml", &[]).expect("config");
    // No ingress: the bench is the only client.
    let daemon = Daemon::builder(&config, store.clone())
        .ingress(false)
        .start()
        .expect("daemon");
    let talk = daemon.conversations.clone();
    let mut redis = match &redis_url {
        Some(url) if backend == "redis" => Some(
            redis::Client::open(url.as_str())
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("connect"),
        ),
        _ => None,
    };

    activate(&talk, 0, WARM_UP).await;
    passivate_all(&talk, WARM_UP).await;
    tokio::time::sleep(SETTLE).await;
    let rss0 = rss();
    let used0 = match &mut redis {
        Some(conn) => used_memory(conn).await,
        None => 0.0,
    };

    let started = Instant::now();
    let sample = activate(&talk, WARM_UP, n).await;
    let activation = started.elapsed();
    assert_eq!(talk.thread_stats().active, n);
    tokio::time::sleep(SETTLE).await;
    let rss1 = rss();

    passivate_all(&talk, n).await;
    tokio::time::sleep(SETTLE).await;
    let rss2 = rss();
    // The allocator keeps freed pages for reuse, so RSS hardly falls after a passivation.
    // What the passivated threads really keep shows when as many new threads replace them:
    // the growth over the first round's peak.
    let used1 = match &mut redis {
        Some(conn) => used_memory(conn).await,
        None => 0.0,
    };
    activate(&talk, WARM_UP + n, n).await;
    tokio::time::sleep(SETTLE).await;
    let rss3 = rss();

    let per = |bytes: f64| bytes / n as f64;
    let mut out = BTreeMap::new();
    out.insert("threads".to_owned(), n as f64);
    out.insert("activation_s".to_owned(), activation.as_secs_f64());
    out.insert("rss_baseline_mib".to_owned(), rss0 / 1_048_576.0);
    out.insert("live_rss_per_thread".to_owned(), per(rss1 - rss0));
    out.insert("rss_not_returned_per_thread".to_owned(), per(rss2 - rss0));
    out.insert("passivated_rss_per_thread".to_owned(), per(rss3 - rss1));
    out.insert(
        "actor_rss_per_thread".to_owned(),
        per(rss1 - rss0 - (rss3 - rss1)),
    );
    match &mut redis {
        Some(conn) => {
            out.insert(
                "redis_used_memory_per_thread".to_owned(),
                per(used1 - used0),
            );
            let mut own = 0.0;
            for thread in &sample {
                for key in own_keys(thread) {
                    let bytes: Option<u64> = redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(format!("{PREFIX}{key}"))
                        .arg("SAMPLES")
                        .arg(0)
                        .query_async(conn)
                        .await
                        .expect("MEMORY USAGE");
                    own += bytes.unwrap_or(0) as f64;
                }
            }
            out.insert("redis_own_keys_bytes".to_owned(), own / sample.len() as f64);
        }
        None => {
            let mut own = 0.0;
            for thread in &sample {
                own += own_bytes(store.as_ref(), thread).await;
            }
            out.insert(
                "memory_store_own_bytes".to_owned(),
                own / sample.len() as f64,
            );
        }
    }
    daemon.shutdown(Duration::from_secs(5)).await;
    out
}

/// A thread's own keys (see `agents/src/thread_store.rs`); its entries in the group's and
/// the user's thread lists and the group's event stream are shared keys.
fn own_keys(thread: &str) -> [String; 3] {
    [
        format!("thread-owner:{thread}"),
        format!("thread:bench:{thread}:meta"),
        format!("thread:bench:{thread}:messages"),
    ]
}

/// Key and value bytes of a thread's own keys on the memory store, plus its id in the two
/// thread lists.
async fn own_bytes(store: &dyn Store, thread: &str) -> f64 {
    let [owner, meta, messages] = own_keys(thread);
    let mut bytes = 0usize;
    for key in [&owner, &meta] {
        let value = store.get(key).await.expect("get").expect("the key exists");
        bytes += key.len() + value.len();
    }
    let items = store.range(&messages, 0, -1).await.expect("range");
    bytes += messages.len() + items.iter().map(Vec::len).sum::<usize>();
    bytes += 2 * thread.len();
    bytes as f64
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}
