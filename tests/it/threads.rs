//! Thread actors on both store backends: persisted messages, passivation and re-activation
//! from the store, durability across registries (daemons), and group isolation.

use std::sync::Arc;
use std::time::Duration;

use troupe_agents::{
    AppendMessages, ChatMessage, History, ReadHistory, Role, ThreadActor, ThreadId,
};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{Life, Registry, RegistryOptions};

use crate::support::redis::{redis_url, unique_prefix};

fn threads(store: Arc<dyn Store>, window: usize) -> Registry<ThreadId, ThreadActor> {
    let options = RegistryOptions {
        passivate_after: Duration::ZERO,
        ..RegistryOptions::default()
    };
    Registry::new("threads", options, move |id: &ThreadId, life: &Life| {
        ThreadActor::new(id.clone(), store.clone(), window, life.clone())
    })
}

async fn redis_store(prefix: &str) -> Arc<dyn Store> {
    let mut options = RedisOptions::new(redis_url());
    options.prefix = prefix.to_owned();
    Arc::new(RedisStore::connect(options).await.expect("redis store"))
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new(Role::User, text)
}

fn contents(history: &History) -> Vec<&str> {
    history
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect()
}

async fn check_reactivation_and_isolation(store: Arc<dyn Store>) {
    let reg = threads(store.clone(), 2);
    let a = ThreadId::new("acme", "t1").expect("id");
    let b = ThreadId::new("globex", "t1").expect("id");
    assert_eq!(
        reg.send(&a, AppendMessages(vec![user("one"), user("two")]))
            .await
            .expect("send")
            .expect("append"),
        2
    );
    assert_eq!(
        reg.send(&a, AppendMessages(vec![user("three")]))
            .await
            .expect("send")
            .expect("append"),
        3
    );
    assert_eq!(
        reg.send(&b, AppendMessages(vec![user("other group")]))
            .await
            .expect("send")
            .expect("append"),
        1
    );

    // Passivate everything; the next read re-activates from the store.
    assert_eq!(reg.passivate_idle(), 2);
    assert_eq!(reg.stats().active, 0);
    let history = reg
        .send(&a, ReadHistory(10))
        .await
        .expect("send")
        .expect("read");
    assert_eq!(history.total, 3);
    assert_eq!(contents(&history), ["one", "two", "three"]);
    // The in-memory window is 2; older messages come from the store.
    let recent = reg
        .send(&a, ReadHistory(2))
        .await
        .expect("send")
        .expect("read");
    assert_eq!(contents(&recent), ["two", "three"]);
    assert_eq!(reg.stats().activations, 3);

    // Same thread id, other group: its own messages only.
    let other = reg
        .send(&b, ReadHistory(10))
        .await
        .expect("send")
        .expect("read");
    assert_eq!(contents(&other), ["other group"]);

    // Another registry over the same store (another daemon) sees the same thread.
    let second = threads(store, 2);
    let seen = second
        .send(&a, ReadHistory(10))
        .await
        .expect("send")
        .expect("read");
    assert_eq!(seen.total, 3);
}

#[actix::test]
async fn memory_threads_reactivate_from_the_store_and_stay_in_their_group() {
    check_reactivation_and_isolation(Arc::new(MemoryStore::new())).await;
}

#[actix::test]
async fn redis_threads_reactivate_from_the_store_and_stay_in_their_group() {
    let store = redis_store(&unique_prefix("threads")).await;
    check_reactivation_and_isolation(store).await;
}

#[actix::test]
async fn a_corrupt_thread_fails_its_activation_with_a_typed_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .push("thread:acme:broken:messages", &[b"not json".as_slice()])
        .await
        .expect("push");
    let reg = threads(store, 10);
    let id = ThreadId::new("acme", "broken").expect("id");
    let err = reg
        .send(&id, ReadHistory(1))
        .await
        .expect_err("activation must fail");
    let text = err.to_string();
    assert!(text.contains("loading thread acme/broken"), "{text}");
    assert!(
        text.contains("corrupt record at thread:acme:broken:messages"),
        "{text}"
    );
}

#[test]
fn thread_ids_reject_separators_and_empty_parts() {
    for (group, thread) in [("", "t"), ("g", ""), ("a:b", "t"), ("g", "x:y")] {
        let err = ThreadId::new(group, thread).expect_err("invalid id");
        assert!(err.to_string().contains("must not contain ':'"), "{err}");
    }
}
