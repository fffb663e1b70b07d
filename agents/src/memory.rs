//! Thread memory: before a turn, an agent with `[agents.X.memory]` recalls the earlier
//! messages of its thread (and optionally of the same user's other threads in the group)
//! most relevant to the new message, with `range` messages around each, besides the recent
//! messages it always sees.
//!
//! Messages are indexed lazily, at recall time: each thread keeps a cursor of the next
//! message to index; the messages since are added as entries (`{thread}/{seq}`, filter
//! `thread`) to the user's reserved namespace `_mem-{hash of user}` of the group.
//!
//! Bounds (`[daemon] thread_retention`, the threads' own retention): every key of a memory
//! namespace expires after the retention, renewed by each recall: the entries hash, state,
//! dimension and the thread set whenever any thread of the user is indexed, a thread's
//! cursor and chunk records whenever that thread is. The thread set
//! (`rag:{group}:{ns}:threads`) scores each thread by when it was last indexed; at each
//! recall the threads past the retention are dropped from it, and the entries and cursors of
//! threads no longer in it are deleted. Deleting a thread deletes its entries at once
//! ([`Memory::forget`]). Memory namespaces are not listed in `rag:{group}:namespaces`.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_config::{MemorySettings, SearchType};
use troupe_runtime::store::Write;

use troupe_rag::{
    content_hash, decode, expiring, Caller, EntryRecord, Keys, NewDocument, Rag, RagError,
    SearchRequest,
};

use crate::message::Role;
use crate::thread_store::{now_ms, ThreadId, ThreadMessage};

/// The filter naming an entry's thread.
const THREAD_FILTER: &str = "thread";
/// The most threads of one user read from the thread set (every one in practice).
const MAX_THREADS: u64 = i32::MAX as u64;

/// A recalled message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    /// Its thread.
    pub thread: String,
    /// Its position in the thread.
    pub seq: u64,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

/// Recall of earlier thread messages by search.
#[derive(Debug, Clone)]
pub struct Memory {
    rag: Rag,
    retention: Duration,
}

impl Memory {
    /// Memory over `rag`'s store and embedder; what it keeps of a thread expires `retention`
    /// after the thread was last indexed (`[daemon] thread_retention`).
    pub fn new(rag: Rag, retention: Duration) -> Self {
        Memory { rag, retention }
    }

    /// The reserved namespace holding `user`'s messages.
    pub fn namespace(user: &str) -> String {
        format!("_mem-{}", &content_hash(&[user.as_bytes()])[..16])
    }

    /// Indexes the messages of `thread` not indexed yet (up to `total`); returns the keys of
    /// the user's namespace.
    async fn index(&self, thread: &ThreadId, user: &str, total: u64) -> Result<Keys, RagError> {
        let store = self.rag.store().clone();
        let namespace = Self::namespace(user);
        let keys = Keys::new(thread.group(), &namespace)?;
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let horizon =
            now.saturating_sub(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        // The thread joins the set before its messages are added: a recall elsewhere never
        // sees entries of a thread missing from the set (and deletes them as expired).
        store
            .apply(vec![
                Write::ZAdd {
                    key: keys.threads(),
                    member: thread.thread().as_bytes().to_vec(),
                    score: now,
                },
                Write::ZRemBelow {
                    key: keys.threads(),
                    below: horizon,
                },
                Write::Expire {
                    key: keys.threads(),
                    ttl: self.retention,
                },
            ])
            .await?;
        let from: u64 = store
            .get(&keys.cursor(thread.thread()))
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        if from >= total {
            return Ok(keys);
        }
        if from == 0 {
            // Written by earlier versions: the namespace is no longer listed.
            store
                .hdel(&keys.group_namespaces(), &[namespace.as_str()])
                .await?;
        }
        let caller = Caller::new(thread.group(), user, "memory");
        let raw = store
            .range(&thread.messages_key(), from as i64, total as i64 - 1)
            .await?;
        for bytes in raw {
            let Ok(message) = serde_json::from_slice::<ThreadMessage>(&bytes) else {
                continue;
            };
            let content = message.message.content.trim();
            if content.is_empty() || message.message.role == Role::System {
                continue;
            }
            let doc = NewDocument {
                namespace: None,
                key: format!("{}/{}", thread.thread(), message.seq),
                title: format!("{}#{}", thread.thread(), message.seq),
                content: content.to_owned(),
                filters: [(THREAD_FILTER.to_owned(), thread.thread().to_owned())].into(),
                ..NewDocument::default()
            };
            self.rag
                .add_in(&caller, &namespace, doc, Some(self.retention))
                .await?;
        }
        Ok(keys)
    }

    /// After indexing `thread` up to `total`: moves its cursor, renews the expiry of the
    /// namespace's keys and of the thread's chunk records, and deletes the entries and
    /// cursors of threads no longer in the thread set (past the retention).
    async fn maintain(&self, keys: &Keys, thread: &ThreadId, total: u64) -> Result<(), RagError> {
        let ttl = self.retention;
        // The entries first, then the set: every entry seen belongs to a thread that joined
        // the set before the entry was written.
        let records = self.rag.records(keys).await?;
        let live: HashSet<Vec<u8>> = self
            .rag
            .store()
            .zrevrange(&keys.threads(), 0, MAX_THREADS)
            .await?
            .into_iter()
            .collect();
        let mut writes = Vec::new();
        let mut stale: Vec<&EntryRecord> = Vec::new();
        let mut gone: BTreeSet<&str> = BTreeSet::new();
        for record in &records {
            let Some(owner) = record.filters.get(THREAD_FILTER) else {
                continue;
            };
            if owner == thread.thread() {
                writes.push(Write::Expire {
                    key: keys.chunks(&record.version),
                    ttl,
                });
            } else if !live.contains(owner.as_bytes()) {
                stale.push(record);
                gone.insert(owner);
            }
        }
        for owner in &gone {
            writes.push(Write::Del {
                key: keys.cursor(owner),
            });
        }
        writes.push(Write::Set {
            key: keys.cursor(thread.thread()),
            value: total.to_string().into_bytes(),
            ttl: Some(ttl),
        });
        writes.extend(expiring(keys, ttl));
        if !gone.is_empty() {
            tracing::info!(
                group = thread.group(),
                threads = gone.len(),
                entries = stale.len(),
                "memory of expired threads deleted"
            );
        }
        self.rag.delete_records(keys, &stale, writes).await
    }

    /// Deletes what memory holds of `thread` in `user`'s namespace: its entries, their
    /// chunks, its cursor and its place in the thread set (the thread is being deleted).
    pub async fn forget(&self, thread: &ThreadId, user: &str) -> Result<(), RagError> {
        let keys = Keys::new(thread.group(), &Self::namespace(user))?;
        let entries = keys.entries();
        let mut records = Vec::new();
        for (field, value) in self.rag.store().hgetall(&entries).await? {
            if value.is_empty() {
                continue;
            }
            let record: EntryRecord = decode(&format!("{entries}/{field}"), &value)?;
            if record.filters.get(THREAD_FILTER).map(String::as_str) == Some(thread.thread()) {
                records.push(record);
            }
        }
        let also = vec![
            Write::Del {
                key: keys.cursor(thread.thread()),
            },
            Write::ZRem {
                key: keys.threads(),
                member: thread.thread().as_bytes().to_vec(),
            },
        ];
        let refs: Vec<&EntryRecord> = records.iter().collect();
        self.rag.delete_records(&keys, &refs, also).await?;
        tracing::debug!(
            group = thread.group(),
            entries = records.len(),
            "thread memory deleted"
        );
        Ok(())
    }

    /// The messages to recall for `query` in `thread`, oldest first per thread. Messages of
    /// the thread from `exclude_from` on are in the context already and are left out.
    pub async fn recall(
        &self,
        thread: &ThreadId,
        user: &str,
        query: &str,
        exclude_from: u64,
        settings: &MemorySettings,
    ) -> Result<Vec<Recalled>, RagError> {
        let store = self.rag.store().clone();
        let total = store.len(&thread.messages_key()).await?;
        let keys = self.index(thread, user, total).await?;
        self.maintain(&keys, thread, total).await?;
        let namespace = keys.namespace();
        let mut request = SearchRequest::text(query);
        request.search_type = Some(SearchType::Hybrid);
        request.top_k = Some(settings.limit * 3);
        request.importance_weight = Some(0.0);
        if !settings.other_threads {
            request
                .filters
                .insert(THREAD_FILTER.to_owned(), vec![thread.thread().to_owned()]);
        }
        let caller = Caller::new(thread.group(), user, "memory");
        let hits = self.rag.search_in(&caller, namespace, &request).await?;
        let mut picked: Vec<(String, u64)> = Vec::new();
        for hit in hits {
            if picked.len() >= settings.limit {
                break;
            }
            if hit.vector_score.unwrap_or(0.0) < settings.min_score && hit.text_score.is_none() {
                continue;
            }
            let Some((hit_thread, seq)) = hit
                .key
                .rsplit_once('/')
                .and_then(|(t, s)| s.parse::<u64>().ok().map(|s| (t.to_owned(), s)))
            else {
                continue;
            };
            if hit_thread == thread.thread() && seq >= exclude_from {
                continue;
            }
            picked.push((hit_thread, seq));
        }
        let mut wanted: Vec<(String, u64)> = Vec::new();
        for (hit_thread, seq) in picked {
            let range = settings.range as u64;
            for s in seq.saturating_sub(range)..=seq + range {
                let in_context = hit_thread == thread.thread() && s >= exclude_from;
                if !in_context && !wanted.contains(&(hit_thread.clone(), s)) {
                    wanted.push((hit_thread.clone(), s));
                }
            }
        }
        wanted.sort();
        let mut out = Vec::new();
        for (hit_thread, seq) in wanted {
            let Ok(id) = ThreadId::new(thread.group(), &hit_thread) else {
                continue;
            };
            let found = store
                .range(&id.messages_key(), seq as i64, seq as i64)
                .await?;
            let Some(message) = found
                .first()
                .and_then(|b| serde_json::from_slice::<ThreadMessage>(b).ok())
            else {
                continue;
            };
            if message.message.content.trim().is_empty() || message.message.role == Role::System {
                continue;
            }
            out.push(Recalled {
                thread: hit_thread,
                seq,
                role: message.message.role,
                content: message.message.content,
            });
        }
        Ok(out)
    }
}

/// The recalled messages as one system message's text.
pub fn format_recalled(recalled: &[Recalled], current_thread: &str) -> String {
    let mut out = String::from("Relevant earlier messages (recalled from memory):\n");
    for r in recalled {
        let role = match r.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::System => "system",
        };
        if r.thread == current_thread {
            out.push_str(&format!("- [#{} {role}] {}\n", r.seq, r.content));
        } else {
            out.push_str(&format!(
                "- [thread {} #{} {role}] {}\n",
                r.thread, r.seq, r.content
            ));
        }
    }
    out
}
