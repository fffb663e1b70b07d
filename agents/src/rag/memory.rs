//! Thread memory: before a turn, an agent with `[agents.X.memory]` recalls the earlier
//! messages of its thread (and optionally of the same user's other threads in the group)
//! most relevant to the new message, with `range` messages around each, besides the recent
//! messages it always sees.
//!
//! Messages are indexed lazily, at recall time: each thread keeps a cursor of the next
//! message to index; the messages since are added as entries (`{thread}/{seq}`, filter
//! `thread`) to the user's reserved namespace `_mem-{hash of user}` of the group.

use serde::{Deserialize, Serialize};
use troupe_config::{MemorySettings, SearchType};

use super::embed::Caller;
use super::error::RagError;
use super::search::SearchRequest;
use super::store::content_hash;
use super::{NewDocument, Rag};
use crate::message::Role;
use crate::thread_store::{ThreadId, ThreadMessage};

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
}

impl Memory {
    /// Memory over `rag`'s store and embedder.
    pub fn new(rag: Rag) -> Self {
        Memory { rag }
    }

    fn namespace(user: &str) -> String {
        format!("_mem-{}", &content_hash(&[user.as_bytes()])[..16])
    }

    /// Indexes the messages of `thread` not indexed yet (up to `total`).
    async fn index(&self, thread: &ThreadId, user: &str, total: u64) -> Result<(), RagError> {
        let store = self.rag.inner.store.clone();
        let namespace = Self::namespace(user);
        let cursor_key = format!(
            "rag:{}:{namespace}:cursor:{}",
            thread.group(),
            thread.thread()
        );
        let from: u64 = store
            .get(&cursor_key)
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        if from >= total {
            return Ok(());
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
                filters: [("thread".to_owned(), thread.thread().to_owned())].into(),
                ..NewDocument::default()
            };
            self.rag.add_in(&caller, &namespace, doc).await?;
        }
        store
            .set(&cursor_key, total.to_string().as_bytes(), None)
            .await?;
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
        let store = self.rag.inner.store.clone();
        let total = store.len(&thread.messages_key()).await?;
        self.index(thread, user, total).await?;
        let namespace = Self::namespace(user);
        let mut request = SearchRequest::text(query);
        request.search_type = Some(SearchType::Hybrid);
        request.top_k = Some(settings.limit * 3);
        request.importance_weight = Some(0.0);
        if !settings.other_threads {
            request
                .filters
                .insert("thread".to_owned(), vec![thread.thread().to_owned()]);
        }
        let caller = Caller::new(thread.group(), user, "memory");
        let hits = self.rag.search_in(&caller, &namespace, &request).await?;
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
