//! The stream ingress against the private Redis: tasks published with plain XADD of their JSON
//! are answered by task id, malformed entries are dead-lettered with reasons while valid ones
//! flow, a duplicate task id is answered from the stored result, pending entries of a dead
//! consumer (and of a previous life of this one) are completed, and a poison entry is
//! dead-lettered after `max_deliveries`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use troupe_config::IngressSettings;
use troupe_ingress::wire::Status;
use troupe_ingress::{DeadLetter, IngressActor, TaskResult};
use troupe_runtime::store::{GroupRead, IdleClaim, ReadFrom, Store, Write};
use troupe_testkit::{eventually, eventually_blocking, WAIT};

use crate::support::agents::Rig;
use crate::support::redis::{self, unique_prefix};

const CONFIG: &str = r#"
[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"
"#;

fn settings() -> IngressSettings {
    IngressSettings {
        block: Duration::from_millis(100),
        claim_idle: Duration::from_millis(300),
        max_deliveries: 2,
        max_input_bytes: 64,
        ..IngressSettings::default()
    }
}

async fn rig(name: &str) -> (Rig, Arc<dyn Store>) {
    let store = redis::store(&unique_prefix(name)).await;
    let rig = Rig::start(CONFIG, store.clone()).await;
    (rig, store)
}

fn start_ingress(rig: &Rig, store: &Arc<dyn Store>, consumer: &str) {
    IngressActor::new(
        store.clone(),
        rig.talk.clone(),
        None,
        BTreeSet::new(),
        settings(),
        consumer.to_owned(),
    )
    .start();
}

async fn publish(store: &Arc<dyn Store>, task: &str) -> String {
    let s = settings();
    store
        .xadd(&s.stream, &[("task", task.as_bytes())], None)
        .await
        .expect("xadd")
}

fn task(id: &str, input: &str) -> String {
    serde_json::json!({"id": id, "agent": "echo", "input": input, "group": "acme", "user": "alice"})
        .to_string()
}

/// Waits until `stream` holds `n` entries and returns the values of their field `field`.
async fn wait_entries(store: &Arc<dyn Store>, stream: &str, field: &str, n: usize) -> Vec<Vec<u8>> {
    let entries = eventually(format!("{n} entries of {stream}"), WAIT, || async {
        let entries = store.xrange(stream, "-", "+", None).await.expect("xrange");
        if entries.len() >= n {
            Ok(entries)
        } else {
            Err(format!("entries of {stream}: {entries:?}"))
        }
    })
    .await;
    assert_eq!(entries.len(), n, "entries of {stream}: {entries:?}");
    entries
        .iter()
        .map(|e| e.field(field).expect("the field").to_vec())
        .collect()
}

async fn results(store: &Arc<dyn Store>, stream: &str, n: usize) -> BTreeMap<String, TaskResult> {
    wait_entries(store, stream, "result", n)
        .await
        .iter()
        .map(|v| {
            let r: TaskResult = serde_json::from_slice(v).expect("result JSON");
            (r.task_id.clone(), r)
        })
        .collect()
}

async fn dead(store: &Arc<dyn Store>, n: usize) -> Vec<DeadLetter> {
    wait_entries(store, &settings().dead, "dead", n)
        .await
        .iter()
        .map(|v| serde_json::from_slice(v).expect("dead letter JSON"))
        .collect()
}

async fn assert_nothing_pending(store: &Arc<dyn Store>) {
    let s = settings();
    eventually("nothing pending", WAIT, || async {
        let pending = store.xpending(&s.stream, &s.group).await.expect("xpending");
        if pending.count == 0 {
            Ok(())
        } else {
            Err(format!("still pending: {pending:?}"))
        }
    })
    .await;
}

/// Reads one new entry as another consumer, which then "dies" holding it.
async fn read_as(store: &Arc<dyn Store>, consumer: &str) {
    let s = settings();
    store
        .xgroup_create(&s.stream, &s.group, "0")
        .await
        .expect("group");
    let read = GroupRead {
        stream: &s.stream,
        group: &s.group,
        consumer,
        count: 10,
        block: None,
        from: ReadFrom::New,
    };
    assert_eq!(store.xreadgroup(read).await.expect("read").len(), 1);
}

#[actix::test]
async fn valid_tasks_are_answered_and_malformed_ones_dead_lettered() {
    let (rig, store) = rig("ingress-mixed").await;
    let s = settings();
    start_ingress(&rig, &store, "d1");
    let malformed = [
        ("not json", "not_json"),
        (
            r#"{"agent":"nobody","input":"x","group":"acme","user":"u"}"#,
            "unknown_agent",
        ),
        (
            r#"{"agent":"echo","input":"x","user":"u"}"#,
            "missing_field",
        ),
        (
            &*serde_json::json!({"agent":"echo","input":"x".repeat(100),"group":"acme","user":"u"})
                .to_string(),
            "input_too_large",
        ),
        (
            r#"{"agent":"echo","input":"x","group":"acme","user":"u","reply_to":"thread:acme"}"#,
            "reply_to",
        ),
        // A producer of one group never writes into a stream another group's client reads.
        (
            r#"{"agent":"echo","input":"x","group":"acme","user":"u","reply_to":"results:beta:me"}"#,
            "reply_to",
        ),
        (
            r#"{"agent":"echo","input":"x","group":"system","user":"u"}"#,
            "reserved_group",
        ),
        (
            r#"{"agent":"echo","input":"x","group":"acme","user":"u","id":"a:b"}"#,
            "invalid_field",
        ),
    ]
    .map(|(t, k)| (t.to_owned(), k));
    for (i, (bad, _)) in malformed.iter().enumerate() {
        publish(&store, &task(&format!("t{i}"), &format!("hello {i}"))).await;
        publish(&store, bad).await;
    }
    // A field name that is not UTF-8, between valid tasks read in the same batch.
    store
        .apply(vec![Write::XAdd {
            stream: s.stream.clone(),
            fields: vec![
                (b"\xff\xfe".to_vec(), b"x".to_vec()),
                (b"task".to_vec(), task("bytes", "x").into_bytes()),
            ],
            trim: None,
        }])
        .await
        .expect("xadd");
    store
        .xadd(&s.stream, &[("other", b"x".as_slice())], None)
        .await
        .expect("xadd");
    let mine = serde_json::json!({"id": "mine", "agent": "echo", "input": {"q": 1},
        "group": "acme", "user": "alice", "reply_to": "results:acme:me"});
    publish(&store, &mine.to_string()).await;

    let answered = results(&store, &s.results, malformed.len()).await;
    for i in 0..malformed.len() {
        let result = &answered[&format!("t{i}")];
        assert_eq!(result.status, Status::Ok, "{result:?}");
        assert!(result.output.as_deref().is_some_and(|o| !o.is_empty()));
        assert!(result.thread.is_some() && result.usage.is_some());
        assert_eq!(result.group, "acme", "results name their group");
    }
    let private = results(&store, "results:acme:me", 1).await;
    assert_eq!(private["mine"].status, Status::Ok);
    assert!(store.xlen("results:beta:me").await.expect("xlen") == 0);

    let letters = dead(&store, malformed.len() + 2).await;
    let mut kinds: Vec<&str> = letters.iter().map(|l| l.kind.as_str()).collect();
    kinds.sort_unstable();
    let mut expected: Vec<&str> = malformed.iter().map(|(_, k)| *k).collect();
    expected.push("no_task_field");
    expected.push("malformed_entry");
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    for letter in &letters {
        assert!(
            !letter.reason.is_empty() && letter.deliveries == 1,
            "{letter:?}"
        );
        assert!(!letter.fields.is_empty());
    }
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

#[actix::test]
async fn a_duplicate_task_id_is_answered_from_the_stored_result() {
    let (rig, store) = rig("ingress-dup").await;
    let s = settings();
    start_ingress(&rig, &store, "d1");
    publish(&store, &task("same", "only once")).await;
    let first = results(&store, &s.results, 1).await;
    publish(&store, &task("same", "only once")).await;
    let both = wait_entries(&store, &s.results, "result", 2).await;
    assert_eq!(both[0], both[1], "the stored result is answered again");
    let thread = first["same"].thread.clone().expect("thread");
    let page = rig
        .talk
        .messages("acme", &thread, 0, 100)
        .await
        .expect("messages");
    assert_eq!(page.messages.len(), 2, "one turn: the model was asked once");
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

/// A task read (left pending) by `reader` is completed by the ingress consumer `d1`.
async fn check_pending_completed(prefix: &str, reader: &str, task_id: &str) {
    let (rig, store) = rig(prefix).await;
    let s = settings();
    publish(&store, &task(task_id, "left pending")).await;
    read_as(&store, reader).await;
    start_ingress(&rig, &store, "d1");
    let answered = results(&store, &s.results, 1).await;
    assert_eq!(answered[task_id].status, Status::Ok);
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

#[actix::test]
async fn a_pending_entry_of_a_dead_consumer_is_reclaimed_and_completed() {
    check_pending_completed("ingress-reclaim", "ghost", "orphan").await;
}

#[actix::test]
async fn own_pending_entries_are_read_again_on_start() {
    check_pending_completed("ingress-own", "d1", "mine").await;
}

#[actix::test]
async fn a_poison_entry_is_dead_lettered_after_max_deliveries() {
    let (rig, store) = rig("ingress-poison").await;
    let s = settings();
    let id = publish(&store, &task("poison", "crashes everyone")).await;
    read_as(&store, "ghost").await;
    // A second consumer took it over and died too: 2 deliveries, the maximum.
    let claimed = store
        .xautoclaim(IdleClaim {
            stream: &s.stream,
            group: &s.group,
            consumer: "ghost2",
            min_idle: Duration::ZERO,
            start: "0-0",
            count: 10,
        })
        .await
        .expect("xautoclaim");
    assert_eq!(claimed.claimed.len(), 1);
    start_ingress(&rig, &store, "d1");
    let letters = dead(&store, 1).await;
    assert_eq!(letters[0].entry, id);
    assert_eq!(letters[0].kind, "max_deliveries");
    assert_eq!(letters[0].deliveries, 3);
    assert_nothing_pending(&store).await;
    assert_eq!(store.xlen(&s.results).await.expect("xlen"), 0);
    rig.stop().await;
}

/// A rig whose agent `slow` answers after `latency`, on its own store prefix.
async fn slow_rig(name: &str, latency: &str) -> (Rig, Arc<dyn Store>) {
    let store = redis::store(&unique_prefix(name)).await;
    let config = format!("{CONFIG}\n[models.slow]\nprovider = \"scripted\"\nlatency = \"{latency}\"\n\n[agents.slow]\nmodel = \"slow\"\n");
    let rig = Rig::start(&config, store.clone()).await;
    (rig, store)
}

/// The group `acme` has exactly one thread, `thread`, holding one turn: the model was asked
/// once and no other delivery started the task.
async fn assert_one_turn(rig: &Rig, thread: &str) {
    let page = rig
        .talk
        .messages("acme", thread, 0, 100)
        .await
        .expect("messages");
    assert_eq!(page.messages.len(), 2, "one turn: the model was asked once");
    let threads = rig
        .talk
        .list_threads("acme", None, 0, 100)
        .await
        .expect("threads")
        .threads;
    assert_eq!(threads.len(), 1, "no other delivery started the task");
}

#[actix::test]
async fn a_task_id_running_is_not_started_twice() {
    let (rig, store) = slow_rig("ingress-running", "300ms").await;
    let s = settings();
    start_ingress(&rig, &store, "d1");
    let twice = serde_json::json!({"id": "twice", "agent": "slow", "input": "slowly",
        "group": "acme", "user": "alice"})
    .to_string();
    publish(&store, &twice).await;
    publish(&store, &twice).await;
    let both = wait_entries(&store, &s.results, "result", 2).await;
    assert_eq!(
        both[0], both[1],
        "the second delivery waits for the first's result"
    );
    let result: TaskResult = serde_json::from_slice(&both[0]).expect("result JSON");
    assert_one_turn(&rig, &result.thread.expect("thread")).await;
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

#[actix::test]
async fn a_streamed_task_names_its_delta_stream_before_its_result() {
    let (rig, store) = rig("ingress-stream").await;
    let s = settings();
    start_ingress(&rig, &store, "d1");
    let live = serde_json::json!({"id": "live", "agent": "echo", "input": "say it live",
        "group": "acme", "user": "alice", "stream": true});
    publish(&store, &live.to_string()).await;
    let entries = wait_entries(&store, &s.results, "result", 2).await;
    let decode = |b: &Vec<u8>| serde_json::from_slice::<TaskResult>(b).expect("result JSON");
    let (accepted, done) = (decode(&entries[0]), decode(&entries[1]));
    assert_eq!(accepted.status, Status::Accepted, "{accepted:?}");
    assert_eq!(done.status, Status::Ok, "{done:?}");
    let stream = accepted.delta_stream.clone().expect("the delta stream");
    assert_eq!(done.delta_stream.as_deref(), Some(stream.as_str()));
    assert_eq!(accepted.thread, done.thread);
    // Results name Redis keys (with the store's prefix), as any client reads them.
    let key = stream
        .strip_prefix(store.key_prefix())
        .expect("the Redis key of the stream");
    let deltas = store.xrange(key, "-", "+", None).await.expect("xrange");
    let text: String = deltas
        .iter()
        .filter_map(|e| e.field("delta"))
        .map(String::from_utf8_lossy)
        .collect();
    assert_eq!(Some(text), done.output, "the deltas spell the answer");
    assert!(deltas.last().is_some_and(|e| e.field("done").is_some()));
    rig.stop().await;
}

#[actix::test]
async fn a_task_longer_than_claim_idle_stays_claimed_and_runs_once() {
    // Ten times claim_idle (300 ms).
    let (rig, store) = slow_rig("ingress-long", "3s").await;
    let s = settings();
    start_ingress(&rig, &store, "d1");
    start_ingress(&rig, &store, "d2");
    let long = serde_json::json!({"id": "long", "agent": "slow", "input": "take your time",
        "group": "acme", "user": "alice"});
    publish(&store, &long.to_string()).await;
    let answered = results(&store, &s.results, 1).await;
    assert_eq!(answered["long"].status, Status::Ok, "{answered:?}");
    assert_eq!(
        store.xlen(&s.dead).await.expect("xlen"),
        0,
        "not dead-lettered"
    );
    assert_one_turn(&rig, answered["long"].thread.as_deref().expect("thread")).await;
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

#[actix::test]
async fn trimming_drops_completed_entries_and_keeps_pending_ones() {
    let (rig, store) = rig("ingress-trim").await;
    let s = settings();
    publish(&store, &task("orphan", "held by a dead consumer")).await;
    read_as(&store, "ghost").await;
    for i in 0..20 {
        publish(&store, &task(&format!("t{i}"), "done soon")).await;
    }
    start_ingress(&rig, &store, "d1");
    // All 21 are answered (the orphan once reclaimed), and the stream is trimmed.
    let answered = results(&store, &s.results, 21).await;
    assert!(answered.values().all(|r| r.status == Status::Ok));
    assert_nothing_pending(&store).await;
    eventually("the ingress stream is never trimmed", WAIT, || async {
        store.xlen(&s.stream).await.expect("xlen") <= 1
    })
    .await;
    rig.stop().await;
}

#[actix::test]
async fn trimming_never_drops_a_pending_entry() {
    let (rig, store) = rig("ingress-trim-pending").await;
    let s = settings();
    // A long claim_idle: the ghost's entry stays pending (unclaimed) while trimming runs.
    let settings = IngressSettings {
        claim_idle: Duration::from_secs(60),
        ..settings()
    };
    let held = publish(&store, &task("held", "held by a dead consumer")).await;
    read_as(&store, "ghost").await;
    for i in 0..20 {
        publish(&store, &task(&format!("t{i}"), "done soon")).await;
    }
    IngressActor::new(
        store.clone(),
        rig.talk.clone(),
        None,
        BTreeSet::new(),
        settings,
        "d1".to_owned(),
    )
    .start();
    results(&store, &s.results, 20).await;
    // Two trim periods: everything after the pending entry may go, the entry itself stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = store
        .xrange(&s.stream, "-", "+", None)
        .await
        .expect("xrange");
    assert_eq!(left.first().map(|e| e.id.as_str()), Some(held.as_str()));
    let pending = store.xpending(&s.stream, &s.group).await.expect("xpending");
    assert_eq!(pending.count, 1);
    rig.stop().await;
}

/// A config file for a daemon on the private Redis: the echo agent and a two-step workflow.
fn daemon_config(prefix: &str, extra: &str) -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        r#"[daemon]
name = "cli-daemon"
shutdown_grace = "3s"
[store]
backend = "redis"
url = "{}"
prefix = "{prefix}"
[ingress]
block = "100ms"
{CONFIG}
[workflows.twice]
[[workflows.twice.steps]]
name = "first"
kind = "agent"
agent = "echo"
input = "FIRST {{{{input}}}}"
[[workflows.twice.steps]]
name = "second"
kind = "agent"
agent = "echo"
input = "SECOND {{{{steps.first.output}}}}"
{extra}
"#,
        redis::redis_url()
    );
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// Runs `troupe ARGS...`; returns (success, stdout, stderr).
fn troupe(args: &[&str]) -> (bool, String, String) {
    troupe_env(args, &[])
}

/// Runs `troupe ARGS...` with `env` added to its environment.
fn troupe_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run troupe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_publishes_streams_reports_status_and_retries_dead_letters() {
    use crate::support::daemon::Daemon;

    let file = daemon_config(&unique_prefix("ingress-cli"), "");
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("ingress consumer started", WAIT);
    let publish = [
        "publish", "--group", "acme", "--user", "alice", "--config", path,
    ];
    let timeout = ["--timeout", "20s"];

    // An agent task: the result JSON.
    let (ok, out, err) = troupe(
        &[
            &publish[..],
            &timeout,
            &["--agent", "echo", "--json", "hello"],
        ]
        .concat(),
    );
    assert!(ok, "publish failed: {err}\n{}", daemon.log());
    let result: TaskResult = serde_json::from_str(out.trim()).expect("result JSON");
    assert_eq!(result.status, Status::Ok);
    let answer = result.output.expect("output");
    assert!(!answer.is_empty());

    // Streamed: the same answer, printed live from the deltas.
    let (ok, live, err) = troupe(
        &[
            &publish[..],
            &timeout,
            &["--agent", "echo", "--stream", "hello"],
        ]
        .concat(),
    );
    assert!(ok, "publish --stream failed: {err}");
    assert_eq!(live.trim(), answer.trim(), "the live text is the answer");

    // A workflow task: both steps ran, the output is the last step's.
    let (ok, out, err) = troupe(
        &[
            &publish[..],
            &timeout,
            &["--workflow", "twice", "--json", "wf input"],
        ]
        .concat(),
    );
    assert!(ok, "publish --workflow failed: {err}\n{}", daemon.log());
    let result: TaskResult = serde_json::from_str(out.trim()).expect("result JSON");
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let run = result.run.expect("the run id");
    let (ok, status, err) = troupe(&[
        "workflow", "status", &run, "--group", "acme", "--config", path,
    ]);
    assert!(ok, "{err}");
    assert!(
        status.contains("completed") && status.contains("second"),
        "{status}"
    );

    // A task dead-lettered: publish says why at once instead of waiting for its timeout.
    let (ok, _, err) = troupe(&[&publish[..], &timeout, &["--agent", "nobody", "x"]].concat());
    assert!(!ok);
    assert!(
        err.contains("dead-lettered (unknown_agent)"),
        "{err}\n{}",
        daemon.log()
    );

    let (ok, status, err) = troupe(&["status", "--config", path]);
    assert!(ok, "{err}");
    assert!(status.contains("cli-daemon: live"), "{status}");
    assert!(status.contains(":dead: 1 entries"), "{status}");
    assert!(status.contains("pending 0"), "{status}");

    let (ok, list, err) = troupe(&["dead-letters", "list", "--config", path]);
    assert!(ok, "{err}");
    assert!(
        list.contains("unknown_agent") && list.contains("nobody"),
        "{list}"
    );
    let letter = list
        .split_whitespace()
        .next()
        .expect("a letter id")
        .to_owned();
    let (ok, out, err) = troupe(&["dead-letters", "retry", &letter, "--config", path]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("retried {letter}")), "{out}");
    // Published again, refused again: a new letter replaces the retried one.
    eventually_blocking("the retried task dead-lettered again", WAIT, || {
        let (_, list, _) = troupe(&["dead-letters", "list", "--config", path]);
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if ids.len() == 1 && ids[0] != letter {
            Ok(())
        } else {
            Err(format!(
                "the retried task was not dead-lettered again: {list}"
            ))
        }
    });
    let (ok, _, err) = troupe(&["dead-letters", "retry", "0-1", "--config", path]);
    assert!(!ok && err.contains("no dead letter 0-1"), "{err}");

    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}

#[test]
fn the_cli_signs_its_tasks_when_producer_auth_is_on() {
    use crate::support::daemon::Daemon;

    const VAR: &str = "TROUPE_TEST_ACME_TASK_SECRET";
    let auth = format!(
        "[ingress.auth]\nmode = \"hmac\"\n[ingress.auth.groups.acme]\nsecret_env = \"{VAR}\"\n"
    );
    let file = daemon_config(&unique_prefix("ingress-cli-auth"), &auth);
    let path = file.path().to_str().expect("utf-8 path");
    let secret = [(VAR, "acme-cli-secret")];
    let mut daemon = Daemon::spawn_with_env(&["serve", "--config", path], &secret);
    daemon.wait_for_log("ingress consumer started", WAIT);
    let publish = [
        "publish",
        "--agent",
        "echo",
        "--user",
        "alice",
        "--config",
        path,
        "--timeout",
        "20s",
    ];

    let (ok, out, err) = troupe_env(
        &[&publish[..], &["--group", "acme", "signed"]].concat(),
        &secret,
    );
    assert!(ok, "signed publish failed: {err}\n{}", daemon.log());
    assert!(out.contains("signed"), "{out}");

    // Without the secret the CLI says what to set, and publishes nothing.
    let (ok, _, err) = troupe(&[&publish[..], &["--group", "acme", "unsigned"]].concat());
    assert!(!ok && err.contains(VAR), "{err}");
    // A group without a secret cannot publish at all.
    let (ok, _, err) = troupe_env(&[&publish[..], &["--group", "beta", "x"]].concat(), &secret);
    assert!(!ok && err.contains("has no secret configured"), "{err}");
    // Signed with the wrong secret: the daemon dead-letters it, and the CLI reports why.
    let wrong = [(VAR, "not-the-secret")];
    let (ok, _, err) = troupe_env(
        &[&publish[..], &["--group", "acme", "forged"]].concat(),
        &wrong,
    );
    assert!(
        !ok && err.contains("dead-lettered (unauthenticated)"),
        "{err}"
    );
    assert!(
        !daemon.log().contains("acme-cli-secret"),
        "the secret is never logged"
    );

    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}
