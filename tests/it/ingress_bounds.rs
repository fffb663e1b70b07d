//! Every key the ingress writes has a bound (issue 14 §5), checked against the private Redis
//! with real daemons: reply streams expire `reply_retention` after their last result (agent
//! and workflow tasks alike); a retired generation's consumer leaves the group once drained,
//! a killed daemon's once its entries were claimed and `consumer_expiry` passed, and a
//! consumer holding a pending entry never does; a foreign consumer group nobody reads holds
//! trimming back (with a warning) only until `abandoned_group_after`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::Actor;
use redis::Commands as _;
use troupe_config::IngressSettings;
use troupe_ingress::IngressActor;
use troupe_runtime::store::{GroupRead, ReadFrom};
use troupe_testkit::{eventually, eventually_blocking, WAIT};

use crate::support::agents::Rig;
use crate::support::daemon::{config_file, Daemon};
use crate::support::redis::{self as private_redis, redis_url, unique_prefix};

/// How long a test waits for the ingress's maintenance to act past a deliberate delay
/// (`consumer_expiry`, `abandoned_group_after`): the delay, then up to a maintenance round.
const MAINTENANCE: Duration = Duration::from_secs(30);

/// A `troupe serve` config on the shared private Redis under `prefix`: the agents `echo`
/// and `slow` (answers after 1 s), the workflow `slowly` (two slow steps), and `extra`
/// lines in `[ingress]`.
fn config(name: &str, prefix: &str, ingress: &str) -> tempfile::NamedTempFile {
    let text = format!(
        r#"[daemon]
name = "{name}"
shutdown_grace = "3s"

[store]
backend = "redis"
url = "{url}"
prefix = "{prefix}"

[ingress]
block = "100ms"
{ingress}

[models.scripted]
provider = "scripted"

[models.slow]
provider = "scripted"
latency = "1s"

[agents.echo]
model = "scripted"

[agents.slow]
model = "slow"

[workflows.slowly]
[[workflows.slowly.steps]]
name = "first"
kind = "agent"
agent = "slow"
input = "FIRST {{{{input}}}}"
[[workflows.slowly.steps]]
name = "second"
kind = "agent"
agent = "slow"
input = "SECOND {{{{steps.first.output}}}}"
"#,
        url = redis_url(),
    );
    config_file(&text)
}

/// Starts `troupe serve` on `file` and waits until its consumer reads.
fn serve(file: &tempfile::NamedTempFile) -> Daemon {
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("ingress consumer started", WAIT);
    daemon
}

fn connect() -> redis::Connection {
    redis::Client::open(redis_url())
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// XADDs a task to the ingress stream under `prefix`; returns the entry id.
fn publish(conn: &mut redis::Connection, prefix: &str, task: serde_json::Value) -> String {
    conn.xadd(format!("{prefix}tasks"), "*", &[("task", task.to_string())])
        .expect("XADD")
}

fn agent_task(id: &str, agent: &str, reply_to: Option<&str>) -> serde_json::Value {
    let mut task = serde_json::json!({
        "id": id, "agent": agent, "input": "hello", "group": "acme", "user": "alice",
    });
    if let Some(reply_to) = reply_to {
        task["reply_to"] = reply_to.into();
    }
    task
}

/// The results (JSON) of task `id` on the Redis stream `stream`, oldest first.
fn results_of(conn: &mut redis::Connection, stream: &str, id: &str) -> Vec<serde_json::Value> {
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).expect("XRANGE");
    reply
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("result"))
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
        .filter(|r| r["task_id"] == id)
        .collect()
}

/// Waits for the final (not `accepted`) result of task `id` on `stream`.
fn final_result(
    conn: &mut redis::Connection,
    stream: &str,
    id: &str,
    daemon: &mut Daemon,
) -> serde_json::Value {
    let what = format!("no result for {id} on {stream}");
    eventually_blocking(daemon.with_log(what), WAIT, || {
        results_of(conn, stream, id)
            .into_iter()
            .find(|r| r["status"] != "accepted")
    })
}

/// The names of the consumers of the ingress group under `prefix`, with their pending counts.
fn consumers(conn: &mut redis::Connection, prefix: &str) -> BTreeMap<String, u64> {
    try_consumers(conn, prefix).expect("XINFO CONSUMERS")
}

/// Like [`consumers`], or the error while the group does not exist yet (a daemon that has
/// just started creates it).
fn try_consumers(
    conn: &mut redis::Connection,
    prefix: &str,
) -> redis::RedisResult<BTreeMap<String, u64>> {
    let info: redis::streams::StreamInfoConsumersReply =
        conn.xinfo_consumers(format!("{prefix}tasks"), "troupe")?;
    Ok(info
        .consumers
        .into_iter()
        .map(|c| (c.name, c.pending as u64))
        .collect())
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
}

#[test]
fn reply_streams_expire_after_reply_retention_renewed_by_each_result() {
    let prefix = unique_prefix("bounds-reply");
    let file = config("replies", &prefix, r#"reply_retention = "1h""#);
    let mut daemon = serve(&file);
    let mut conn = connect();
    let hour: i64 = 3_600_000;
    // Lowered by hand between results: only a write renewing the expiry raises it again.
    let lowered: i64 = 100_000;

    // An agent task: its result stream expires within the retention; the next result renews it.
    let agents = format!("{prefix}results:acme:agents");
    publish(
        &mut conn,
        &prefix,
        agent_task("a1", "echo", Some("results:acme:agents")),
    );
    assert_eq!(
        final_result(&mut conn, &agents, "a1", &mut daemon)["status"],
        "ok"
    );
    let ttl = pttl(&mut conn, &agents);
    assert!(ttl > 0 && ttl <= hour, "PTTL of {agents}: {ttl}");
    let _: bool = conn.pexpire(&agents, lowered).expect("PEXPIRE");
    // A daemon renews a stream's expiry at most once a second (`Write::Renew`).
    std::thread::sleep(troupe_runtime::store::RENEW_EVERY + Duration::from_millis(100));
    publish(
        &mut conn,
        &prefix,
        agent_task("a2", "echo", Some("results:acme:agents")),
    );
    final_result(&mut conn, &agents, "a2", &mut daemon);
    let ttl = pttl(&mut conn, &agents);
    assert!(
        ttl > lowered && ttl <= hour,
        "renewed by the next result: {ttl}"
    );

    // A streamed agent task: its acceptance renews the expiry as well.
    let mut streamed = agent_task("a3", "slow", Some("results:acme:streamed"));
    streamed["stream"] = true.into();
    let streamed_key = format!("{prefix}results:acme:streamed");
    publish(&mut conn, &prefix, streamed);
    eventually_blocking(daemon.with_log("no acceptance of a3"), WAIT, || {
        !results_of(&mut conn, &streamed_key, "a3").is_empty()
    });
    let ttl = pttl(&mut conn, &streamed_key);
    assert!(ttl > 0 && ttl <= hour, "PTTL after an acceptance: {ttl}");
    final_result(&mut conn, &streamed_key, "a3", &mut daemon);

    // A workflow task: the acceptance (written by the ingress) and the run's final result
    // (written by the batch that ends the run) each renew it.
    let runs = format!("{prefix}results:acme:runs");
    let task = serde_json::json!({
        "id": "w1", "workflow": "slowly", "input": "x", "group": "acme", "user": "alice",
        "reply_to": "results:acme:runs",
    });
    publish(&mut conn, &prefix, task);
    eventually_blocking(daemon.with_log("no acceptance of w1"), WAIT, || {
        !results_of(&mut conn, &runs, "w1").is_empty()
    });
    let ttl = pttl(&mut conn, &runs);
    assert!(ttl > 0 && ttl <= hour, "PTTL after the acceptance: {ttl}");
    // Lowered while the run goes on (its two slow steps take 2 s): nothing final yet.
    let (_, held): (bool, redis::streams::StreamRangeReply) = redis::pipe()
        .atomic()
        .pexpire(&runs, lowered)
        .xrange_all(&runs)
        .query(&mut conn)
        .expect("PEXPIRE + XRANGE");
    assert_eq!(held.ids.len(), 1, "only the acceptance is written yet");
    let result = final_result(&mut conn, &runs, "w1", &mut daemon);
    assert_eq!(result["status"], "ok", "{result}");
    let ttl = pttl(&mut conn, &runs);
    assert!(
        ttl > lowered && ttl <= hour,
        "renewed by the run's result: {ttl}"
    );

    daemon.signal("TERM");
    assert!(daemon.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn a_retired_generation_deletes_its_consumer_once_drained() {
    let prefix = unique_prefix("bounds-reload");
    // The default consumer_expiry (1 h): only the retiring generation itself can delete it.
    let file = config("gen", &prefix, "");
    let mut daemon = serve(&file);
    let mut conn = connect();
    publish(&mut conn, &prefix, agent_task("t1", "echo", None));
    let results = format!("{prefix}results");
    final_result(&mut conn, &results, "t1", &mut daemon);
    assert!(consumers(&mut conn, &prefix).contains_key("gen"));

    daemon.signal("HUP");
    daemon.wait_for_log("previous generation retired", WAIT);
    let what = daemon.with_log("the new generation never read");
    eventually_blocking(what, WAIT, || {
        consumers(&mut conn, &prefix).contains_key("gen~1")
    });
    let left = consumers(&mut conn, &prefix);
    assert!(
        !left.contains_key("gen"),
        "the retired consumer is left: {left:?}"
    );
    // The new generation serves.
    publish(&mut conn, &prefix, agent_task("t2", "echo", None));
    assert_eq!(
        final_result(&mut conn, &results, "t2", &mut daemon)["status"],
        "ok"
    );

    daemon.signal("TERM");
    assert!(daemon.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn a_killed_daemons_consumer_is_deleted_once_its_entries_are_claimed() {
    let prefix = unique_prefix("bounds-killed");
    let ingress = "claim_idle = \"500ms\"\nconsumer_expiry = \"2s\"";
    let (dead_file, live_file) = (
        config("dead", &prefix, ingress),
        config("live", &prefix, ingress),
    );
    let mut dead = serve(&dead_file);
    let mut conn = connect();
    // A slow task, taken by the only daemon, which dies holding it.
    publish(&mut conn, &prefix, agent_task("held", "slow", None));
    let what = dead.with_log("the slow task was never taken");
    eventually_blocking(what, WAIT, || {
        // The dead daemon creates the group as it starts.
        try_consumers(&mut conn, &prefix).is_ok_and(|c| c.get("dead") == Some(&1))
    });
    dead.signal("KILL");
    assert!(dead.wait_exit(WAIT).is_some());

    // Two daemons live on: one claims, the other has nothing to read the whole time.
    let mut live = serve(&live_file);
    let other_file = config("other", &prefix, ingress);
    let mut other = serve(&other_file);
    let results = format!("{prefix}results");
    let result = final_result(&mut conn, &results, "held", &mut live);
    assert_eq!(result["status"], "ok", "{result}");
    // Claimed (it owns nothing now), then deleted once idle past consumer_expiry.
    let what = live.with_log("the dead daemon's consumer is never deleted");
    eventually_blocking(what, MAINTENANCE, || {
        !consumers(&mut conn, &prefix).contains_key("dead")
    });
    // Whichever daemon deleted it logged why; its log is read by a thread of its own, which
    // may lag behind the deletion.
    eventually_blocking("neither daemon logged the deletion", WAIT, || {
        format!("{}\n{}", live.log(), other.log()).contains("idle past consumer_expiry")
    });
    // Live consumers with nothing to read stay, however long past consumer_expiry.
    std::thread::sleep(Duration::from_secs(5));
    let left = consumers(&mut conn, &prefix);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["live", "other"],
        "{left:?}; log:\n{}\n{}",
        live.log(),
        other.log()
    );

    for daemon in [&mut live, &mut other] {
        daemon.signal("TERM");
        assert!(daemon.wait_exit(WAIT).is_some_and(|s| s.success()));
    }
}

#[actix::test]
async fn a_consumer_holding_a_pending_entry_is_never_deleted() {
    let prefix = unique_prefix("bounds-holder");
    let store = private_redis::store(&prefix).await;
    let rig = Rig::start(
        "[models.scripted]\nprovider = \"scripted\"\n[agents.echo]\nmodel = \"scripted\"\n",
        store.clone(),
    )
    .await;
    // Built directly (no validation): a claim_idle too long to reclaim the holder's entry
    // while a consumer owning nothing expires at once.
    let s = IngressSettings {
        block: Duration::from_millis(100),
        claim_idle: Duration::from_secs(600),
        consumer_expiry: Duration::from_millis(200),
        ..IngressSettings::default()
    };
    store
        .xgroup_create(&s.stream, &s.group, "0")
        .await
        .expect("group");
    let mut ids = Vec::new();
    for id in ["held", "done"] {
        let task = agent_task(id, "echo", None).to_string();
        let added = store
            .xadd(&s.stream, &[("task", task.as_bytes())], None)
            .await
            .expect("xadd");
        ids.push(added);
    }
    // `holder` dies holding `held`; `idle` completed `done` and stopped reading.
    for consumer in ["holder", "idle"] {
        let read = GroupRead {
            stream: &s.stream,
            group: &s.group,
            consumer,
            count: 1,
            block: None,
            from: ReadFrom::New,
        };
        store.xreadgroup(read).await.expect("read");
    }
    store
        .xack(&s.stream, &s.group, &ids[1..])
        .await
        .expect("xack");
    IngressActor::new(
        store.clone(),
        rig.talk.clone(),
        None,
        BTreeSet::new(),
        s.clone(),
        "live".to_owned(),
    )
    .start();
    let names = || async {
        let consumers = store.xconsumers(&s.stream, &s.group).await.expect("xinfo");
        consumers
            .into_iter()
            .map(|c| (c.name, c.pending))
            .collect::<BTreeMap<_, _>>()
    };
    eventually(
        "the idle consumer is never deleted",
        MAINTENANCE,
        || async { !names().await.contains_key("idle") },
    )
    .await;
    // Two more maintenance rounds: the holder, idle far past consumer_expiry, stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = names().await;
    assert_eq!(left.get("holder"), Some(&1), "{left:?}");
    assert!(left.contains_key("live"), "{left:?}");
    rig.stop().await;
}

#[test]
fn a_foreign_group_nobody_reads_holds_trimming_back_only_until_abandoned_group_after() {
    let prefix = unique_prefix("bounds-tap");
    let file = config("trimmer", &prefix, r#"abandoned_group_after = "8s""#);
    let mut daemon = serve(&file);
    let mut conn = connect();
    let stream = format!("{prefix}tasks");
    // `tap` never reads; `tap2` read one entry once, then stopped.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", &stream, "tap", "0", "MKSTREAM"][..])
        .query(&mut conn)
        .expect("XGROUP CREATE tap");
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", &stream, "tap2", "0", "MKSTREAM"][..])
        .query(&mut conn)
        .expect("XGROUP CREATE tap2");
    let results = format!("{prefix}results");
    for i in 0..5 {
        publish(
            &mut conn,
            &prefix,
            agent_task(&format!("t{i}"), "echo", None),
        );
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(
            &[
                "GROUP", "tap2", "reader", "COUNT", "1", "STREAMS", &stream, ">",
            ][..],
        )
        .query(&mut conn)
        .expect("XREADGROUP tap2");
    for i in 0..5 {
        final_result(&mut conn, &results, &format!("t{i}"), &mut daemon);
    }

    // Before the threshold: the group holding the bound is named, the stream keeps its entries.
    let line = daemon.wait_for_log("held back by the consumer group \"tap\"", WAIT);
    assert!(line.contains("XGROUP DESTROY"), "{line}");
    let len: u64 = conn.xlen(&stream).expect("XLEN");
    assert_eq!(len, 5, "trimmed below a group not yet abandoned");

    // After it: both groups are left out (with how to remove them) and the stream is trimmed
    // down to the last entry (everything the ingress's own group needs).
    eventually_blocking("trimmed past the abandoned groups", MAINTENANCE, || {
        let log = daemon.log();
        let left_out = |group: &str| {
            log.lines().any(|l| {
                l.contains(&format!(
                    "past the consumer group \"{group}\", left out of trimming"
                )) && l.contains(&format!("XGROUP DESTROY {stream} {group}"))
            })
        };
        let len: u64 = conn.xlen(&stream).expect("XLEN");
        if left_out("tap") && left_out("tap2") && len == 1 {
            Ok(())
        } else {
            Err(format!("XLEN {len}; log:\n{log}"))
        }
    });
    // The tap had read none of the five entries.
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("past the consumer group \"tap\""))
        .expect("the left-out warning");
    assert!(line.contains("it had not read 5 entries"), "{line}");

    daemon.signal("TERM");
    assert!(daemon.wait_exit(WAIT).is_some_and(|s| s.success()));
}
