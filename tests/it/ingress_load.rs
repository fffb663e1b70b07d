//! The ingress under load and a crash: 10,000 tasks published with plain Redis commands (and
//! 100 malformed entries mixed in) to two `troupe serve` daemons answering through the mock
//! model server over HTTP; one daemon is SIGKILLed halfway. Oracle: exactly one result per
//! task id, every malformed entry dead-lettered with its reason, nothing left pending, and the
//! model asked again only for tasks the killed daemon had in flight.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::time::{Duration, Instant};

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

use troupe_testkit::eventually;

use crate::support::daemon::Daemon;
use crate::support::llm;
use crate::support::redis::{redis_url, unique_prefix};

const TASKS: usize = 10_000;
const MALFORMED: usize = 100;
/// Tasks in flight per daemon: the bound on what a kill can make the model repeat.
const IN_FLIGHT: usize = 64;

fn config(prefix: &str, base_url: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        r#"[store]
backend = "redis"
url = "{}"
prefix = "{prefix}"

[ingress]
block = "100ms"
claim_idle = "2s"
max_in_flight = {IN_FLIGHT}

[models.mock]
provider = "openai"
base_url = "{base_url}"
model = "mock-model"

[agents.echo]
model = "mock"
"#,
        redis_url()
    );
    file.write_all(text.as_bytes()).expect("write config");
    file
}

fn value_text(v: Option<&redis::Value>) -> Option<String> {
    match v {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Every `field` value of `stream` (keys carry the prefix: plain Redis, no troupe code).
async fn all_values(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    field: &str,
) -> Vec<serde_json::Value> {
    let reply: StreamRangeReply = conn.xrange_all(stream).await.expect("XRANGE");
    reply
        .ids
        .iter()
        .filter_map(|e| value_text(e.map.get(field)))
        .map(|t| serde_json::from_str(&t).expect("JSON"))
        .collect()
}

#[test]
fn ten_thousand_tasks_survive_a_daemon_killed_halfway() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mock = runtime.block_on(llm::start(llm::mock_config("")));
    let prefix = unique_prefix("ingress-load");
    let file = config(&prefix, &mock.base_url());
    let path = file.path().to_str().expect("utf-8 path");
    let mut first = Daemon::spawn(&["serve", "--config", path]);
    let mut second = Daemon::spawn(&["serve", "--config", path]);
    for d in [&mut first, &mut second] {
        d.wait_for_log("ingress consumer started", Duration::from_secs(30));
    }
    let (tasks, results, dead) = (
        format!("{prefix}tasks"),
        format!("{prefix}results"),
        format!("{prefix}dead"),
    );

    runtime.block_on(async {
        let client = redis::Client::open(redis_url()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        // Publish: one malformed entry after every 100th task, in pipelines of 500.
        let every = TASKS / MALFORMED;
        let mut pipe = redis::pipe();
        let mut queued = 0;
        for i in 0..TASKS {
            let task = format!(
                r#"{{"id":"t{i}","agent":"echo","input":"load task {i}","group":"g{}","user":"u"}}"#,
                i % 7
            );
            pipe.xadd(&tasks, "*", &[("task", task)]).ignore();
            queued += 1;
            if i % every == every - 1 {
                let bad = match (i / every) % 4 {
                    0 => "{not json".to_owned(),
                    1 => format!(r#"{{"id":"b{i}","agent":"ghost","input":"x","group":"g","user":"u"}}"#),
                    2 => format!(r#"{{"id":"b{i}","agent":"echo","input":"x","user":"u"}}"#),
                    _ => format!(r#"{{"id":"b{i}","agent":"echo","workflow":"w","input":"x","group":"g","user":"u"}}"#),
                };
                pipe.xadd(&tasks, "*", &[("task", bad)]).ignore();
                queued += 1;
            }
            if queued >= 500 || i == TASKS - 1 {
                let () = pipe.query_async(&mut conn).await.expect("XADD pipeline");
                pipe = redis::pipe();
                queued = 0;
            }
        }

        // Halfway: SIGKILL the first daemon.
        eventually("half the results", Duration::from_secs(120), || {
            let (mut conn, results) = (conn.clone(), &results);
            async move {
                let n: u64 = conn.xlen(results).await.expect("XLEN");
                if n as usize >= TASKS / 2 {
                    Ok(())
                } else {
                    Err(format!("only {n} results"))
                }
            }
        })
        .await;
        first.signal("KILL");
        assert!(first.wait_exit(Duration::from_secs(5)).is_some());

        // The survivor finishes everything, the killed daemon's pending entries included.
        let options = StreamReadOptions::default().block(100).count(1_000);
        let mut after = "0".to_owned();
        let mut answers: HashMap<String, usize> = HashMap::new();
        // Not `eventually`: each round reads on from where the last one stopped.
        let deadline = Instant::now() + Duration::from_secs(180);
        while answers.len() < TASKS {
            assert!(
                Instant::now() < deadline,
                "{} of {TASKS} tasks answered within 180 s of the kill; survivor log:\n{}",
                answers.len(),
                second.log()
            );
            let reply: StreamReadReply = conn
                .xread_options(&[&results], &[&after], &options)
                .await
                .expect("XREAD");
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                after = entry.id.clone();
                let result: serde_json::Value =
                    serde_json::from_str(&value_text(entry.map.get("result")).expect("result"))
                        .expect("result JSON");
                assert_eq!(result["status"], "ok", "{result}");
                let id = result["task_id"].as_str().expect("task_id").to_owned();
                *answers.entry(id).or_default() += 1;
            }
        }
        // Let anything in flight land, then check nothing arrives twice.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let all = all_values(&mut conn, &results, "result").await;
        let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
        for r in &all {
            *per_task
                .entry(r["task_id"].as_str().expect("task_id").to_owned())
                .or_default() += 1;
        }
        assert_eq!(per_task.len(), TASKS, "one result per task id");
        let twice: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "tasks answered more than once: {twice:?}");

        let letters = all_values(&mut conn, &dead, "dead").await;
        assert_eq!(letters.len(), MALFORMED, "{letters:?}");
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for l in &letters {
            assert!(
                l["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{l}"
            );
            *kinds.entry(l["kind"].as_str().unwrap_or("").to_owned()).or_default() += 1;
        }
        assert_eq!(
            kinds,
            BTreeMap::from([
                ("missing_field".to_owned(), 25),
                ("not_json".to_owned(), 25),
                ("target".to_owned(), 25),
                ("unknown_agent".to_owned(), 25),
            ])
        );
        let pending: redis::streams::StreamPendingReply =
            conn.xpending(&tasks, "troupe").await.expect("XPENDING");
        assert_eq!(pending.count(), 0, "nothing left pending");
    });

    // Counted at the model: every task asked for; again only for those the kill interrupted.
    let mut asked: HashMap<String, usize> = HashMap::new();
    for request in mock.requests() {
        let Some(messages) = request.body["messages"].as_array() else {
            continue;
        };
        if let Some(text) = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
        {
            *asked.entry(text.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(asked.len(), TASKS, "every task reached the model");
    let repeated = asked.values().filter(|n| **n > 1).count();
    eprintln!("model calls repeated after the kill: {repeated} (bound {IN_FLIGHT})");
    assert!(
        repeated <= IN_FLIGHT,
        "{repeated} tasks asked twice: more than the killed daemon had in flight"
    );
    assert!(
        second
            .log()
            .contains("ingress reclaimed stale pending entries"),
        "the survivor reclaimed the killed daemon's entries"
    );
    second.signal("TERM");
    assert!(second
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
