//! How a pool keeps its items in the store: key layout and the atomic state transitions.
//!
//! ```text
//! pool:{name}:item:{id}      string  JSON WorkRecord; expires `retention` after the item ends
//!                                    (the TTL is set by the very transition that ends it)
//! pool:{name}:open           hash    id -> "": every item not yet finalized (loaded on start)
//! pool:{name}:runner:{id}    lease   a live pool incarnation; items Running on a runner whose
//!                                    lease is gone are retried
//! ```
//!
//! Every state change is a compare-and-set of the whole record against the bytes last seen,
//! so two daemons (or a cancel racing an attempt) cannot both move an item: exactly one wins
//! each transition, and only the winner of the transition to an end state notifies.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::work::{now_ms, WorkRecord, WorkState};
use crate::store::{Store, StoreError, Write};

/// Items read per `MGET` when loading.
const LOAD_CHUNK: usize = 256;

/// The keys of one pool.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    pub(crate) fn new(pool: &str) -> Self {
        Keys {
            base: format!("pool:{pool}:"),
        }
    }

    pub(crate) fn item(&self, id: &str) -> String {
        format!("{}item:{id}", self.base)
    }

    pub(crate) fn open(&self) -> String {
        format!("{}open", self.base)
    }

    pub(crate) fn runner(&self, runner: &str) -> String {
        format!("{}runner:{runner}", self.base)
    }
}

/// A decoded record with the exact bytes it was read as (the next CAS's expectation).
pub(crate) type Versioned = (WorkRecord, Vec<u8>);

/// The result of a compare-and-set transition.
#[derive(Debug)]
pub(crate) enum Cas {
    /// Written; these are the new bytes.
    Swapped(Vec<u8>),
    /// Someone else changed the record first; here is what it is now (`None`: gone).
    Conflict(Option<Box<Versioned>>),
}

/// Reads one record; an undecodable one is logged and reported as missing.
pub(crate) async fn read(
    store: &dyn Store,
    keys: &Keys,
    id: &str,
) -> Result<Option<Versioned>, StoreError> {
    let Some(bytes) = store.get(&keys.item(id)).await? else {
        return Ok(None);
    };
    Ok(decode(id, bytes))
}

fn decode(id: &str, bytes: Vec<u8>) -> Option<Versioned> {
    match WorkRecord::decode(&bytes) {
        Ok(record) => Some((record, bytes)),
        Err(err) => {
            tracing::error!(work = %id, error = %err, "unreadable work record; ignoring it");
            None
        }
    }
}

/// Moves the record from `expected` to `next`, whose `rev` makes its bytes this write's
/// alone: a retry of a write whose answer was lost (same `rev`) finds its own bytes and
/// reports them as swapped. A record moved to an end state expires after `retention` from
/// this very write, whatever happens to the finalization that follows.
pub(crate) async fn transition(
    store: &dyn Store,
    keys: &Keys,
    expected: &[u8],
    next: &WorkRecord,
    retention: Duration,
) -> Result<Cas, StoreError> {
    let bytes = next.encode();
    let key = keys.item(&next.id);
    let ttl = next.state.is_terminal().then_some(retention);
    if store
        .compare_and_set(&key, Some(expected), Some(&bytes), ttl)
        .await?
    {
        return Ok(Cas::Swapped(bytes));
    }
    match read(store, keys, &next.id).await? {
        Some((_, current)) if current == bytes => Ok(Cas::Swapped(bytes)),
        fresh => Ok(Cas::Conflict(fresh.map(Box::new))),
    }
}

/// Stores a new item with a fresh (generated) id and indexes it, atomically.
pub(crate) async fn insert(
    store: &dyn Store,
    keys: &Keys,
    bytes: &[u8],
    id: &str,
) -> Result<(), StoreError> {
    store
        .apply(vec![
            Write::HSet {
                key: keys.open(),
                fields: vec![(id.to_owned(), Vec::new())],
            },
            Write::Set {
                key: keys.item(id),
                value: bytes.to_vec(),
                ttl: None,
            },
        ])
        .await
}

/// Stores an item whose id the caller chose, unless one with that id exists; returns whether
/// it was stored. Indexed first, so a crash in between leaves an index entry that the next
/// load drops, never an unindexed item.
pub(crate) async fn insert_unique(
    store: &dyn Store,
    keys: &Keys,
    bytes: &[u8],
    id: &str,
) -> Result<bool, StoreError> {
    store.hset(&keys.open(), &[(id, b"")]).await?;
    store.set_nx(&keys.item(id), bytes, None).await
}

/// The follow-up record of an ended item, if it has one.
pub(crate) fn follow_up(record: &WorkRecord, max_attempts: u32) -> Option<WorkRecord> {
    let then = record.then.as_ref()?;
    let outcome = record.outcome()?;
    let now = now_ms();
    Some(WorkRecord {
        id: format!("{}:then", record.id),
        kind: then.kind.clone(),
        payload: json!({"after": record.id, "outcome": outcome, "payload": then.payload}),
        priority: record.priority,
        run_at_ms: now,
        enqueued_at_ms: now,
        attempts: 0,
        max_attempts,
        last_error: None,
        then: None,
        state: WorkState::Pending,
        rev: rand::random(),
    })
}

/// Finishes an ended item: enqueues its follow-up (once: its id is derived from the item's),
/// lets its record expire after `retention`, then drops it from the index (in that order, so
/// a failure in between leaves an indexed item the next load finalizes, never an unindexed
/// record without a TTL). Idempotent, so a load after a crash can run it again. Returns the
/// follow-up if this call stored it.
pub(crate) async fn finalize(
    store: &dyn Store,
    keys: &Keys,
    record: &WorkRecord,
    max_attempts: u32,
    retention: Duration,
) -> Result<Option<Versioned>, StoreError> {
    let mut stored = None;
    if let Some(next) = follow_up(record, max_attempts) {
        let bytes = next.encode();
        if insert_unique(store, keys, &bytes, &next.id).await? {
            stored = Some((next, bytes));
        }
    }
    store.expire(&keys.item(&record.id), retention).await?;
    store.hdel(&keys.open(), &[record.id.as_str()]).await?;
    Ok(stored)
}

/// What a load found for one indexed id.
#[derive(Debug)]
pub(crate) enum Found {
    /// A record.
    Record(Box<Versioned>),
    /// An index entry without a (readable) record: dropped from the index.
    Missing(String),
}

/// Everything in the index except `known`, in enqueue order, and which of the runners
/// named by running items are dead (their lease is gone).
pub(crate) async fn load(
    store: Arc<dyn Store>,
    keys: Keys,
    known: HashSet<String>,
    me: String,
) -> Result<(Vec<Found>, HashSet<String>), StoreError> {
    let ids: Vec<String> = store
        .hgetall(&keys.open())
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !known.contains(id))
        .collect();
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(LOAD_CHUNK) {
        let item_keys: Vec<String> = chunk.iter().map(|id| keys.item(id)).collect();
        let values = store.get_many(&item_keys).await?;
        for (id, value) in chunk.iter().zip(values) {
            match value.and_then(|bytes| decode(id, bytes)) {
                Some(versioned) => found.push(Found::Record(Box::new(versioned))),
                None => found.push(Found::Missing(id.clone())),
            }
        }
    }
    let mut runners = HashSet::new();
    for item in &found {
        if let Found::Record(versioned) = item {
            let record = &versioned.0;
            if let WorkState::Running { runner } = &record.state {
                if *runner != me {
                    runners.insert(runner.clone());
                }
            }
        }
    }
    let mut dead = HashSet::new();
    for runner in runners {
        if !store.exists(&keys.runner(&runner)).await? {
            dead.insert(runner);
        }
    }
    found.sort_by(|a, b| match (a, b) {
        (Found::Record(a), Found::Record(b)) => {
            (a.0.enqueued_at_ms, &a.0.id).cmp(&(b.0.enqueued_at_ms, &b.0.id))
        }
        (Found::Missing(_), Found::Record(_)) => std::cmp::Ordering::Less,
        (Found::Record(_), Found::Missing(_)) => std::cmp::Ordering::Greater,
        (Found::Missing(a), Found::Missing(b)) => a.cmp(b),
    });
    Ok((found, dead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn record(rev: u64, state: WorkState) -> WorkRecord {
        WorkRecord {
            id: "w".into(),
            kind: "k".into(),
            payload: serde_json::Value::Null,
            priority: 0,
            run_at_ms: 0,
            enqueued_at_ms: 0,
            attempts: 1,
            max_attempts: 3,
            last_error: None,
            then: None,
            state,
            rev,
        }
    }

    #[tokio::test]
    async fn a_retried_write_recognises_its_own_landed_write_but_not_a_rival() {
        let (store, keys) = (MemoryStore::new(), Keys::new("p"));
        let before = record(1, WorkState::Pending).encode();
        store
            .set(&keys.item("w"), &before, None)
            .await
            .expect("seed");
        let mine = record(2, WorkState::Canceled);
        // The first try landed but its answer was lost; the retry finds its own bytes.
        store
            .set(&keys.item("w"), &mine.encode(), None)
            .await
            .expect("landed");
        let retention = Duration::from_secs(60);
        let retried = transition(&store, &keys, &before, &mine, retention).await;
        assert!(matches!(retried, Ok(Cas::Swapped(bytes)) if bytes == mine.encode()));
        // A rival's identical state change (another rev) is a conflict.
        let rival = record(3, WorkState::Canceled);
        let raced = transition(&store, &keys, &before, &rival, retention).await;
        assert!(matches!(raced, Ok(Cas::Conflict(Some(current))) if current.0 == mine));
    }
}
