//! The fault suite's harness: a [`Scenario`] runs a private `redis-server`, the in-process mock
//! model server and one or two real `troupe serve` daemons; tasks are published with plain
//! Redis commands on a connection of its own; and [`Scenario::check`] is the one oracle every
//! fault case ends with (see `tests/it/faults.rs` for what each case promises).
//!
//! The oracle, read with plain Redis (no troupe code):
//! - every accepted entry (its `XADD` answered) ends exactly once: a valid task with one final
//!   result (`ok` with the whole answer, or `error` with a kind) or one dead letter with a
//!   reason; a malformed entry
//!   with one dead letter with a reason; nothing ends twice and nothing ends that was not
//!   published (lost = 0, unexpected = 0);
//! - nothing is pending in the consumer group;
//! - model calls are counted per task input at the mock server, against the case's [`Calls`]
//!   promise;
//! - every daemon that should run is alive and answers `/health/ready` with 200.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use redis::streams::{StreamPendingReply, StreamRangeReply};
use redis::Commands as _;

use super::daemon::{http_get, Daemon};
use super::llm::{self, MockConfig, MockHandle};
use super::redis::{free_port, RedisServer};
use super::wait::{eventually_blocking, lazy, Check};

/// The key prefix of every scenario (each has its own Redis).
pub const PREFIX: &str = "faults:";
/// The ingress consumer group (the default).
const GROUP: &str = "troupe";
/// How long the oracle waits for every accepted entry to end.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How long a daemon may take to become ready, or not ready, after a change.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// How a scenario is set up; `Setup::default()` is one daemon on a volatile Redis.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `troupe serve` processes (named `d0`, `d1`, … each with its own metrics port).
    pub daemons: usize,
    /// Redis with the append-only file, fsynced on every write.
    pub persistent: bool,
    /// Redis is not running when the daemons start ([`Scenario::start_redis`] starts it).
    pub redis_late: bool,
    /// `[ingress] max_in_flight`: the bound on what a crash can make the model repeat.
    pub max_in_flight: usize,
    /// `[ingress] claim_idle`.
    pub claim_idle: &'static str,
    /// `[ingress] max_deliveries`.
    pub max_deliveries: u32,
    /// `[daemon] shutdown_grace`.
    pub shutdown_grace: &'static str,
    /// `[models.mock] idle_timeout`.
    pub idle_timeout: &'static str,
    /// Extra keys of `[models.mock]`.
    pub model_extra: String,
    /// Extra keys of `[agents.echo]`.
    pub agent_extra: String,
    /// Extra tables at the end of the config (e.g. `[tools.X]`, `[ingress.auth]`).
    pub config_extra: String,
    /// Model requests one task makes when nothing fails (2 with one tool round trip).
    pub calls_per_task: usize,
    /// The mock model server's config.
    pub mock: MockConfig,
    /// Environment of the daemons (`RUST_LOG` overrides `info`).
    pub env: Vec<(String, String)>,
    /// Where the daemons reach Redis: given the private Redis's port, the port to connect
    /// to (a fault-injecting proxy's); `None`: Redis itself.
    pub via: Option<Via>,
}

/// Maps the Redis port to the port daemons connect to (see [`Setup::via`]).
#[derive(Clone)]
pub struct Via(pub std::sync::Arc<dyn Fn(u16) -> u16 + Send + Sync>);

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Via(..)")
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            daemons: 1,
            persistent: false,
            redis_late: false,
            max_in_flight: 32,
            claim_idle: "1s",
            max_deliveries: 5,
            shutdown_grace: "5s",
            idle_timeout: "300ms",
            model_extra: String::new(),
            agent_extra: String::new(),
            config_extra: String::new(),
            calls_per_task: 1,
            mock: MockConfig::default(),
            env: Vec::new(),
            via: None,
        }
    }
}

/// What a case promises about model calls, counted per task input at the mock server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// No daemon dies and Redis loses nothing: every request beyond an input's first is
    /// explained by a fault the mock served (a retry), so duplicate answered calls = 0.
    AtMostOnce,
    /// A daemon died (or drained) with calls in flight: those may be asked again, so the
    /// inputs asked more than once (beyond served faults) are at most this many.
    Bounded(usize),
}

/// What the oracle saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Final results by status (`ok`, `error`).
    pub statuses: BTreeMap<String, usize>,
    /// Error results by `error.kind`.
    pub error_kinds: BTreeMap<String, usize>,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// Dead letters by `kind`.
    pub dead_kinds: BTreeMap<String, usize>,
    /// Chat requests the mock received.
    pub model_requests: usize,
    /// Faults the mock served.
    pub faults: u64,
    /// Task inputs asked more than once (more than `calls_per_task` times).
    pub repeated_inputs: usize,
    /// Requests beyond each input's first (`calls_per_task`) that no served fault explains (0
    /// when at most once).
    pub unexplained_repeats: i64,
}

/// One accepted `XADD`.
#[derive(Debug, Clone)]
struct Published {
    entry: String,
    /// The task id of a valid task (`None`: a malformed entry).
    task: Option<String>,
    /// Its input (the mock answers `You said: {input}`).
    input: String,
}

/// One `troupe serve` process slot: its config, port and current process.
struct Node {
    name: String,
    config: tempfile::NamedTempFile,
    metrics_port: u16,
    daemon: Option<Daemon>,
    /// Logs of earlier processes of this slot.
    old_logs: Vec<String>,
}

/// A running fault scenario; everything stops when it drops.
pub struct Scenario {
    /// Runs the mock model server (kept for as long as the scenario).
    _runtime: tokio::runtime::Runtime,
    /// The mock model server.
    pub mock: MockHandle,
    /// The private Redis.
    pub redis: RedisServer,
    setup: Setup,
    nodes: Vec<Node>,
    conn: Option<redis::Connection>,
    published: Vec<Published>,
    next: usize,
}

impl Scenario {
    /// Starts Redis (unless `redis_late`), the mock and the daemons; waits until each daemon's
    /// ingress consumer started (and, with Redis up, until it is ready).
    pub fn start(setup: Setup) -> Scenario {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mock = runtime.block_on(llm::start(setup.mock.clone()));
        let mut redis = if setup.persistent {
            RedisServer::start_persistent()
        } else {
            RedisServer::start()
        };
        if setup.redis_late {
            redis.stop();
        }
        let store_port = setup
            .via
            .as_ref()
            .map_or(redis.port(), |via| (via.0)(redis.port()));
        let nodes = (0..setup.daemons)
            .map(|i| {
                let name = format!("d{i}");
                let metrics_port = free_port();
                let config = config_file(&setup, &name, metrics_port, store_port, &mock);
                Node {
                    name,
                    config,
                    metrics_port,
                    daemon: None,
                    old_logs: Vec::new(),
                }
            })
            .collect();
        let mut scenario = Scenario {
            _runtime: runtime,
            mock,
            redis,
            setup,
            nodes,
            conn: None,
            published: Vec::new(),
            next: 0,
        };
        for i in 0..scenario.nodes.len() {
            scenario.spawn(i);
        }
        if !scenario.setup.redis_late {
            for i in 0..scenario.nodes.len() {
                scenario.wait_ready(i, true);
            }
        }
        scenario
    }

    /// Starts daemon `i` (again, under the same name: it reads its own pending entries first).
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut old) = node.daemon.take() {
            node.old_logs.push(old.log_to_end(Duration::from_secs(2)));
        }
        let path = node.config.path().to_str().expect("utf-8 path").to_owned();
        let env: Vec<(&str, &str)> = self
            .setup
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut daemon = Daemon::spawn_with_env(&["serve", "--config", &path], &env);
        daemon.wait_for_log("ingress consumer started", Duration::from_secs(30));
        node.daemon = Some(daemon);
    }

    /// Starts Redis after a `redis_late` start or [`Scenario::stop_redis`], or restarts it
    /// (SIGKILL, then start on the same port: with its data only if `persistent`).
    pub fn start_redis(&mut self) {
        self.conn = None;
        self.redis.restart();
    }

    /// Kills Redis (SIGKILL).
    pub fn stop_redis(&mut self) {
        self.conn = None;
        self.redis.stop();
    }

    /// SIGKILLs daemon `i`; its slot stays empty until [`Scenario::spawn`].
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut daemon = node.daemon.take().expect("the daemon runs");
        daemon.signal("KILL");
        assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
        node.old_logs
            .push(daemon.log_to_end(Duration::from_secs(2)));
    }

    /// SIGTERMs daemon `i` and waits for its exit (at most its grace period plus 10 s).
    pub fn terminate(&mut self, i: usize) -> (ExitStatus, String) {
        let node = &mut self.nodes[i];
        let mut daemon = node.daemon.take().expect("the daemon runs");
        daemon.signal("TERM");
        let status = daemon
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", daemon.log()));
        let log = daemon.log_to_end(Duration::from_secs(2));
        node.old_logs.push(log.clone());
        (status, log)
    }

    /// Every log line of every daemon so far (earlier processes included).
    pub fn all_logs(&mut self) -> String {
        let mut out = String::new();
        for node in &mut self.nodes {
            for log in &node.old_logs {
                out.push_str(log);
                out.push('\n');
            }
            if let Some(d) = node.daemon.as_mut() {
                out.push_str(&d.log());
                out.push('\n');
            }
        }
        out
    }

    /// Daemon `i`'s resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self, i: usize) -> Option<(u64, u64)> {
        let pid = self.nodes[i].daemon.as_ref()?.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// `GET /health/ready` of daemon `i`: its status code, `None` if nothing answers.
    pub fn readiness(&self, i: usize) -> Option<u16> {
        http_get(self.nodes[i].metrics_port, "/health/ready").map(|(status, _)| status)
    }

    /// Polls `check` until it holds (see [`Check`]) and returns what it held; after `budget`,
    /// panics naming `what`, with what the check saw last and every daemon's log.
    pub fn eventually<C: Check>(
        &mut self,
        what: &str,
        budget: Duration,
        mut check: impl FnMut(&mut Scenario) -> C,
    ) -> C::Output {
        let seen: RefCell<Option<String>> = RefCell::new(None);
        let this = RefCell::new(self);
        let what = lazy(|| {
            let seen = seen
                .take()
                .map(|s| format!(" (last {s})"))
                .unwrap_or_default();
            format!("{what}{seen}; logs:\n{}", this.borrow_mut().all_logs())
        });
        eventually_blocking(what, budget, || {
            match check(&mut this.borrow_mut()).done() {
                Ok(out) => Some(out),
                Err(last) => {
                    *seen.borrow_mut() = last;
                    None
                }
            }
        })
    }

    /// Waits until daemon `i` is ready (`true`, 200) or not (`false`, 503).
    pub fn wait_ready(&mut self, i: usize, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let what = format!("daemon {i} never answered /health/ready {want}");
        self.eventually(&what, READY_LIMIT, |s| match s.readiness(i) {
            Some(got) if got == want => Ok(()),
            got => Err(format!("{got:?}")),
        });
    }

    /// A connection of the test's own, opened again after Redis went away.
    fn conn(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.redis.url())?;
            let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Runs `f` on the connection, dropping the connection on an error.
    pub fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let result = self.conn().and_then(f);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// `XADD`s `tasks` valid agent tasks (ids and inputs unique within the scenario; `stream`
    /// asks for live deltas) and `malformed` bad entries spread among them, of five kinds.
    /// Only entries Redis acknowledged are accepted. Returns how many were.
    pub fn publish(&mut self, tasks: usize, malformed: usize, stream: bool) -> usize {
        let stream_key = format!("{PREFIX}tasks");
        let every = tasks
            .checked_div(malformed)
            .map_or(usize::MAX, |n| n.max(1));
        let mut accepted = 0;
        let mut bad_left = malformed;
        for i in 0..tasks {
            let n = self.next;
            self.next += 1;
            let id = format!("t{n}");
            let input = format!("fault task {n}");
            let task = serde_json::json!({
                "id": id, "agent": "echo", "input": input,
                "group": format!("g{}", n % 3), "user": "u", "stream": stream,
            })
            .to_string();
            let added: redis::RedisResult<String> =
                self.with_conn(|c| c.xadd(&stream_key, "*", &[("task", &task)]));
            if let Ok(entry) = added {
                self.published.push(Published {
                    entry,
                    task: Some(id),
                    input,
                });
                accepted += 1;
            }
            let last = i + 1 == tasks;
            while bad_left > 0 && (i % every == every - 1 || last) {
                bad_left -= 1;
                let (field, value) = match bad_left % 5 {
                    0 => ("task", "{not json".to_owned()),
                    1 => (
                        "task",
                        format!(
                            r#"{{"id":"b{n}","agent":"ghost","input":"x","group":"g","user":"u"}}"#
                        ),
                    ),
                    2 => (
                        "task",
                        format!(r#"{{"id":"b{n}","agent":"echo","input":"x","user":"u"}}"#),
                    ),
                    3 => (
                        "task",
                        format!(
                            r#"{{"id":"b{n}","agent":"echo","workflow":"w","input":"x","group":"g","user":"u"}}"#
                        ),
                    ),
                    _ => ("other", "no task field".to_owned()),
                };
                let added: redis::RedisResult<String> =
                    self.with_conn(|c| c.xadd(&stream_key, "*", &[(field, &value)]));
                if let Ok(entry) = added {
                    self.published.push(Published {
                        entry,
                        task: None,
                        input: String::new(),
                    });
                    accepted += 1;
                }
                if !last {
                    break;
                }
            }
        }
        accepted
    }

    /// `XADD`s one entry of any fields (bytes, as any Redis client may send). `task`: the id
    /// and input of a task expected to be answered; `None`: the entry must be dead-lettered.
    /// Returns whether Redis accepted it.
    pub fn publish_entry(&mut self, fields: &[(&[u8], &[u8])], task: Option<(&str, &str)>) -> bool {
        let stream_key = format!("{PREFIX}tasks");
        let added: redis::RedisResult<String> =
            self.with_conn(|c| c.xadd(&stream_key, "*", fields));
        let Ok(entry) = added else { return false };
        self.published.push(Published {
            entry,
            task: task.map(|(id, _)| id.to_owned()),
            input: task.map(|(_, input)| input.to_owned()).unwrap_or_default(),
        });
        true
    }

    /// Reads every new entry of the consumer group as `consumer` with plain `XREADGROUP`,
    /// leaving them pending with it (as a consumer that died right after its read would).
    /// Returns how many it read.
    pub fn read_as(&mut self, consumer: &str) -> usize {
        let key = format!("{PREFIX}tasks");
        // A raw reply: the crate's typed stream replies cannot hold a non-UTF-8 field name.
        let reply: redis::RedisResult<redis::Value> = self.with_conn(|c| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query(c)
        });
        match reply {
            Ok(redis::Value::Array(streams)) => streams
                .iter()
                .map(|s| match s {
                    redis::Value::Array(pair) => match pair.get(1) {
                        Some(redis::Value::Array(entries)) => entries.len(),
                        _ => 0,
                    },
                    _ => 0,
                })
                .sum(),
            Ok(redis::Value::Nil) => 0,
            Ok(_) => panic!("XREADGROUP: an unexpected reply"),
            Err(err) => panic!("XREADGROUP: {err}"),
        }
    }

    /// Waits until the results stream holds at least `n` entries.
    pub fn wait_results(&mut self, n: usize) {
        let key = format!("{PREFIX}results");
        self.eventually(&format!("{n} results"), DRAIN_LIMIT, |s| {
            let len: usize = s.with_conn(|c| c.xlen(&key)).unwrap_or(0);
            if len >= n {
                Ok(())
            } else {
                Err(format!("only {len} of {n} results"))
            }
        });
    }

    /// Every JSON value of `field` in the stream `key` (prefix added).
    pub fn values(&mut self, key: &str, field: &str) -> redis::RedisResult<Vec<serde_json::Value>> {
        let key = format!("{PREFIX}{key}");
        let reply: StreamRangeReply = self.with_conn(|c| c.xrange_all(&key))?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|e| e.get::<String>(field))
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }

    /// `XLEN` of the stream `key` (prefix added); 0 when Redis cannot tell.
    pub fn redis_len(&mut self, key: &str) -> usize {
        let key = format!("{PREFIX}{key}");
        self.with_conn(|c| c.xlen(&key)).unwrap_or(0)
    }

    /// Entries pending in the consumer group now.
    pub fn pending_count(&mut self) -> usize {
        self.pending().expect("XPENDING")
    }

    fn pending(&mut self) -> redis::RedisResult<usize> {
        let key = format!("{PREFIX}tasks");
        let reply: StreamPendingReply = self.with_conn(|c| c.xpending(&key, GROUP))?;
        Ok(reply.count())
    }

    /// The oracle (see the module docs). Waits up to a minute for every accepted entry to end
    /// and nothing to be pending, then asserts; returns what it saw for case-specific checks.
    pub fn check(&mut self, calls: Calls) -> Report {
        let (results, letters) = self.eventually("drained", DRAIN_LIMIT, |s| {
            let read = (|| -> redis::RedisResult<_> {
                let results = s.values("results", "result")?;
                let letters = s.values("dead", "dead")?;
                let pending = s.pending()?;
                Ok((results, letters, pending))
            })();
            let (results, letters, pending) = match read {
                Ok(read) => read,
                Err(err) => return Err(format!("Redis unreadable at the end: {err:?}")),
            };
            let finals = results.iter().filter(|r| r["status"] != "accepted").count();
            if pending == 0 && finals + letters.len() >= s.published.len() {
                Ok((results, letters))
            } else {
                Err(format!(
                    "{finals} results, {} dead letters, {pending} pending, {} accepted",
                    letters.len(),
                    s.published.len()
                ))
            }
        });

        let mut report = Report::default();
        // Endings per task id (results) and per entry id (dead letters).
        let mut by_task: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
        for r in &results {
            if r["status"] == "accepted" {
                continue;
            }
            let id = r["task_id"].as_str().unwrap_or_default().to_owned();
            by_task.entry(id).or_default().push(r);
        }
        let mut by_entry: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
        for l in &letters {
            let entry = l["entry"].as_str().unwrap_or_default().to_owned();
            by_entry.entry(entry).or_default().push(l);
        }
        let mut problems = Vec::new();
        for p in &self.published {
            let answers = p
                .task
                .as_ref()
                .and_then(|t| by_task.remove(t))
                .unwrap_or_default();
            let dead = by_entry.remove(&p.entry).unwrap_or_default();
            if answers.len() + dead.len() != 1 {
                problems.push(format!(
                    "entry {} (task {:?}) ended {} times: results {answers:?}, dead {dead:?}",
                    p.entry,
                    p.task,
                    answers.len() + dead.len()
                ));
                continue;
            }
            if p.task.is_none() && !answers.is_empty() {
                problems.push(format!("malformed entry {} got a result", p.entry));
            }
            for r in answers {
                let status = r["status"].as_str().unwrap_or_default().to_owned();
                match status.as_str() {
                    // Whole, never silently truncated.
                    "ok" if r["output"].as_str() == Some(&format!("You said: {}", p.input)) => {}
                    "ok" => problems.push(format!("a wrong or truncated answer: {r}")),
                    "error" => {
                        let kind = r["error"]["kind"].as_str().unwrap_or_default();
                        if kind.is_empty() {
                            problems.push(format!("error result without a kind: {r}"));
                        }
                        *report.error_kinds.entry(kind.to_owned()).or_default() += 1;
                        if report.error_samples.len() < 3 {
                            report.error_samples.push(r["error"].to_string());
                        }
                    }
                    _ => problems.push(format!("result with status {status:?}: {r}")),
                }
                *report.statuses.entry(status).or_default() += 1;
            }
            for l in dead {
                if l["reason"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("dead letter without a reason: {l}"));
                }
                let kind = l["kind"].as_str().unwrap_or_default().to_owned();
                *report.dead_kinds.entry(kind).or_default() += 1;
            }
        }
        for (id, rs) in &by_task {
            problems.push(format!("unexpected results for task {id}: {rs:?}"));
        }
        for (entry, ls) in &by_entry {
            problems.push(format!("unexpected dead letters for entry {entry}: {ls:?}"));
        }

        // Model calls per task input.
        let mut asked: HashMap<String, usize> = HashMap::new();
        for request in self.mock.requests() {
            let Some(messages) = request.body["messages"].as_array() else {
                continue;
            };
            report.model_requests += 1;
            if let Some(text) = messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
            {
                *asked.entry(text.to_owned()).or_default() += 1;
            }
        }
        report.faults = self.mock.stats().faults;
        let per_task = self.setup.calls_per_task.max(1);
        report.repeated_inputs = asked.values().filter(|n| **n > per_task).count();
        let repeats: usize = asked.values().map(|n| n.saturating_sub(per_task)).sum();
        report.unexplained_repeats = repeats as i64 - report.faults as i64;
        match calls {
            Calls::AtMostOnce => {
                if report.unexplained_repeats > 0 {
                    problems.push(format!(
                        "{} model requests repeated an input without a fault to explain them",
                        report.unexplained_repeats
                    ));
                }
            }
            Calls::Bounded(bound) => {
                if report.repeated_inputs > bound + report.faults as usize {
                    problems.push(format!(
                        "{} inputs asked more than once: more than the {bound} in flight",
                        report.repeated_inputs
                    ));
                }
            }
        }

        // The daemons that should run are up and ready.
        for i in 0..self.nodes.len() {
            let Some(daemon) = self.nodes[i].daemon.as_mut() else {
                continue;
            };
            if !daemon.is_running() {
                problems.push(format!("daemon {} exited", self.nodes[i].name));
                continue;
            }
            // Not `eventually`: a daemon that stays unready is a problem to report with the
            // others, not a panic of its own.
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.readiness(i) != Some(200) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.readiness(i) != Some(200) {
                problems.push(format!("daemon {} is not ready", self.nodes[i].name));
            }
        }
        eprintln!("oracle: {} accepted; {report:?}", self.published.len());
        if !problems.is_empty() {
            let log = self.all_logs();
            let shown: Vec<_> = problems.iter().take(20).collect();
            panic!("{} problems:\n{shown:#?}\nlogs:\n{log}", problems.len());
        }
        report
    }
}

/// The config of daemon `name`.
fn config_file(
    setup: &Setup,
    name: &str,
    metrics_port: u16,
    redis_port: u16,
    mock: &MockHandle,
) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    write!(
        file,
        r#"[daemon]
name = "{name}"
shutdown_grace = "{grace}"
metrics_addr = "127.0.0.1:{metrics_port}"

[store]
backend = "redis"
url = "redis://127.0.0.1:{redis_port}/"
prefix = "{PREFIX}"
connect_timeout = "300ms"
response_timeout = "500ms"
reconnect_max_delay = "500ms"

[ingress]
block = "100ms"
claim_idle = "{claim_idle}"
max_in_flight = {in_flight}
max_deliveries = {deliveries}

[models.mock]
provider = "openai"
base_url = "{base_url}"
model = "mock-model"
connect_timeout = "500ms"
idle_timeout = "{idle}"
max_retries = 3
max_retry_time = "5s"
initial_backoff = "10ms"
max_backoff = "50ms"
{extra}

[agents.echo]
model = "mock"
{agent_extra}

{config_extra}
"#,
        grace = setup.shutdown_grace,
        claim_idle = setup.claim_idle,
        in_flight = setup.max_in_flight,
        deliveries = setup.max_deliveries,
        base_url = mock.base_url(),
        idle = setup.idle_timeout,
        extra = setup.model_extra,
        agent_extra = setup.agent_extra,
        config_extra = setup.config_extra,
    )
    .expect("write config");
    file
}
