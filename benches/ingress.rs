//! Load generator: tasks through Redis Streams. Starts a private redis-server and this build's
//! `troupe serve` (one scripted agent, Redis store), publishes tasks with plain `XADD` from a
//! separate Redis connection — exactly what any client does — and reads the results stream.
//!
//! - throughput: `BURST` tasks XADDed in pipelined chunks, timed from the first XADD to the
//!   last result read; median of `RUNS` bursts.
//! - latency: one task at a time (light load), XADD to its result read back; p50 and p99.
//!
//! Run with `cargo bench --bench ingress` (release build of the daemon). Set
//! `TROUPE_BENCH_TASKS` to change the burst size. Not a timed assertion: it prints figures.

use std::collections::HashSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

use troupe_testkit::redis as redis_support;

use troupe_testkit::daemon;

/// Bursts measured for throughput.
const RUNS: usize = 5;
/// Tasks XADDed per pipeline round trip.
const CHUNK: usize = 500;
/// Sequential tasks for the latency figures.
const LATENCY_SAMPLES: usize = 2_000;

/// The Redis keys of the default streams under the default prefix `troupe:`.
const TASKS: &str = "troupe:tasks";
const RESULTS: &str = "troupe:results";

fn config(url: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        r#"
[daemon]
name = "bench"
passivate_after = "2s"

[store]
backend = "redis"
url = "{url}"

[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"
"#
    );
    file.write_all(text.as_bytes()).expect("write config");
    file
}

fn task(id: &str) -> String {
    format!(r#"{{"id":"{id}","agent":"echo","input":"hello {id}","group":"bench","user":"u"}}"#)
}

/// Reads results after `after` until every id in `want` has one; returns the last entry id.
async fn await_results(
    conn: &mut MultiplexedConnection,
    after: &mut String,
    want: &mut HashSet<String>,
) {
    let options = StreamReadOptions::default().block(5_000).count(2_000);
    while !want.is_empty() {
        let reply: StreamReadReply = conn
            .xread_options(&[RESULTS], &[after.as_str()], &options)
            .await
            .expect("XREAD results");
        assert!(
            !reply.keys.is_empty(),
            "no result within 5 s; {} missing",
            want.len()
        );
        for key in reply.keys {
            for entry in key.ids {
                after.clone_from(&entry.id);
                let Some(redis::Value::BulkString(json)) = entry.map.get("result") else {
                    continue;
                };
                let value: serde_json::Value = serde_json::from_slice(json).expect("result JSON");
                assert_eq!(value["status"], "ok", "a failed task: {value}");
                if let Some(id) = value["task_id"].as_str() {
                    want.remove(id);
                }
            }
        }
    }
}

async fn burst(conn: &mut MultiplexedConnection, run: usize, n: usize, after: &mut String) -> f64 {
    let ids: Vec<String> = (0..n).map(|i| format!("r{run}-{i}")).collect();
    let mut want: HashSet<String> = ids.iter().cloned().collect();
    let started = Instant::now();
    for chunk in ids.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.xadd(TASKS, "*", &[("task", task(id))]).ignore();
        }
        let () = pipe.query_async(conn).await.expect("XADD pipeline");
    }
    await_results(conn, after, &mut want).await;
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this in test mode: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(server) = redis_support::start_for_bench("ingress") else {
        return;
    };
    let n: usize = std::env::var("TROUPE_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let file = config(&server.url());
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = daemon::Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("ingress consumer started", Duration::from_secs(30));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = redis::Client::open(server.url()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut after = "0".to_owned();
        // Warm up: threads, connections, scripts.
        burst(&mut conn, 0, 2_000, &mut after).await;

        let mut rates: Vec<f64> = Vec::new();
        for run in 1..=RUNS {
            let rate = burst(&mut conn, run, n, &mut after).await;
            println!("ingress/throughput run {run}: {n} tasks, {rate:.0} tasks/s");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "ingress/throughput: median {:.0} tasks/s (min {:.0}, max {:.0}) over {RUNS} bursts of {n}",
            rates[RUNS / 2],
            rates[0],
            rates[RUNS - 1]
        );

        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES {
            let id = format!("lat-{i}");
            let mut want = HashSet::from([id.clone()]);
            let started = Instant::now();
            let _: String = conn
                .xadd(TASKS, "*", &[("task", task(&id))])
                .await
                .expect("XADD");
            await_results(&mut conn, &mut after, &mut want).await;
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "ingress/latency (XADD to result, one task at a time, {LATENCY_SAMPLES} tasks): \
             p50 {:?}, p99 {:?}, max {:?}",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples[samples.len() - 1]
        );
    });
    drop(daemon);
    drop(server);
}
