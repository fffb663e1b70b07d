//! The stream ingress against the private Redis: tasks published with plain XADD of their JSON
//! are answered by task id, malformed entries are dead-lettered with reasons while valid ones
//! flow, a duplicate task id is answered from the stored result, pending entries of a dead
//! consumer (and of a previous life of this one) are completed, and a poison entry is
//! dead-lettered after `max_deliveries`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use troupe_agents::ingress::wire::Status;
use troupe_agents::ingress::{DeadLetter, IngressActor, TaskResult};
use troupe_config::IngressSettings;
use troupe_runtime::store::{GroupRead, ReadFrom, Store};

use crate::support::agents::Rig;
use crate::support::redis::{self, unique_prefix};

const CONFIG: &str = r#"
[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"
"#;

const WAIT: Duration = Duration::from_secs(10);

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
    let rig = Rig::start(CONFIG, store.clone(), BTreeMap::new()).await;
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
    let deadline = Instant::now() + WAIT;
    loop {
        let entries = store.xrange(stream, "-", "+", None).await.expect("xrange");
        if entries.len() >= n || Instant::now() > deadline {
            assert_eq!(entries.len(), n, "entries of {stream}: {entries:?}");
            return entries
                .iter()
                .map(|e| e.field(field).expect("the field").to_vec())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let deadline = Instant::now() + WAIT;
    loop {
        let pending = store.xpending(&s.stream, &s.group).await.expect("xpending");
        if pending.count == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    ]
    .map(|(t, k)| (t.to_owned(), k));
    for (i, (bad, _)) in malformed.iter().enumerate() {
        publish(&store, &task(&format!("t{i}"), &format!("hello {i}"))).await;
        publish(&store, bad).await;
    }
    store
        .xadd(&s.stream, &[("other", b"x".as_slice())], None)
        .await
        .expect("xadd");
    let mine = serde_json::json!({"id": "mine", "agent": "echo", "input": {"q": 1},
        "group": "acme", "user": "alice", "reply_to": "troupe:results:me"});
    publish(&store, &mine.to_string()).await;

    let answered = results(&store, &s.results, 5).await;
    for i in 0..5 {
        let result = &answered[&format!("t{i}")];
        assert_eq!(result.status, Status::Ok, "{result:?}");
        assert!(result.output.as_deref().is_some_and(|o| !o.is_empty()));
        assert!(result.thread.is_some() && result.usage.is_some());
    }
    let private = results(&store, "troupe:results:me", 1).await;
    assert_eq!(private["mine"].status, Status::Ok);

    let letters = dead(&store, 6).await;
    let mut kinds: Vec<&str> = letters.iter().map(|l| l.kind.as_str()).collect();
    kinds.sort_unstable();
    let mut expected: Vec<&str> = malformed.iter().map(|(_, k)| *k).collect();
    expected.push("no_task_field");
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
        .xautoclaim(&s.stream, &s.group, "ghost2", Duration::ZERO, "0-0", 10)
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

#[actix::test]
async fn a_task_id_running_is_not_started_twice() {
    let store = redis::store(&unique_prefix("ingress-running")).await;
    let config = format!("{CONFIG}\n[models.slow]\nprovider = \"scripted\"\nlatency = \"300ms\"\n\n[agents.slow]\nmodel = \"slow\"\n");
    let rig = Rig::start(&config, store.clone(), BTreeMap::new()).await;
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
    let thread = result.thread.expect("thread");
    let page = rig
        .talk
        .messages("acme", &thread, 0, 100)
        .await
        .expect("messages");
    assert_eq!(page.messages.len(), 2, "one turn: the model was asked once");
    assert_eq!(
        rig.talk
            .list_threads("acme", None, 0, 100)
            .await
            .expect("threads")
            .threads
            .len(),
        1
    );
    assert_nothing_pending(&store).await;
    rig.stop().await;
}

#[test]
fn troupe_publish_prints_the_result_of_a_running_daemon() {
    use std::io::Write as _;

    use crate::support::daemon::Daemon;

    let prefix = unique_prefix("ingress-publish");
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        "[daemon]\nshutdown_grace = \"3s\"\n[store]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\n[ingress]\nblock = \"100ms\"\n{CONFIG}",
        redis::redis_url()
    );
    file.write_all(text.as_bytes()).expect("write config");
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("ingress consumer started", Duration::from_secs(20));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args([
            "publish", "--agent", "echo", "--group", "acme", "--user", "alice",
        ])
        .args([
            "--config",
            path,
            "--timeout",
            "20s",
            "--json",
            "hello from the cli",
        ])
        .output()
        .expect("run troupe publish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "publish failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let result: TaskResult = serde_json::from_str(stdout.trim()).expect("result JSON");
    assert_eq!(result.status, Status::Ok);
    assert!(result.output.is_some_and(|o| !o.is_empty()));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args([
            "publish", "--agent", "nobody", "--group", "acme", "--user", "alice",
        ])
        .args(["--config", path, "--timeout", "2s", "x"])
        .output()
        .expect("run troupe publish");
    assert!(
        !unknown.status.success(),
        "an unknown agent is dead-lettered, never answered"
    );
    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}
