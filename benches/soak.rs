//! Soak load generator: mixed traffic through two daemons sharing a private Redis for a
//! configurable time, then quiet until every retention has passed. Prints the Redis key
//! count and memory before, at the peak and after, the key families that differ, and the
//! daemons' resident memory: with every key bounded, keys and memory return to where they
//! started.
//!
//! Traffic, published with plain `XADD` by a separate client and answered on 16 reply
//! streams: new single-turn threads, conversations continued over several turns on a
//! thread-memory agent (alternating between the daemons), streamed turns (delta streams),
//! workflow runs (an agent step, two parallel calls in a work pool, a synthesis) and
//! malformed entries (dead letters). Every retention — threads, runs, pools, reply streams and
//! task records — is `TROUPE_SOAK_RETENTION` seconds (default 20), so "after" comes minutes,
//! not days, later.
//!
//! Run with `cargo bench --bench soak`. `TROUPE_SOAK_SECS` (default 60) sets the traffic
//! time, `TROUPE_SOAK_RATE` (default 100) the tasks per second. Not a timed assertion: it
//! prints figures (BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

use troupe_testkit::redis as redis_support;

use troupe_testkit::daemon;

/// The ingress stream under the default prefix `troupe:`.
const TASKS: &str = "troupe:tasks";
/// Tenant groups.
const GROUPS: usize = 4;
/// Reply streams per group.
const CLIENTS: usize = 4;
/// Users per group (each with its thread-memory namespace).
const USERS: usize = 8;
/// Turns of a conversation.
const TURNS: u32 = 4;
/// Most tasks awaiting their result; publishing pauses above it.
const MAX_PENDING: usize = 2_000;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(url: &str, name: &str, retention: u64) -> tempfile::NamedTempFile {
    let text = format!(
        r#"
[daemon]
name = "{name}"
passivate_after = "2s"
thread_retention = "{retention}s"
run_retention = "{retention}s"

[store]
backend = "redis"
url = "{url}"

[ingress]
reply_retention = "{retention}s"
max_len = 1000

[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"

[agents.mem]
model = "scripted"
[agents.mem.memory]
limit = 2

[pools.research]
max_parallelism = 64
retention = "{retention}s"

[workflows.pipeline]
[[workflows.pipeline.steps]]
name = "classify"
kind = "agent"
agent = "echo"
[[workflows.pipeline.steps]]
name = "research"
kind = "parallel"
agents = ["echo", "mem"]
pool = "research"
[[workflows.pipeline.steps]]
name = "synthesis"
kind = "agent"
agent = "echo"
input = "SYNTHESIZE {{{{steps.research.output}}}}"
"#
    );
    daemon::config_file(&text)
}

/// A conversation in progress: its group, user, thread and turns so far.
struct Conversation {
    group: usize,
    user: usize,
    thread: String,
    turns: u32,
}

/// The client side: what was published, what is awaited, where each reply stream was read.
struct Traffic {
    next: u64,
    /// Task id -> the conversation it continues or starts (its group and user).
    pending: HashMap<String, Option<(usize, usize, u32)>>,
    ready: VecDeque<Conversation>,
    after: BTreeMap<String, String>,
    published: u64,
    dead: u64,
    errors: u64,
}

impl Traffic {
    fn new() -> Traffic {
        let mut after = BTreeMap::new();
        for g in 0..GROUPS {
            for c in 0..CLIENTS {
                after.insert(reply_stream(g, c), "0".to_owned());
            }
        }
        Traffic {
            next: 0,
            pending: HashMap::new(),
            ready: VecDeque::new(),
            after,
            published: 0,
            dead: 0,
            errors: 0,
        }
    }

    /// The next task of the mix (or a malformed entry), as the entry's `task` field.
    fn task(&mut self) -> String {
        let i = self.next;
        self.next += 1;
        let id = format!("s{i}");
        let g = (i as usize) % GROUPS;
        let reply = format!("results:g{g}:c{}", (i as usize / GROUPS) % CLIENTS);
        let user = (i as usize / 7) % USERS;
        match i % 20 {
            // A malformed entry: dead-lettered, never answered.
            19 => {
                self.dead += 1;
                return format!("{{\"id\": \"{id}\", \"agent\": 42, \"input\": [\"");
            }
            // Workflow runs.
            0..=4 => {
                self.pending.insert(id.clone(), None);
                return format!(
                    r#"{{"id":"{id}","workflow":"pipeline","input":"question {i}","group":"g{g}","user":"u{user}","reply_to":"{reply}"}}"#
                );
            }
            // A streamed single turn.
            5..=6 => {
                self.pending.insert(id.clone(), None);
                return format!(
                    r#"{{"id":"{id}","agent":"echo","input":"stream {i}","group":"g{g}","user":"u{user}","reply_to":"{reply}","stream":true}}"#
                );
            }
            // The next turn of a conversation, when one is ready.
            7..=12 => {
                if let Some(c) = self.ready.pop_front() {
                    let reply = format!("results:g{}:c{}", c.group, c.turns as usize % CLIENTS);
                    self.pending
                        .insert(id.clone(), Some((c.group, c.user, c.turns + 1)));
                    return format!(
                        r#"{{"id":"{id}","agent":"mem","input":"turn {} about topic {i}","group":"g{}","user":"u{}","thread":"{}","reply_to":"{reply}"}}"#,
                        c.turns + 1,
                        c.group,
                        c.user,
                        c.thread
                    );
                }
            }
            _ => {}
        }
        // A new conversation on the memory agent (every fourth), or a new one-turn thread.
        if i.is_multiple_of(4) {
            self.pending.insert(id.clone(), Some((g, user, 1)));
            format!(
                r#"{{"id":"{id}","agent":"mem","input":"first turn about topic {i}","group":"g{g}","user":"u{user}","reply_to":"{reply}"}}"#
            )
        } else {
            self.pending.insert(id.clone(), None);
            format!(
                r#"{{"id":"{id}","agent":"echo","input":"hello {i}","group":"g{g}","user":"u{user}","reply_to":"{reply}"}}"#
            )
        }
    }

    async fn publish(&mut self, conn: &mut MultiplexedConnection, n: usize) {
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.xadd(TASKS, "*", &[("task", self.task())]).ignore();
        }
        let () = pipe.query_async(conn).await.expect("XADD pipeline");
        self.published += n as u64;
    }

    /// Reads the results that arrived (waiting at most `block`).
    async fn read(&mut self, conn: &mut MultiplexedConnection, block: Duration) {
        let options = StreamReadOptions::default()
            .block(block.as_millis() as usize)
            .count(1_000);
        let keys: Vec<String> = self.after.keys().cloned().collect();
        let ids: Vec<String> = self.after.values().cloned().collect();
        let reply: StreamReadReply = conn
            .xread_options(&keys, &ids, &options)
            .await
            .expect("XREAD results");
        for key in reply.keys {
            for entry in key.ids {
                self.after.insert(key.key.clone(), entry.id.clone());
                let Some(redis::Value::BulkString(json)) = entry.map.get("result") else {
                    continue;
                };
                let value: serde_json::Value = serde_json::from_slice(json).expect("result JSON");
                let status = value["status"].as_str().unwrap_or_default();
                if status == "accepted" {
                    continue;
                }
                let Some(id) = value["task_id"].as_str() else {
                    continue;
                };
                let Some(conversation) = self.pending.remove(id) else {
                    continue;
                };
                if status != "ok" {
                    self.errors += 1;
                    if self.errors <= 3 {
                        eprintln!("soak: task {id} ended {status}: {value}");
                    }
                    continue;
                }
                if let (Some((group, user, turns)), Some(thread)) =
                    (conversation, value["thread"].as_str())
                {
                    if turns < TURNS {
                        self.ready.push_back(Conversation {
                            group,
                            user,
                            thread: thread.to_owned(),
                            turns,
                        });
                    }
                }
            }
        }
    }

    /// Publishes `rate` tasks a second for `time`, reading results meanwhile, then reads
    /// until every task is answered.
    async fn run(&mut self, conn: &mut MultiplexedConnection, rate: u64, time: Duration) {
        let started = Instant::now();
        let tick = Duration::from_millis(100);
        let per_tick = (rate / 10).max(1) as usize;
        while started.elapsed() < time {
            let next_tick = Instant::now() + tick;
            if self.pending.len() < MAX_PENDING {
                self.publish(conn, per_tick).await;
            }
            while Instant::now() < next_tick {
                let left = next_tick.saturating_duration_since(Instant::now());
                self.read(conn, left.max(Duration::from_millis(1))).await;
            }
        }
        let drain = Instant::now();
        while !self.pending.is_empty() {
            assert!(
                drain.elapsed() < Duration::from_secs(180),
                "{} tasks unanswered 180 s after the traffic stopped",
                self.pending.len()
            );
            self.read(conn, Duration::from_millis(500)).await;
        }
        // Conversations not continued are simply left: their threads expire like the rest.
        self.ready.clear();
    }
}

fn reply_stream(group: usize, client: usize) -> String {
    format!("troupe:results:g{group}:c{client}")
}

/// What the store holds at one moment.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    keys: u64,
    used_memory: u64,
    /// Family -> (keys, bytes by `MEMORY USAGE`).
    families: BTreeMap<String, (u64, u64)>,
    rss_kib: Vec<u64>,
}

/// A key's family: its segments with group names, ids and numbers replaced.
fn family(key: &str) -> String {
    key.split(':')
        .map(|segment| {
            if segment.len() > 1
                && segment.starts_with('g')
                && segment[1..].bytes().all(|b| b.is_ascii_digit())
            {
                "{group}".to_owned()
            } else if segment.bytes().any(|b| b.is_ascii_digit()) || segment.len() > 24 {
                "{id}".to_owned()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

async fn snapshot(
    conn: &mut MultiplexedConnection,
    daemons: &[&daemon::Daemon],
    families: bool,
) -> Snapshot {
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .expect("DBSIZE");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    let used_memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut by_family = BTreeMap::new();
    if families {
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("SCAN");
            let mut pipe = redis::pipe();
            for key in &batch {
                pipe.cmd("MEMORY").arg("USAGE").arg(key);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(conn).await.expect("MEMORY USAGE");
            for (key, size) in batch.iter().zip(sizes) {
                let entry = by_family.entry(family(key)).or_insert((0, 0));
                entry.0 += 1;
                entry.1 += size.unwrap_or(0);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    let rss_kib = daemons.iter().map(|d| rss(d.pid())).collect();
    Snapshot {
        keys,
        used_memory,
        families: by_family,
        rss_kib,
    }
}

/// A process's resident set (`VmRSS`), in KiB.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Waits until the key count stops falling (two samples `every` apart agree) and is at most
/// `target`, or `budget` passed.
async fn settle(conn: &mut MultiplexedConnection, target: u64, every: Duration, budget: Duration) {
    let started = Instant::now();
    let mut last = u64::MAX;
    loop {
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(conn)
            .await
            .expect("DBSIZE");
        if (keys == last && keys <= target) || started.elapsed() > budget {
            return;
        }
        last = keys;
        tokio::time::sleep(every).await;
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this in test mode: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(server) = redis_support::start_for_bench("soak") else {
        return;
    };
    let secs = env_secs("TROUPE_SOAK_SECS", 60);
    let rate = env_secs("TROUPE_SOAK_RATE", 100);
    let retention = env_secs("TROUPE_SOAK_RETENTION", 20);
    let files: Vec<_> = ["soak-0", "soak-1"]
        .iter()
        .map(|name| config(&server.url(), name, retention))
        .collect();
    let mut daemons: Vec<daemon::Daemon> = files
        .iter()
        .map(|file| {
            let path = file.path().to_str().expect("utf-8 path");
            daemon::Daemon::spawn(&["serve", "--config", path])
        })
        .collect();
    for daemon in &mut daemons {
        daemon.wait_for_log("ingress consumer started", Duration::from_secs(60));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let client = redis::Client::open(server.url()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut sampler = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let pause = Duration::from_secs(retention + 10);
        let daemon_refs: Vec<&daemon::Daemon> = daemons.iter().collect();

        // Warm-up: every kind of task once over, so what is bounded by count rather than time
        // (consumer groups, per-day usage hashes, capped streams) exists before the baseline.
        let mut traffic = Traffic::new();
        traffic.run(&mut conn, rate, Duration::from_secs(5)).await;
        tokio::time::sleep(pause).await;
        settle(&mut sampler, u64::MAX, Duration::from_secs(2), pause).await;
        let before = snapshot(&mut sampler, &daemon_refs, true).await;
        println!(
            "soak/before: {} keys, Redis used_memory {}, daemons' RSS {:?} KiB",
            before.keys,
            mib(before.used_memory),
            before.rss_kib
        );

        let (warm_published, warm_dead) = (traffic.published, traffic.dead);
        // The peak: the key count and memory sampled every second during the traffic.
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let peaks = tokio::task::spawn_local({
            let (stop, mut conn) = (stop.clone(), sampler.clone());
            async move {
                let mut peak = (0u64, 0u64);
                while !stop.get() {
                    let now = snapshot(&mut conn, &[], false).await;
                    peak = (peak.0.max(now.keys), peak.1.max(now.used_memory));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                peak
            }
        });
        let started = Instant::now();
        traffic.run(&mut conn, rate, Duration::from_secs(secs)).await;
        let took = started.elapsed();
        let mut peak = snapshot(&mut sampler, &daemon_refs, true).await;
        stop.set(true);
        let (keys, memory) = peaks.await.expect("sampler");
        peak.keys = peak.keys.max(keys);
        peak.used_memory = peak.used_memory.max(memory);
        let published = traffic.published - warm_published;
        let dead = traffic.dead - warm_dead;
        println!(
            "soak/traffic: {published} entries in {took:.1?} ({:.0}/s; {dead} malformed, {} tasks failed) over 2 daemons, {GROUPS} groups",
            published as f64 / took.as_secs_f64(),
            traffic.errors
        );
        println!(
            "soak/peak: {} keys, Redis used_memory {}, daemons' RSS {:?} KiB",
            peak.keys,
            mib(peak.used_memory),
            peak.rss_kib
        );

        tokio::time::sleep(pause).await;
        settle(&mut sampler, before.keys, Duration::from_secs(2), 3 * pause).await;
        let after = snapshot(&mut sampler, &daemon_refs, true).await;
        println!(
            "soak/after {}s of retention: {} keys ({:+} vs before), Redis used_memory {} ({:+.1} MiB), daemons' RSS {:?} KiB",
            retention,
            after.keys,
            after.keys as i64 - before.keys as i64,
            mib(after.used_memory),
            (after.used_memory as f64 - before.used_memory as f64) / (1024.0 * 1024.0),
            after.rss_kib
        );
        let names: HashSet<&String> = before
            .families
            .keys()
            .chain(peak.families.keys())
            .chain(after.families.keys())
            .collect();
        let mut names: Vec<&String> = names.into_iter().collect();
        names.sort();
        println!("soak/families: keys before / peak / after, bytes before / after (MEMORY USAGE)");
        for name in names {
            let of = |s: &Snapshot| s.families.get(name).copied().unwrap_or((0, 0));
            let (b, p, a) = (of(&before), of(&peak), of(&after));
            println!(
                "  {name}: {} / {} / {} keys, {} / {} bytes",
                b.0, p.0, a.0, b.1, a.1
            );
        }
    });
    drop(daemons);
    drop(server);
}
