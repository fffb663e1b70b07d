//! Fault cases of workflow runs across daemons (issue 14 §2, §3): real `troupe serve`
//! daemons on a private Redis, the mock model server, workflow tasks published with plain
//! Redis commands, each case ending with the oracle of `support/oracle.rs` (every task ends
//! exactly once; `accepted` notices are not endings).
//!
//! - A SIGKILL between submitting a task's run and acking the task: one run, one result.
//! - A SIGKILL between creating a run's record and opening the run, its task dead-lettered
//!   when seen again: the record expires.
//! - 600 runs of one group waiting for an event do not stop another group's tasks.
//! - 10,000 open runs held by another daemon cost a scan no round trip each, and do not delay
//!   this daemon's lease renewals.
//! - A run that cannot be loaded is failed once and leaves the index of open runs.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Commands as _;
use troupe_testkit::{eventually_blocking, WAIT};
use troupe_workflow::journal::task_run_id;

use crate::support::llm;
use crate::support::oracle::{Calls, Scenario, Setup, Via, PREFIX};

/// How long a case waits for what a daemon does in its rounds: the router's scan of the open
/// runs, a run's lease taken, a restarted daemon's second look at a task.
const ROUNDS: Duration = Duration::from_secs(30);

/// A workflow that waits for the event `go`, then echoes its input; and one that echoes at
/// once.
const WORKFLOWS: &str = r#"
[workflows.hold]
[[workflows.hold.steps]]
name = "wait"
kind = "wait_event"
event = "go"

[[workflows.hold.steps]]
name = "answer"
kind = "agent"
agent = "echo"
input = "{{input}}"

[workflows.quick]
[[workflows.quick.steps]]
name = "answer"
kind = "agent"
agent = "echo"
"#;

fn setup() -> Setup {
    Setup {
        mock: llm::mock_config("latency = \"5ms\"\n"),
        config_extra: WORKFLOWS.to_owned(),
        ..Setup::default()
    }
}

/// Publishes a workflow task; returns whether Redis accepted it.
fn publish(s: &mut Scenario, id: &str, workflow: &str, group: &str, input: &str) -> bool {
    let task = serde_json::json!({
        "id": id, "workflow": workflow, "input": input, "group": group, "user": "u",
    })
    .to_string();
    s.publish_entry(&[(b"task", task.as_bytes())], Some((id, input)))
}

/// The final results (not `accepted` notices) on the results stream.
fn finals(s: &mut Scenario) -> Vec<serde_json::Value> {
    s.values("results", "result")
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["status"] != "accepted")
        .collect()
}

/// Run records (`wf:{group}:{run}:meta`) of `group` in the store.
fn runs_of(s: &mut Scenario, group: &str) -> Vec<String> {
    let pattern = format!("{PREFIX}wf:{group}:*:meta");
    s.with_conn(|c| c.scan_match::<_, String>(&pattern)?.collect())
        .expect("SCAN")
}

/// Sends the event `go` to the run of task `id` of `group`, as `Runs::send_event` does.
fn send_go(s: &mut Scenario, group: &str, id: &str) {
    let run = task_run_id(group, id);
    let key = format!("{PREFIX}wf:{group}:{run}:events");
    let () = s.with_conn(|c| c.hset(&key, "go", "\"ok\"")).expect("HSET");
}

/// Where a [`FreezingProxy`] stops forwarding.
#[derive(Debug, Clone, Copy)]
enum FreezeAfter {
    /// The `MULTI` … `EXEC` that adds a run to the index of open runs.
    Submission,
    /// The `SET … NX` that creates a run record.
    Record,
}

/// A TCP proxy in front of Redis that, once armed, forwards the client's bytes up to a
/// chosen write of a run's submission, then forwards nothing more from any client: the
/// daemon's writes after it never reach Redis, as if it died right then.
struct FreezingProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    fn start(redis_port: u16, after: FreezeAfter) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let (a, f) = (armed.clone(), frozen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (a, f) = (a.clone(), f.clone());
                std::thread::spawn(move || pump_requests(client, server, after, &a, &f));
                std::thread::spawn(move || pump(s2, c2));
            }
        });
        FreezingProxy {
            port,
            armed,
            frozen,
        }
    }

    /// Freeze after the next run is added to the index.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Forward everything again (for connections made from now on, and the old ones).
    fn thaw(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

/// Server to client, as it comes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Client to server, until frozen: the chunk holding the write `after` names is the last one
/// forwarded (a client writes a whole command or `MULTI` … `EXEC` at once; a short tail of
/// the previous chunk is kept in case it is split).
fn pump_requests(
    mut from: TcpStream,
    mut to: TcpStream,
    after: FreezeAfter,
    armed: &AtomicBool,
    frozen: &AtomicBool,
) {
    let marker = format!("\r\n{PREFIX}wf-open\r\n");
    let mut window: Vec<u8> = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        let chunk = &buf[..n];
        let keep = window.len().saturating_sub(64);
        window.drain(..keep);
        window.extend_from_slice(chunk);
        let freeze = armed.load(Ordering::SeqCst)
            && match after {
                FreezeAfter::Submission => adds_to_the_index(&window, marker.as_bytes()),
                FreezeAfter::Record => creates_a_record(&window),
            };
        if to.write_all(chunk).is_err() {
            break;
        }
        if freeze {
            frozen.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether `bytes` hold an `HSET` of the index followed by an `EXEC`.
fn adds_to_the_index(bytes: &[u8], marker: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], marker).map(|i| i + from) {
        let before = &bytes[at.saturating_sub(16)..at];
        if find(before, b"HSET\r\n").is_some() && find(&bytes[at..], b"EXEC\r\n").is_some() {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Whether `bytes` hold a `SET` of a run record (`{PREFIX}wf:…:meta`) with `NX`.
fn creates_a_record(bytes: &[u8]) -> bool {
    let Some(at) = find(bytes, b"\r\nSET\r\n") else {
        return false;
    };
    let rest = &bytes[at..];
    let key = format!("\r\n{PREFIX}wf:");
    matches!(
        (find(rest, key.as_bytes()), find(rest, b":meta\r\n"), find(rest, b"\r\nNX\r\n")),
        (Some(k), Some(m), Some(nx)) if k < m && m < nx
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_sigkill_between_submitting_a_run_and_acking_its_task_leaves_one_run_and_one_result() {
    let proxy: Arc<std::sync::OnceLock<FreezingProxy>> = Arc::default();
    let slot = proxy.clone();
    let mut s = Scenario::start(Setup {
        via: Some(Via(Arc::new(move |redis_port| {
            slot.get_or_init(|| FreezingProxy::start(redis_port, FreezeAfter::Submission))
                .port
        }))),
        ..setup()
    });
    let proxy = proxy.get().expect("the proxy started with the scenario");
    proxy.arm();
    assert!(publish(&mut s, "t1", "quick", "g1", "submitted once"));
    // The daemon wrote the run's submission; nothing it sends afterwards arrives.
    eventually_blocking("the run was never submitted", WAIT, || proxy.is_frozen());
    s.kill(0);
    proxy.thaw();
    // Restarted under its name: it reads its own pending entries first, and adopts open runs.
    s.spawn(0);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&1), "{report:?}");
    let runs = runs_of(&mut s, "g1");
    assert_eq!(runs.len(), 1, "one task, one run: {runs:?}");
    assert_eq!(report.model_requests, 1, "{report:?}");
}

#[test]
fn a_run_record_whose_creation_was_cut_short_expires() {
    let proxy: Arc<std::sync::OnceLock<FreezingProxy>> = Arc::default();
    let slot = proxy.clone();
    let mut s = Scenario::start(Setup {
        via: Some(Via(Arc::new(move |redis_port| {
            slot.get_or_init(|| FreezingProxy::start(redis_port, FreezeAfter::Record))
                .port
        }))),
        // The task is dead-lettered when the restarted daemon sees it again: nobody
        // completes the run's creation.
        env: vec![("TROUPE_INGRESS__MAX_DELIVERIES".into(), "1".into())],
        ..setup()
    });
    let proxy = proxy.get().expect("the proxy started with the scenario");
    proxy.arm();
    let task = serde_json::json!({
        "id": "t1", "workflow": "quick", "input": "cut short", "group": "g1", "user": "u",
    })
    .to_string();
    assert!(s.publish_entry(&[(b"task", task.as_bytes())], None));
    eventually_blocking("the run record was never written", WAIT, || {
        proxy.is_frozen()
    });
    s.kill(0);
    proxy.thaw();
    s.spawn(0);
    s.eventually("the task's dead letter", ROUNDS, |s| {
        let dead: u64 = s
            .with_conn(|c| c.xlen(format!("{PREFIX}dead")))
            .unwrap_or(0);
        dead == 1
    });
    let key = format!("{PREFIX}wf:g1:{}:meta", task_run_id("g1", "t1"));
    let ttl: i64 = s.with_conn(|c| c.pttl(&key)).expect("PTTL");
    assert!(
        ttl > 0,
        "the record of a run never opened expires (PTTL {ttl}; -2: missing, -1: for ever)"
    );
    let open: bool = s
        .with_conn(|c| c.hexists(format!("{PREFIX}wf-open"), task_run_id("g1", "t1")))
        .expect("HEXISTS");
    assert!(!open, "the run was never opened");
}

#[test]
fn waiting_runs_of_one_group_do_not_stop_another_groups_tasks() {
    const WAITING: usize = 600;
    const OTHERS: usize = 100;
    let mut s = Scenario::start(Setup {
        daemons: 2,
        env: vec![
            // Two routers have room for 500 runs, fewer than wait; the group's quota (400 on
            // both) leaves room for the others.
            ("TROUPE_DAEMON__MAX_RUNS".into(), "250".into()),
            ("TROUPE_DAEMON__MAX_RUNS_PER_GROUP".into(), "200".into()),
        ],
        ..setup()
    });
    for n in 0..WAITING {
        assert!(publish(
            &mut s,
            &format!("w{n}"),
            "hold",
            "flood",
            &format!("held {n}")
        ));
    }
    let mut published = Vec::new();
    for n in 0..OTHERS {
        let id = format!("q{n}");
        assert!(publish(
            &mut s,
            &id,
            "quick",
            "other",
            &format!("quick {n}")
        ));
        published.push(id);
    }
    // The other group's tasks complete while every run of the flood still waits.
    s.eventually("the other group's results", Duration::from_secs(120), |s| {
        finals(s).iter().filter(|r| r["group"] == "other").count() >= OTHERS
    });
    let results = finals(&mut s);
    assert_eq!(
        results.iter().filter(|r| r["group"] == "flood").count(),
        0,
        "the flood's runs wait for their event"
    );
    // Latency of the other group's tasks: task entry id to result entry id (both ms).
    let tasks: std::collections::HashMap<String, u64> = {
        let key = format!("{PREFIX}tasks");
        let reply: redis::streams::StreamRangeReply =
            s.with_conn(|c| c.xrange_all(&key)).expect("XRANGE");
        reply
            .ids
            .iter()
            .filter_map(|e| {
                let task: serde_json::Value =
                    serde_json::from_str(&e.get::<String>("task")?).ok()?;
                Some((task["id"].as_str()?.to_owned(), stream_ms(&e.id)))
            })
            .collect()
    };
    let key = format!("{PREFIX}results");
    let reply: redis::streams::StreamRangeReply =
        s.with_conn(|c| c.xrange_all(&key)).expect("XRANGE");
    let mut latencies: Vec<u64> = reply
        .ids
        .iter()
        .filter_map(|e| {
            let result: serde_json::Value =
                serde_json::from_str(&e.get::<String>("result")?).ok()?;
            if result["group"] != "other" || result["status"] == "accepted" {
                return None;
            }
            let published = tasks.get(result["task_id"].as_str()?)?;
            Some(stream_ms(&e.id).saturating_sub(*published))
        })
        .collect();
    latencies.sort_unstable();
    assert_eq!(latencies.len(), OTHERS);
    let p = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    eprintln!(
        "other group's {OTHERS} tasks beside {WAITING} waiting runs: p50 {} ms, p99 {} ms, max {} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    // Then the flood's runs end too, each with one result.
    for n in 0..WAITING {
        send_go(&mut s, "flood", &format!("w{n}"));
    }
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(
        report.statuses.get("ok"),
        Some(&(WAITING + OTHERS)),
        "{report:?}"
    );
}

/// The milliseconds part of a stream entry id.
fn stream_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// Calls of `EVALSHA` Redis has served (every lease call is one).
fn evalsha_calls(s: &mut Scenario) -> u64 {
    let info: String = s
        .with_conn(|c| redis::cmd("INFO").arg("commandstats").query(c))
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_foreign_open_runs_cost_no_round_trip_each_nor_delay_renewals() {
    const FOREIGN: usize = 10_000;
    let lease = Duration::from_secs(10);
    let mut s = Scenario::start(setup());
    // Another daemon's open runs: index entries and leases it holds.
    s.with_conn(|c| {
        let mut pipe = redis::pipe();
        for n in 0..FOREIGN {
            let run = format!("rforeign{n:012}");
            pipe.hset(format!("{PREFIX}wf-open"), &run, "g")
                .ignore()
                .cmd("SET")
                .arg(format!("{PREFIX}wf-lease:{run}"))
                .arg("another-daemon")
                .arg("PX")
                .arg(600_000)
                .ignore();
        }
        pipe.query::<()>(c)
    })
    .expect("seed foreign runs");
    // This daemon's own run, waiting for its event.
    assert!(publish(&mut s, "mine", "hold", "g", "my own run"));
    let open = format!("{PREFIX}wf-open");
    let run = s.eventually("the own run submitted", ROUNDS, |s| {
        let runs: Vec<String> = s.with_conn(|c| c.hkeys(&open)).unwrap_or_default();
        runs.into_iter().find(|r| !r.starts_with("rforeign"))
    });
    let lease_key = format!("{PREFIX}wf-lease:{run}");
    s.eventually("the run's lease taken", ROUNDS, |s| {
        s.with_conn(|c| c.get::<_, Option<String>>(&lease_key))
            .ok()
            .flatten()
            .as_deref()
            == Some("d0")
    });
    // Over three renewal periods: many scans, each over every foreign run.
    let before = evalsha_calls(&mut s);
    let mut lowest = u64::MAX;
    let watch = Instant::now();
    while watch.elapsed() < lease {
        let left: i64 = s.with_conn(|c| c.pttl(&lease_key)).expect("PTTL");
        assert!(left > 0, "the lease of a live run expired");
        lowest = lowest.min(left as u64);
        std::thread::sleep(Duration::from_millis(100));
    }
    let calls = evalsha_calls(&mut s) - before;
    eprintln!(
        "{FOREIGN} foreign open runs: {calls} lease calls in {lease:?}; own lease never below {lowest} ms"
    );
    assert!(
        calls < 200,
        "{calls} lease calls in {lease:?}: scans take a round trip per foreign run"
    );
    // Renewed every third of the lease: never below a third of it (with slack).
    assert!(lowest >= 3_000, "the own lease fell to {lowest} ms");
    let adopted = s.all_logs().matches("adopting workflow run").count();
    assert_eq!(adopted, 0, "a held foreign run was adopted");
    send_go(&mut s, "g", "mine");
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&1), "{report:?}");
}

#[test]
fn a_run_that_cannot_be_loaded_is_failed_once_and_leaves_the_open_index() {
    let mut s = Scenario::start(setup());
    let record = serde_json::json!({
        "id": "rnodefinition000000", "workflow": "quick", "group": "g", "user": "u",
        "input": "x", "status": "running", "definition_hash": "0", "restarts": 0,
        "created_ms": 0, "updated_ms": 0, "output": null, "error": null,
    });
    // A run whose snapshot expired, and one whose record is not a record.
    s.with_conn(|c| {
        redis::pipe()
            .set(
                format!("{PREFIX}wf:g:rnodefinition000000:meta"),
                record.to_string(),
            )
            .ignore()
            .set(
                format!("{PREFIX}wf:g:rcorruptrecord00000:meta"),
                "{not json",
            )
            .ignore()
            .hset(format!("{PREFIX}wf-open"), "rnodefinition000000", "g")
            .ignore()
            .hset(format!("{PREFIX}wf-open"), "rcorruptrecord00000", "g")
            .ignore()
            .query::<()>(c)
    })
    .expect("seed broken runs");
    let open = format!("{PREFIX}wf-open");
    s.eventually("the broken runs leave the index", ROUNDS, |s| {
        s.with_conn(|c| c.hlen::<_, usize>(&open)).ok() == Some(0)
    });
    let meta: String = s
        .with_conn(|c| c.get(format!("{PREFIX}wf:g:rnodefinition000000:meta")))
        .expect("GET");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("a record");
    assert_eq!(meta["status"], "failed", "{meta}");
    let error = meta["error"].as_str().unwrap_or_default();
    assert!(error.contains("no definition snapshot"), "{error}");
    // Past a few more scans: adopted once each, never again.
    std::thread::sleep(Duration::from_secs(1));
    let logs = s.all_logs();
    for run in ["rnodefinition000000", "rcorruptrecord00000"] {
        let adoptions = logs
            .lines()
            .filter(|l| l.contains("adopting workflow run") && l.contains(run))
            .count();
        assert_eq!(adoptions, 1, "{run} adopted {adoptions} times:\n{logs}");
    }
    // The daemon goes on serving runs.
    assert!(publish(&mut s, "after", "quick", "g", "still served"));
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&1), "{report:?}");
}
