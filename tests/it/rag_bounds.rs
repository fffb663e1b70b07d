//! RAG's bounds on a real redis-server: the in-process index cache holds the most recently
//! searched namespaces within `[rag] index_cache` and reloads the others from the store;
//! thread memory's keys expire with the thread retention, renewed by each recall; a deleted
//! or expired thread's memory is removed while the user's other threads keep theirs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_agents::memory::Memory;
use troupe_agents::rag::{Caller, EntryRecord, LocalEmbedder, NewDocument, Rag, SearchRequest};
use troupe_agents::{Ask, ChatMessage, NewThread, Role, ThreadId, ThreadMessage, ThreadStore};
use troupe_config::{MemorySettings, RagSettings};
use troupe_runtime::store::Store;

use crate::support::agents::Rig;
use crate::support::llm::{self, mock_config};
use crate::support::redis::{self, unique_prefix};

const GROUP: &str = "acme";
const USER: &str = "ann";

fn rag_with(store: Arc<dyn Store>, index_cache: usize) -> Rag {
    let config = troupe_config::load_str("", "troupe.toml", &[]).expect("defaults");
    let settings = RagSettings {
        index_cache,
        ..config.rag
    };
    let embedder = Arc::new(LocalEmbedder::new(settings.dimensions));
    Rag::new(store, settings, embedder)
}

fn caller() -> Caller {
    Caller::new(GROUP, USER, "test")
}

async fn hit_keys(rag: &Rag, namespace: &str, query: &str) -> Vec<String> {
    let mut request = SearchRequest::text(query);
    request.namespace = Some(namespace.to_owned());
    rag.search(&caller(), request)
        .await
        .unwrap_or_else(|err| panic!("search {namespace}: {err}"))
        .into_iter()
        .map(|h| h.key)
        .collect()
}

fn cached(rag: &Rag) -> Vec<String> {
    rag.index_cache()
        .namespaces
        .into_iter()
        .map(|(_, namespace)| namespace)
        .collect()
}

// ---- the in-process index cache ----------------------------------------------------------

#[tokio::test]
async fn the_index_cache_keeps_the_most_recently_searched_namespaces_within_its_budget() {
    let store = redis::store(&unique_prefix("rag-cache")).await;
    let writer = rag_with(store.clone(), 1 << 30);
    // Five namespaces of the same shape, each with its own word.
    let words = ["alpha", "bravo", "delta", "gamma", "omega"];
    for (i, word) in words.iter().enumerate() {
        let doc = NewDocument {
            namespace: Some(format!("ns{i}")),
            key: format!("doc{i}"),
            content: format!("The {word} manual explains how the {word} pump is serviced."),
            ..NewDocument::default()
        };
        writer.add(&caller(), doc).await.expect("add");
    }
    // What one of them weighs, then a budget with room for two.
    let probe = rag_with(store.clone(), 1 << 30);
    assert_eq!(hit_keys(&probe, "ns0", "alpha pump").await, vec!["doc0"]);
    let one = probe.index_cache().bytes;
    assert!(one > 0, "a loaded namespace weighs something");
    let budget = one * 5 / 2;
    let rag = rag_with(store.clone(), budget);
    for (i, word) in words.iter().enumerate() {
        let namespace = format!("ns{i}");
        assert_eq!(
            hit_keys(&rag, &namespace, &format!("{word} pump")).await,
            vec![format!("doc{i}")]
        );
        let stats = rag.index_cache();
        assert!(stats.bytes <= budget, "{stats:?} over {budget}");
        assert_eq!(stats.namespaces[0].1, namespace, "{stats:?}");
    }
    assert_eq!(cached(&rag), vec!["ns4", "ns3"]);
    // ns3 used again: ns4 is now the least recently used and gives way to ns0, which is
    // loaded again from the store and answers as before.
    assert_eq!(hit_keys(&rag, "ns3", "gamma").await, vec!["doc3"]);
    assert_eq!(hit_keys(&rag, "ns0", "alpha").await, vec!["doc0"]);
    assert_eq!(cached(&rag), vec!["ns0", "ns3"]);
    // An evicted namespace changed meanwhile is read at its current version.
    let doc = NewDocument {
        namespace: Some("ns4".to_owned()),
        key: "doc4b".to_owned(),
        content: "The omega valve is replaced every spring.".to_owned(),
        ..NewDocument::default()
    };
    writer.add(&caller(), doc).await.expect("add");
    assert_eq!(hit_keys(&rag, "ns4", "omega valve").await[0], "doc4b");
    assert!(rag.index_cache().bytes <= budget);
}

// ---- thread memory -------------------------------------------------------------------------

fn memory_settings() -> MemorySettings {
    MemorySettings {
        limit: 3,
        range: 0,
        other_threads: true,
        min_score: 0.0,
    }
}

/// A thread of `USER` with `texts` as its user messages, written the way the thread store
/// lays them out.
async fn thread_with(store: &Arc<dyn Store>, id: &str, texts: &[&str]) -> ThreadId {
    let threads = ThreadStore::new(store.clone(), Duration::from_secs(3600));
    threads
        .create(NewThread {
            group: GROUP.to_owned(),
            user: USER.to_owned(),
            id: Some(id.to_owned()),
            title: String::new(),
            metadata: serde_json::Value::Null,
        })
        .await
        .expect("create thread");
    let messages: Vec<Vec<u8>> = texts
        .iter()
        .enumerate()
        .map(|(seq, text)| {
            let message = ThreadMessage {
                seq: seq as u64,
                at_ms: 0,
                agent: None,
                message: ChatMessage::new(Role::User, *text),
            };
            serde_json::to_vec(&message).expect("json")
        })
        .collect();
    let values: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    store
        .push(&format!("thread:{GROUP}:{id}:messages"), &values)
        .await
        .expect("push");
    ThreadId::new(GROUP, id).expect("thread id")
}

async fn recall(
    memory: &Memory,
    store: &Arc<dyn Store>,
    thread: &ThreadId,
    query: &str,
) -> Vec<String> {
    let total = store
        .len(&format!("thread:{GROUP}:{}:messages", thread.thread()))
        .await
        .expect("len");
    memory
        .recall(thread, USER, query, total, &memory_settings())
        .await
        .expect("recall")
        .into_iter()
        .map(|r| r.content)
        .collect()
}

fn ns_key(suffix: &str) -> String {
    format!("rag:{GROUP}:{}:{suffix}", Memory::namespace(USER))
}

/// The memory entries of `USER` by key.
async fn memory_entries(store: &Arc<dyn Store>) -> BTreeMap<String, EntryRecord> {
    store
        .hgetall(&ns_key("entries"))
        .await
        .expect("hgetall")
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key, serde_json::from_slice(&value).expect("entry")))
        .collect()
}

fn threads_of(entries: &BTreeMap<String, EntryRecord>) -> Vec<String> {
    let mut threads: Vec<String> = entries
        .keys()
        .filter_map(|k| k.split_once('/').map(|(t, _)| t.to_owned()))
        .collect();
    threads.dedup();
    threads
}

#[tokio::test]
async fn memory_keys_expire_with_the_thread_retention_renewed_by_each_recall() {
    let store = redis::store(&unique_prefix("rag-mem-ttl")).await;
    let retention = Duration::from_secs(600);
    let rag = rag_with(store.clone(), 1 << 30);
    let memory = Memory::new(rag.clone(), retention);
    let thread = thread_with(
        &store,
        "t-ttl",
        &["My dog is called Biscuit.", "What is the weather like?"],
    )
    .await;
    let recalled = recall(&memory, &store, &thread, "what is my dog called").await;
    assert!(
        recalled.iter().any(|c| c.contains("Biscuit")),
        "{recalled:?}"
    );
    let entries = memory_entries(&store).await;
    assert_eq!(entries.len(), 2);
    let mut keys: Vec<String> = ["entries", "state", "dim", "threads", "cursor:t-ttl"]
        .iter()
        .map(|s| ns_key(s))
        .collect();
    keys.extend(
        entries
            .values()
            .map(|e| ns_key(&format!("chunks:{}", e.version))),
    );
    for key in &keys {
        let ttl = store.ttl(key).await.expect("ttl");
        assert!(
            ttl.is_some_and(|t| t > Duration::ZERO && t <= retention),
            "{key}: {ttl:?}"
        );
    }
    // Each recall renews them: shortened here, they are back near the retention after it.
    for key in &keys {
        assert!(
            store
                .expire(key, Duration::from_secs(5))
                .await
                .expect("expire"),
            "{key}"
        );
    }
    recall(&memory, &store, &thread, "weather").await;
    for key in &keys {
        let ttl = store.ttl(key).await.expect("ttl");
        assert!(
            ttl.is_some_and(|t| t > Duration::from_secs(60) && t <= retention),
            "{key}: {ttl:?}"
        );
    }
    // Memory namespaces are not listed; a public namespace is operator data and keeps no TTL.
    let listed = store
        .hgetall(&format!("rag:{GROUP}:namespaces"))
        .await
        .expect("hgetall");
    assert!(
        listed.iter().all(|(name, _)| !name.starts_with('_')),
        "{listed:?}"
    );
    let doc = NewDocument {
        key: "manual".to_owned(),
        content: "Restart the router.".to_owned(),
        ..NewDocument::default()
    };
    rag.add(&caller(), doc).await.expect("add");
    for suffix in ["entries", "state", "dim"] {
        let key = format!("rag:{GROUP}:default:{suffix}");
        assert_eq!(store.ttl(&key).await.expect("ttl"), None, "{key}");
    }
}

#[tokio::test]
async fn an_expired_threads_memory_is_removed_and_the_other_threads_stays() {
    let store = redis::store(&unique_prefix("rag-mem-expiry")).await;
    let retention = Duration::from_secs(2);
    let memory = Memory::new(rag_with(store.clone(), 1 << 30), retention);
    let old = thread_with(&store, "t-old", &["My dog is called Biscuit."]).await;
    let live = thread_with(&store, "t-live", &["My cat is called Whiskers."]).await;
    recall(&memory, &store, &old, "dog").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let both = recall(&memory, &store, &live, "called").await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(
        threads_of(&memory_entries(&store).await),
        vec!["t-live", "t-old"]
    );
    let old_chunks: Vec<String> = memory_entries(&store)
        .await
        .into_iter()
        .filter(|(key, _)| key.starts_with("t-old/"))
        .map(|(_, e)| ns_key(&format!("chunks:{}", e.version)))
        .collect();
    // Past the retention of the old thread's last recall, not of the live one's.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let recalled = recall(&memory, &store, &live, "who is called what").await;
    assert_eq!(recalled, vec!["My cat is called Whiskers."]);
    assert_eq!(threads_of(&memory_entries(&store).await), vec!["t-live"]);
    for key in old_chunks.iter().chain([&ns_key("cursor:t-old")]) {
        assert!(!store.exists(key).await.expect("exists"), "{key}");
    }
    let members = store
        .zrevrange(&ns_key("threads"), 0, 100)
        .await
        .expect("zrevrange");
    assert_eq!(members, vec![b"t-live".to_vec()]);
}

#[actix::test]
async fn deleting_a_thread_deletes_its_memory_and_keeps_the_users_other_threads() {
    let mock = llm::start(mock_config("")).await;
    let config = format!(
        r#"
[models.m]
provider = "openai"
base_url = "{}"
model = "mock-model"
max_retries = 0

[agents.helper]
model = "m"

[agents.helper.memory]
other_threads = true
"#,
        mock.base_url()
    );
    let store = redis::store(&unique_prefix("rag-mem-delete")).await;
    let mut rig = Rig::start(&config, store.clone()).await;
    let rag = rag_with(store.clone(), 1 << 30);
    rig.talk = rig.talk.clone().with_rag(rag.clone());
    let ask = |input: &str| Ask {
        group: GROUP.to_owned(),
        user: USER.to_owned(),
        agent: "helper".to_owned(),
        input: input.to_owned(),
        ..Ask::default()
    };
    let gone = rig
        .talk
        .ask(ask("My dog is called Biscuit."))
        .await
        .expect("turn")
        .thread;
    let kept = rig
        .talk
        .ask(ask("My cat is called Whiskers."))
        .await
        .expect("turn")
        .thread;
    let entries = memory_entries(&store).await;
    let mut expected = vec![gone.clone(), kept.clone()];
    expected.sort();
    assert_eq!(threads_of(&entries), expected);
    let gone_chunks: Vec<String> = entries
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{gone}/")))
        .map(|(_, e)| ns_key(&format!("chunks:{}", e.version)))
        .collect();
    assert!(!gone_chunks.is_empty());

    rig.talk.delete(GROUP, &gone).await.expect("delete");
    assert_eq!(
        threads_of(&memory_entries(&store).await),
        vec![kept.clone()]
    );
    for key in gone_chunks
        .iter()
        .chain([&ns_key(&format!("cursor:{gone}"))])
    {
        assert!(!store.exists(key).await.expect("exists"), "{key}");
    }
    let members = store
        .zrevrange(&ns_key("threads"), 0, 100)
        .await
        .expect("zrevrange");
    assert_eq!(members, vec![kept.as_bytes().to_vec()]);
    // The other thread's memory is still recalled.
    let memory = Memory::new(rag, Duration::from_secs(3600));
    let kept_id = ThreadId::new(GROUP, &kept).expect("thread id");
    let recalled = recall(&memory, &store, &kept_id, "which pet is called Whiskers").await;
    assert!(
        recalled.iter().any(|c| c.contains("Whiskers")),
        "{recalled:?}"
    );
    assert!(
        recalled.iter().all(|c| !c.contains("Biscuit")),
        "{recalled:?}"
    );
    rig.stop().await;
}
