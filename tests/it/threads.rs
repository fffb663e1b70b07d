//! Thread actors on both store backends, with the offline scripted model: messages persisted
//! in order, passivation and re-activation from the store, concurrent turns serialized, a
//! corrupt record failing the turn with a typed error.

use std::sync::Arc;
use std::time::Duration;

use troupe_agents::{AgentError, Ask, Role, ThreadId};
use troupe_runtime::store::{MemoryStore, Store};

use crate::support::agents::Rig;
use crate::support::redis::{self, unique_prefix};

const CONFIG: &str = r#"
[models.scripted]
provider = "scripted"

[agents.echo]
model = "scripted"
context_messages = 4
"#;

async fn start(store: Arc<dyn Store>) -> Rig {
    Rig::start(CONFIG, store).await
}

fn ask(thread: Option<&str>, input: &str) -> Ask {
    Ask {
        group: "acme".into(),
        user: "alice".into(),
        agent: "echo".into(),
        thread: thread.map(Into::into),
        input: input.into(),
        stream: false,
        started: None,
    }
}

async fn check_persistence_and_reactivation(store: Arc<dyn Store>) {
    let talk = start(store.clone()).await.talk;
    let first = talk.ask(ask(None, "one")).await.expect("turn");
    let thread = first.thread.clone();
    // Concurrent turns on one thread are serialized by its actor: nothing interleaves.
    let turns = (0..5).map(|i| {
        let talk = talk.clone();
        let thread = thread.clone();
        async move { talk.ask(ask(Some(&thread), &format!("message {i}"))).await }
    });
    for outcome in futures::future::join_all(turns).await {
        outcome.expect("turn");
    }
    let page = talk
        .messages("acme", &thread, 0, 100)
        .await
        .expect("messages");
    assert_eq!(page.total, 12);
    for pair in page.messages.chunks(2) {
        assert_eq!(pair[0].message.role, Role::User);
        assert_eq!(pair[1].message.role, Role::Assistant);
        assert_eq!(
            pair[1].message.content,
            format!("You said: {}", pair[0].message.content)
        );
    }
    assert!(page
        .messages
        .iter()
        .enumerate()
        .all(|(i, m)| m.seq == i as u64));

    // Passivate; the next turn re-activates the thread from the store and continues it.
    assert_eq!(talk.passivate_idle(Duration::ZERO), 1);
    assert_eq!(talk.thread_stats().active, 0);
    let next = talk
        .ask(ask(Some(&thread), "after a rest"))
        .await
        .expect("turn");
    assert_eq!(next.seq, 13);
    assert_eq!(talk.thread_stats().activations, 2);

    // Another daemon over the same store sees the same thread.
    let second = start(store).await.talk;
    let page = second
        .messages("acme", &thread, 12, 10)
        .await
        .expect("messages");
    assert_eq!(page.total, 14);
    assert_eq!(page.messages[0].message.content, "after a rest");
}

#[actix::test]
async fn memory_threads_persist_in_order_and_reactivate_from_the_store() {
    check_persistence_and_reactivation(Arc::new(MemoryStore::new())).await;
}

#[actix::test]
async fn redis_threads_persist_in_order_and_reactivate_from_the_store() {
    check_persistence_and_reactivation(redis::store(&unique_prefix("threads")).await).await;
}

#[actix::test]
async fn a_corrupt_thread_fails_its_turn_with_a_typed_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let talk = start(store.clone()).await.talk;
    let out = talk.ask(ask(None, "hello")).await.expect("turn");
    let key = format!("thread:acme:{}:messages", out.thread);
    store
        .push(&key, &[b"not json".as_slice()])
        .await
        .expect("push");
    // Whether the thread's actor is still live or activated anew, the next turn reads the
    // changed thread and refuses the corrupt record.
    for passivate in [false, true] {
        if passivate {
            assert_eq!(talk.passivate_idle(Duration::ZERO), 1);
        }
        let err = talk
            .ask(ask(Some(&out.thread), "again"))
            .await
            .expect_err("the turn must fail");
        let text = err.to_string();
        assert!(text.contains(&format!("corrupt record at {key}")), "{text}");
        assert!(
            matches!(&err, AgentError::Corrupt { key: at, .. } if *at == key),
            "{err:?}"
        );
    }
}

#[test]
fn thread_ids_reject_separators_and_empty_parts() {
    for (group, thread) in [
        ("", "t"),
        ("g", ""),
        ("a:b", "t"),
        ("g", "x:y"),
        ("g", "a b"),
    ] {
        let err = ThreadId::new(group, thread).expect_err("invalid id");
        assert!(err.to_string().contains("must not contain ':'"), "{err}");
    }
    let generated = ThreadId::generate("acme").expect("id");
    assert_eq!(generated.group(), "acme");
    assert_ne!(generated, ThreadId::generate("acme").expect("id"));
}

#[actix::test]
async fn a_creation_interrupted_after_claiming_the_id_is_finished_not_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let talk = start(store.clone()).await.talk;
    // A daemon died right after claiming the id: the owner key exists, nothing else.
    store
        .set("thread-owner:half", b"acme", None)
        .await
        .expect("set");
    let new = troupe_agents::NewThread {
        group: "acme".into(),
        user: "alice".into(),
        id: Some("half".into()),
        ..Default::default()
    };
    let info = talk.create_thread(new.clone()).await.expect("finished");
    assert_eq!(info.id, "half");
    let out = talk.ask(ask(Some("half"), "hello")).await.expect("turn");
    assert_eq!(out.thread, "half");
    // A complete thread is still refused, and so is another group's id.
    let again = talk.create_thread(new).await;
    assert!(
        matches!(again, Err(AgentError::Conflict { .. })),
        "{again:?}"
    );
    let other = troupe_agents::NewThread {
        group: "globex".into(),
        user: "bob".into(),
        id: Some("half".into()),
        ..Default::default()
    };
    let stolen = talk.create_thread(other).await;
    assert!(
        matches!(stolen, Err(AgentError::Conflict { .. })),
        "{stolen:?}"
    );
}

/// A task without a thread: its new thread's first turn runs without an actor and is
/// written whole afterwards (on both stores); the thread is then an ordinary one, listed,
/// audited and continued through its actor.
async fn check_first_turn_alone(store: Arc<dyn Store>) {
    let rig = start(store.clone()).await;
    let talk = &rig.talk;
    let first = talk.ask(ask(None, "first question")).await.expect("turn");
    assert!(first.answer.contains("first question"), "{}", first.answer);
    assert_eq!(first.seq, 1);
    assert_eq!(
        talk.thread_stats().activations,
        0,
        "no actor for a new thread"
    );
    let info = talk.thread("acme", &first.thread).await.expect("thread");
    assert_eq!(
        (info.user.as_str(), info.title.as_str()),
        ("alice", "first question")
    );
    let listed = talk
        .list_threads("acme", Some("alice"), 0, 10)
        .await
        .expect("list");
    assert_eq!(listed.threads.len(), 1);
    let kinds: Vec<String> = talk
        .events("acme", "0", 100)
        .await
        .expect("events")
        .iter()
        .filter_map(|e| {
            e.field("kind")
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert_eq!(kinds, ["thread_created", "message", "message", "usage"]);
    for key in [
        format!("thread-owner:{}", first.thread),
        format!("thread:acme:{}:meta", first.thread),
        format!("thread:acme:{}:messages", first.thread),
    ] {
        assert!(
            store.ttl(&key).await.expect("ttl").is_some(),
            "{key} expires"
        );
    }
    let next = talk
        .ask(ask(Some(&first.thread), "second question"))
        .await
        .expect("turn");
    assert_eq!(next.thread, first.thread);
    assert_eq!(talk.thread_stats().activations, 1);
    let page = talk
        .messages("acme", &first.thread, 0, 10)
        .await
        .expect("messages");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
    assert_eq!(page.messages[0].message.role, Role::User);
    assert_eq!(page.messages[1].message.role, Role::Assistant);
    rig.stop().await;
}

#[actix::test]
async fn a_new_threads_first_turn_runs_without_an_actor_and_is_written_whole_in_memory() {
    check_first_turn_alone(Arc::new(MemoryStore::new())).await;
}

#[actix::test]
async fn a_new_threads_first_turn_runs_without_an_actor_and_is_written_whole_on_redis() {
    check_first_turn_alone(redis::store(&unique_prefix("first-turn")).await).await;
}

#[actix::test]
async fn a_one_shot_call_writes_its_thread_whole_in_the_callers_batch() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rig = start(store.clone()).await;
    let talk = &rig.talk;
    let new = troupe_agents::NewThread {
        group: "acme".into(),
        user: "alice".into(),
        id: Some("wf-r1-step".into()),
        title: "a workflow call".into(),
        metadata: serde_json::json!({"run": "r1"}),
    };
    let (first, writes) = talk
        .ask_once(new.clone(), "echo", "first question".into(), None)
        .await
        .expect("one-shot turn");
    assert_eq!(first.thread, "wf-r1-step");
    assert!(first.answer.contains("first question"), "{}", first.answer);
    // No thread actor was started for it, and nothing is stored until the caller sends the
    // writes: the thread whole, and the model call's usage record.
    assert_eq!(talk.thread_stats().activations, 0);
    assert!(matches!(
        talk.thread("acme", "wf-r1-step").await,
        Err(AgentError::NotFound { what: "thread", .. })
    ));
    assert!(store
        .keys_with_prefix("usage:acme:")
        .await
        .expect("keys")
        .is_empty());
    store.apply(writes).await.expect("apply");
    let info = talk.thread("acme", "wf-r1-step").await.expect("thread");
    assert_eq!(
        (info.title.as_str(), info.user.as_str()),
        ("a workflow call", "alice")
    );
    let page = talk
        .messages("acme", "wf-r1-step", 0, 10)
        .await
        .expect("messages");
    let roles: Vec<Role> = page.messages.iter().map(|m| m.message.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant]);
    assert_eq!(page.total, 2);
    let page = talk
        .messages("acme", "wf-r1-step", 1, 10)
        .await
        .expect("messages");
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].seq, 1);
    let today = troupe_agents::usage::day_of(troupe_runtime::clock::now_ms());
    let usage = talk.usage("acme", today, today).await.expect("usage");
    assert_eq!(usage.total.calls, 1, "{usage:?}");
    // One value, no owner key, never listed.
    assert_eq!(
        store.keys_with_prefix("thread").await.expect("keys"),
        ["thread:acme:wf-r1-step:once"]
    );
    let listed = talk.list_threads("acme", None, 0, 10).await.expect("list");
    assert_eq!(listed.threads.len(), 0, "never indexed");
    let hour = std::time::Duration::from_secs(3600);
    let ttl = store.ttl("thread:acme:wf-r1-step:once").await.expect("ttl");
    assert!(
        ttl.is_some_and(|t| t > hour),
        "the thread retention: {ttl:?}"
    );
    // The same call made again (a pool item retried) replaces it; this time with its run's
    // retention.
    let (again, writes) = talk
        .ask_once(new.clone(), "echo", "second question".into(), Some(hour))
        .await
        .expect("repeated call");
    assert_eq!(again.thread, "wf-r1-step");
    store.apply(writes).await.expect("apply");
    let ttl = store.ttl("thread:acme:wf-r1-step:once").await.expect("ttl");
    assert!(
        ttl.is_some_and(|t| t <= hour),
        "the run's retention: {ttl:?}"
    );
    let page = talk
        .messages("acme", "wf-r1-step", 0, 10)
        .await
        .expect("messages");
    assert_eq!(page.total, 2);
    assert!(page.messages[0].message.content.contains("second question"));
    // Another group reads none of it: the id names a thread of the asking group only.
    assert!(matches!(
        talk.thread("globex", "wf-r1-step").await,
        Err(AgentError::NotFound { .. })
    ));
    assert!(matches!(
        talk.messages("globex", "wf-r1-step", 0, 10).await,
        Err(AgentError::NotFound { .. })
    ));
    // Ordinary threads cannot take the prefix; one-shot ids must have it; an unknown agent is
    // refused before anything.
    let taken = talk
        .create_thread(troupe_agents::NewThread {
            id: Some("wf-mine".into()),
            ..new.clone()
        })
        .await;
    assert!(
        matches!(
            taken,
            Err(AgentError::Invalid {
                what: "thread id",
                ..
            })
        ),
        "{taken:?}"
    );
    let plain = talk
        .ask_once(
            troupe_agents::NewThread {
                id: Some("plain".into()),
                ..new.clone()
            },
            "echo",
            "hi".into(),
            None,
        )
        .await;
    assert!(
        matches!(
            plain,
            Err(AgentError::Invalid {
                what: "thread id",
                ..
            })
        ),
        "{plain:?}"
    );
    let unknown = talk.ask_once(new, "nobody", "hello".into(), None).await;
    assert!(
        matches!(unknown, Err(AgentError::NotFound { what: "agent", .. })),
        "{unknown:?}"
    );
    rig.stop().await;
}

/// The thread keys and index entries of `thread` in group `acme` (user `alice`).
fn thread_keys(thread: &str) -> Vec<String> {
    vec![
        format!("thread-owner:{thread}"),
        format!("thread:acme:{thread}:meta"),
        format!("thread:acme:{thread}:messages"),
    ]
}

async fn check_retention(store: Arc<dyn Store>) {
    let config = CONFIG.replace(
        "[models.scripted]",
        "[daemon]\nthread_retention = \"1500ms\"\n\n[models.scripted]",
    );
    let rig = Rig::start(&config, store.clone()).await;
    let talk = &rig.talk;
    let old = talk.ask(ask(None, "old")).await.expect("turn").thread;
    // Activity is scored in ms: a later millisecond, so the order below is by time alone.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let kept = talk.ask(ask(None, "kept")).await.expect("turn").thread;
    for key in thread_keys(&old) {
        let ttl = store.ttl(&key).await.expect("ttl");
        assert!(
            ttl.is_some_and(|t| t <= Duration::from_millis(1500)),
            "{key}: {ttl:?}"
        );
    }
    // The most recently active thread lists first.
    let listed = |page: troupe_agents::ThreadPage| -> Vec<String> {
        page.threads.into_iter().map(|t| t.id).collect()
    };
    let page = talk.list_threads("acme", None, 0, 10).await.expect("list");
    assert_eq!(listed(page), [kept.clone(), old.clone()]);
    // Keep one thread in use past the other's retention: every turn renews it.
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        talk.ask(ask(Some(&kept), &format!("still here {i}")))
            .await
            .expect("turn");
    }
    for key in thread_keys(&old) {
        assert!(!store.exists(&key).await.expect("exists"), "{key} expired");
    }
    for key in thread_keys(&kept) {
        assert!(store.exists(&key).await.expect("exists"), "{key} renewed");
    }
    let err = talk.ask(ask(Some(&old), "hello?")).await.expect_err("gone");
    assert!(matches!(err, AgentError::NotFound { .. }), "{err:?}");
    // The expired thread left both indexes at the last write.
    let page = talk.list_threads("acme", None, 0, 10).await.expect("list");
    assert_eq!(listed(page), std::slice::from_ref(&kept));
    for index in ["thread-index:acme", "thread-index:acme:user:alice"] {
        assert_eq!(store.zcard(index).await.expect("zcard"), 1, "{index}");
    }
    // Deleting a thread takes it out of the indexes at once.
    talk.delete("acme", &kept).await.expect("delete");
    for index in ["thread-index:acme", "thread-index:acme:user:alice"] {
        assert_eq!(store.zcard(index).await.expect("zcard"), 0, "{index}");
    }
    rig.stop().await;
}

#[actix::test]
async fn memory_threads_expire_after_their_retention_unless_used() {
    check_retention(Arc::new(MemoryStore::new())).await;
}

#[actix::test]
async fn redis_threads_expire_after_their_retention_unless_used() {
    check_retention(redis::store(&unique_prefix("retention")).await).await;
}

#[actix::test]
async fn threads_list_by_last_activity_in_pages() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rig = start(store).await;
    let mut threads = Vec::new();
    for i in 0..5 {
        threads.push(
            rig.talk
                .ask(ask(None, &format!("t{i}")))
                .await
                .expect("turn")
                .thread,
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Thread 1 becomes the most recently active.
    rig.talk
        .ask(ask(Some(&threads[1]), "again"))
        .await
        .expect("turn");
    let mut seen = Vec::new();
    let mut cursor = Some(0);
    while let Some(at) = cursor {
        let page = rig
            .talk
            .list_threads("acme", None, at, 2)
            .await
            .expect("list");
        assert!(page.threads.len() <= 2);
        seen.extend(page.threads.into_iter().map(|t| t.id));
        cursor = page.next;
    }
    let expected: Vec<String> = [1, 4, 3, 2, 0]
        .iter()
        .map(|&i| threads[i].clone())
        .collect();
    assert_eq!(seen, expected);
    rig.stop().await;
}
