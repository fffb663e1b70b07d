//! The persisted form of threads: store keys, metadata, per-group and per-user indexes, and
//! ownership. Everything here is scoped by group: a thread is owned by exactly one group
//! (`thread-owner:{thread}`), and asking for it as another group is [`AgentError::Forbidden`].
//!
//! Layout (the backend adds its prefix):
//! - `thread-owner:{thread}`: the owning group (set once, with `SET NX`).
//! - `thread:{group}:{thread}:meta`: JSON [`ThreadInfo`].
//! - `thread:{group}:{thread}:messages`: list of JSON [`ThreadMessage`]s, in order.
//! - `thread:{group}:{thread}:approval`: the pending approval of a paused turn, if any.
//! - `thread-index:{group}` and `thread-index:{group}:user:{user}`: sorted sets of thread ids
//!   by last activity (ms since the epoch).
//! - `thread:{group}:{thread}:once`: a one-shot thread (a workflow call's, its id starting
//!   with [`ONE_SHOT_PREFIX`]) written whole in one value, JSON [`OnceThread`]: its metadata
//!   and its messages. It has no owner key (its id, made from a run id of its group, is its
//!   group's alone; ordinary threads cannot take the prefix) and no listing, and it is
//!   read-only. A one-shot turn paused for an approval is written as an ordinary thread
//!   instead, which the approval then continues.
//!
//! Retention: every key of a thread expires after the store's retention, and every change
//! of the thread (its creation, each batch of messages) starts the period again; the index
//! entries carry the same time as their score and are dropped once it is past, so a thread
//! no one touched for the retention period is gone whole.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{Store, Write};

use crate::error::AgentError;
use crate::message::ChatMessage;

/// Identifies a thread: its owning group and its id (unique across groups).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadId {
    group: KeyName,
    thread: KeyName,
}

use troupe_runtime::key_name::{check_key_name as check_name, join, KeyName};

impl ThreadId {
    /// A thread id; both parts must be non-empty and free of `:` and whitespace.
    pub fn new(group: &str, thread: &str) -> Result<Self, AgentError> {
        Ok(ThreadId {
            group: KeyName::new("group", group)?,
            thread: KeyName::new("thread id", thread)?,
        })
    }

    /// A new, unique thread id in `group`: time-ordered hex plus randomness.
    pub fn generate(group: &str) -> Result<Self, AgentError> {
        let id = format!("t{:011x}{:08x}", now_ms(), rand::random::<u32>());
        ThreadId::new(group, &id)
    }

    /// The tenant group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The thread id.
    pub fn thread(&self) -> &str {
        &self.thread
    }

    pub(crate) fn messages_key(&self) -> String {
        join(&["thread:", &self.group, ":", &self.thread, ":messages"])
    }

    pub(crate) fn meta_key(&self) -> String {
        join(&["thread:", &self.group, ":", &self.thread, ":meta"])
    }

    pub(crate) fn approval_key(&self) -> String {
        join(&["thread:", &self.group, ":", &self.thread, ":approval"])
    }

    /// The turn lease: held by the one change of the thread in progress on any daemon.
    pub(crate) fn lease_key(&self) -> String {
        format!("thread:{}:{}:lease", self.group, self.thread)
    }

    pub(crate) fn owner_key(&self) -> String {
        owner_key(&self.thread)
    }

    /// The one-shot form of the thread (see the module documentation).
    pub(crate) fn once_key(&self) -> String {
        join(&["thread:", &self.group, ":", &self.thread, ":once"])
    }

    /// Whether the id is a one-shot thread's ([`ONE_SHOT_PREFIX`]).
    pub fn is_one_shot(&self) -> bool {
        self.thread.starts_with(ONE_SHOT_PREFIX)
    }

    /// The stream that carries the live deltas of the turn started by message `seq`.
    pub fn delta_stream(&self, seq: u64) -> String {
        format!("deltas:{}:{}:{}", self.group, self.thread, seq)
    }

    /// The key naming the delta stream of the turn in progress, if any.
    pub fn live_key(&self) -> String {
        join(&["thread:", &self.group, ":", &self.thread, ":live"])
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.thread)
    }
}

/// The longest a later write skips renewing keys an earlier write renewed for `retention`: a
/// minute, or a hundredth of the retention if that is less. A thread (or a workflow call's
/// thread, by its run's end) expires its retention after its last change, give or take this.
pub fn retouch_within(retention: Duration) -> Duration {
    Duration::from_secs(60).min(retention / 100)
}

/// The prefix of one-shot thread ids (a workflow call's: `wf-{run}…`), which ordinary threads
/// cannot take.
pub const ONE_SHOT_PREFIX: &str = "wf-";

/// A one-shot thread, stored whole (`thread:{group}:{thread}:once`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnceThread {
    /// Its metadata.
    pub info: ThreadInfo,
    /// Its messages, in order.
    pub messages: Vec<ThreadMessage>,
}

fn owner_key(thread: &str) -> String {
    format!("thread-owner:{thread}")
}

fn group_index(group: &str) -> String {
    format!("thread-index:{group}")
}

fn user_index(group: &str, user: &str) -> String {
    format!("thread-index:{group}:user:{user}")
}

/// The writes that mark thread `id` (created by `user`) as used now: its keys' expiry
/// renewed, its index entries moved to now, entries past `retention` dropped. Sent after the
/// writes that create the keys, in the same batch.
fn touch(id: &ThreadId, user: &str, retention: Duration) -> Vec<Write> {
    let mut writes = renewal(id, retention);
    writes.extend(listing(id, user, retention));
    writes
}

/// The writes that renew the expiry of thread `id`'s metadata, messages and owner key.
fn renewal(id: &ThreadId, retention: Duration) -> Vec<Write> {
    [id.meta_key(), id.messages_key(), id.owner_key()]
        .into_iter()
        .map(|key| Write::Expire {
            key,
            ttl: retention,
        })
        .collect()
}

/// The writes that list thread `id` (created by `user`) as active now in its group's and its
/// creator's thread index, entries past `retention` dropped: [`touch`] without renewing the
/// thread's own keys (a creation writes them with their expiry).
fn listing(id: &ThreadId, user: &str, retention: Duration) -> Vec<Write> {
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let horizon = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut writes = Vec::with_capacity(6);
    for index in [group_index(id.group()), user_index(id.group(), user)] {
        writes.push(Write::ZAdd {
            key: index.clone(),
            member: id.thread().as_bytes().to_vec(),
            score: now,
        });
        writes.push(Write::Prune {
            key: index.clone(),
            below: horizon,
        });
        // Every listing renews the index: one a second is enough.
        writes.push(Write::Renew {
            key: index,
            ttl: retention,
        });
    }
    writes
}

/// The write that makes one-shot thread `id` expire after `ttl` (a workflow call's thread
/// ends with its run). A one-shot turn that paused for an approval made an ordinary thread,
/// which keeps the thread retention.
pub fn expiring(id: &ThreadId, ttl: Duration) -> Write {
    Write::Expire {
        key: id.once_key(),
        ttl,
    }
}

pub(crate) use troupe_runtime::clock::now_ms;

/// A thread's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// The thread id.
    pub id: String,
    /// The owning group.
    pub group: String,
    /// The user who created it.
    pub user: String,
    /// A title (by default the start of the first message).
    pub title: String,
    /// Free-form metadata from the creator.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Archived threads are readable but take no new messages.
    #[serde(default)]
    pub archived: bool,
}

/// A persisted message: its position in the thread, when it was written, and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadMessage {
    /// Position in the thread, from 0: the message's id within it.
    pub seq: u64,
    /// Write time, ms since the epoch.
    pub at_ms: u64,
    /// The agent that wrote it (assistant and tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The message.
    #[serde(flatten)]
    pub message: ChatMessage,
}

/// A page of threads, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadPage {
    /// The threads on this page.
    pub threads: Vec<ThreadInfo>,
    /// Cursor of the next page, if there is one.
    pub next: Option<u64>,
}

/// What to create a thread with.
#[derive(Debug, Clone, Default)]
pub struct NewThread {
    /// The owning group.
    pub group: String,
    /// The creating user.
    pub user: String,
    /// An explicit id (else one is generated).
    pub id: Option<String>,
    /// A title.
    pub title: String,
    /// Metadata.
    pub metadata: serde_json::Value,
}

/// A new thread's metadata and the writes that create it: metadata and indexes.
/// Thread `id`'s metadata and its writes: the metadata (with its expiry; the owner key has
/// its own from the claim, the messages key none yet), and its listing if `listed` (else the
/// batch's first messages are followed by a [`touch`], which lists it).
fn creation(
    id: &ThreadId,
    new: NewThread,
    retention: Duration,
    listed: bool,
) -> Result<(ThreadInfo, Vec<Write>), AgentError> {
    let info = ThreadInfo {
        id: id.thread().to_owned(),
        group: new.group.clone(),
        user: new.user.clone(),
        title: new.title,
        metadata: new.metadata,
        created_ms: now_ms(),
        archived: false,
    };
    let mut writes = vec![Write::Set {
        key: id.meta_key(),
        value: encode(&info)?,
        ttl: Some(retention),
    }];
    if listed {
        writes.extend(listing(id, &new.user, retention));
    }
    Ok((info, writes))
}

/// Thread persistence over a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct ThreadStore {
    store: Arc<dyn Store>,
    retention: Duration,
}

impl ThreadStore {
    /// Thread persistence over `store`; threads untouched for `retention` expire
    /// (`[daemon] thread_retention`).
    pub fn new(store: Arc<dyn Store>, retention: Duration) -> Self {
        ThreadStore { store, retention }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How long an untouched thread lasts.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The writes that mark thread `id`, created by `user`, as used now (see the module
    /// documentation), to send after the writes of a change.
    pub(crate) fn touch(&self, id: &ThreadId, user: &str) -> Vec<Write> {
        touch(id, user, self.retention)
    }

    /// [`touch`](Self::touch) for a batch right after thread `id`'s creation (its metadata
    /// and owner key written with their expiry, its listing done): the messages' expiry.
    pub(crate) fn touch_created(&self, id: &ThreadId) -> Vec<Write> {
        vec![Write::Expire {
            key: id.messages_key(),
            ttl: self.retention,
        }]
    }

    /// The writes that create thread `id` (a new id no one else knows: no claim) with `new`:
    /// its owner key and metadata with their expiry, and its listing. The batch that sends
    /// them writes its first messages after, then [`touch_created`](Self::touch_created).
    pub(crate) fn fresh_creation(
        &self,
        id: &ThreadId,
        new: NewThread,
    ) -> Result<(ThreadInfo, Vec<Write>), AgentError> {
        let mut writes = vec![Write::Set {
            key: id.owner_key(),
            value: id.group().as_bytes().to_vec(),
            ttl: Some(self.retention),
        }];
        let (info, creation) = creation(id, new, self.retention, true)?;
        writes.extend(creation);
        Ok((info, writes))
    }

    /// [`touch`](Self::touch) without the listing: for a thread no thread list holds.
    pub(crate) fn renew(&self, id: &ThreadId) -> Vec<Write> {
        renewal(id, self.retention)
    }

    /// Creates a thread. An explicit id already taken (by any group) is
    /// [`AgentError::Conflict`].
    pub async fn create(&self, new: NewThread) -> Result<ThreadInfo, AgentError> {
        self.create_with(new, |_| Vec::new()).await
    }

    /// Like [`create`](Self::create), with `also(info)` written in the same batch as the
    /// thread's metadata (e.g. its creation event).
    pub async fn create_with(
        &self,
        new: NewThread,
        also: impl FnOnce(&ThreadInfo) -> Vec<Write>,
    ) -> Result<ThreadInfo, AgentError> {
        if new
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with(ONE_SHOT_PREFIX))
        {
            return Err(AgentError::Invalid {
                what: "thread id",
                message: format!("ids starting with {ONE_SHOT_PREFIX:?} are workflow calls'"),
            });
        }
        let (id, existing) = self.claim(&new).await?;
        if existing {
            return Err(AgentError::Conflict {
                what: "thread",
                id: id.thread().to_owned(),
            });
        }
        let (info, mut writes) = creation(&id, new, self.retention, true)?;
        writes.extend(also(&info));
        self.store.apply(writes).await?;
        Ok(info)
    }

    /// Thread `new.id` as an ordinary, unlisted thread for a one-shot turn paused for an
    /// approval, created or continued: its id, the position of its next message, and the
    /// writes that create it (metadata, `also(info)`) to send in the batch of its messages —
    /// none when the thread exists already (an earlier attempt of the same call paused too:
    /// the new turn follows its messages).
    pub(crate) async fn prepare_one_shot(
        &self,
        new: NewThread,
        also: impl FnOnce(&ThreadInfo) -> Vec<Write>,
    ) -> Result<(ThreadId, u64, Vec<Write>), AgentError> {
        let (id, existing) = self.claim(&new).await?;
        if existing {
            let next = self.store.len(&id.messages_key()).await?;
            return Ok((id, next, Vec::new()));
        }
        // The batch that writes these writes the first messages and touches the thread after.
        let (info, mut writes) = creation(&id, new, self.retention, false)?;
        writes.extend(also(&info));
        Ok((id, 0, writes))
    }

    /// Claims the id of `new` for its group: `(id, true)` if the group has a thread of that id
    /// already, `(id, false)` if it is to be created (the id is now the group's: a creation
    /// that died between the claim and its metadata is finished by the next one), and
    /// [`AgentError::Conflict`] if another group owns it.
    async fn claim(&self, new: &NewThread) -> Result<(ThreadId, bool), AgentError> {
        check_name("user", &new.user)?;
        let id = match &new.id {
            Some(id) => ThreadId::new(&new.group, id)?,
            None => ThreadId::generate(&new.group)?,
        };
        let claimed = self
            .store
            .set_nx(&id.owner_key(), id.group().as_bytes(), Some(self.retention))
            .await?;
        if claimed {
            return Ok((id, false));
        }
        if self.store.get(&id.owner_key()).await?.as_deref() != Some(id.group().as_bytes()) {
            return Err(AgentError::Conflict {
                what: "thread",
                id: id.thread().to_owned(),
            });
        }
        if self.store.exists(&id.meta_key()).await? {
            return Ok((id, true));
        }
        tracing::warn!(group = %id.group(), thread = %id.thread(), "finishing an interrupted thread creation");
        Ok((id, false))
    }

    /// Resolves `thread` for `group`: [`AgentError::NotFound`] if it does not exist,
    /// [`AgentError::Forbidden`] if another group owns it.
    pub async fn resolve(&self, group: &str, thread: &str) -> Result<ThreadId, AgentError> {
        check_name("group", group)?;
        check_name("thread id", thread)?;
        match self.store.get(&owner_key(thread)).await? {
            None if thread.starts_with(ONE_SHOT_PREFIX) => {
                let id = ThreadId::new(group, thread)?;
                match self.store.exists(&id.once_key()).await? {
                    true => Ok(id),
                    false => Err(AgentError::NotFound {
                        what: "thread",
                        id: thread.to_owned(),
                    }),
                }
            }
            None => Err(AgentError::NotFound {
                what: "thread",
                id: thread.to_owned(),
            }),
            Some(owner) if owner == group.as_bytes() => ThreadId::new(group, thread),
            Some(_) => Err(AgentError::Forbidden {
                group: group.to_owned(),
                what: "thread",
                id: thread.to_owned(),
            }),
        }
    }

    /// The thread's metadata.
    pub async fn info(&self, id: &ThreadId) -> Result<ThreadInfo, AgentError> {
        let key = id.meta_key();
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes),
            None => match self.once(id).await? {
                Some(once) => Ok(once.info),
                None => Err(AgentError::NotFound {
                    what: "thread",
                    id: id.thread().to_owned(),
                }),
            },
        }
    }

    /// One-shot thread `id`, if it is stored in that form.
    pub async fn once(&self, id: &ThreadId) -> Result<Option<OnceThread>, AgentError> {
        if !id.is_one_shot() {
            return Ok(None);
        }
        let key = id.once_key();
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The write that stores one-shot thread `id` whole: made by `new`, holding `messages`,
    /// expiring after `retention` (`None`: the threads' retention). It replaces what an
    /// earlier attempt of the same call wrote.
    pub(crate) fn once_write(
        &self,
        id: &ThreadId,
        new: NewThread,
        messages: Vec<ThreadMessage>,
        retention: Option<Duration>,
    ) -> Result<Write, AgentError> {
        let once = OnceThread {
            info: ThreadInfo {
                id: id.thread().to_owned(),
                group: new.group,
                user: new.user,
                title: new.title,
                metadata: new.metadata,
                created_ms: messages.first().map_or_else(now_ms, |m| m.at_ms),
                archived: false,
            },
            messages,
        };
        Ok(Write::Set {
            key: id.once_key(),
            value: encode(&once)?,
            ttl: Some(retention.unwrap_or(self.retention)),
        })
    }

    /// Replaces the thread's metadata (a change: the thread is touched).
    pub async fn save_info(&self, id: &ThreadId, info: &ThreadInfo) -> Result<(), AgentError> {
        let mut writes = vec![Write::Set {
            key: id.meta_key(),
            value: encode(info)?,
            ttl: Some(self.retention),
        }];
        writes.extend(self.touch(id, &info.user));
        Ok(self.store.apply(writes).await?)
    }

    /// Deletes the thread: its metadata, messages, approval, ownership and index entries
    /// (`user`: its creator, whose index holds it).
    pub async fn delete(&self, id: &ThreadId, user: Option<&str>) -> Result<(), AgentError> {
        let mut writes: Vec<Write> = [
            id.meta_key(),
            id.messages_key(),
            id.approval_key(),
            id.owner_key(),
            id.live_key(),
            id.once_key(),
        ]
        .into_iter()
        .map(|key| Write::Del { key })
        .collect();
        let member = id.thread().as_bytes().to_vec();
        writes.push(Write::ZRem {
            key: group_index(id.group()),
            member: member.clone(),
        });
        if let Some(user) = user {
            writes.push(Write::ZRem {
                key: user_index(id.group(), user),
                member,
            });
        }
        Ok(self.store.apply(writes).await?)
    }

    /// Threads of `group` (of one user if given), the most recently active first, `limit` per
    /// page from `cursor` (0 for the first page).
    pub async fn list(
        &self,
        group: &str,
        user: Option<&str>,
        cursor: u64,
        limit: usize,
    ) -> Result<ThreadPage, AgentError> {
        check_name("group", group)?;
        let index = match user {
            Some(user) => {
                check_name("user", user)?;
                user_index(group, user)
            }
            None => group_index(group),
        };
        let limit = limit.clamp(1, 1000) as u64;
        // One more than a page: whether there is a next one.
        let mut ids = self
            .store
            .zrevrange(&index, cursor, cursor.saturating_add(limit))
            .await?;
        let more = ids.len() as u64 > limit;
        ids.truncate(limit as usize);
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("thread:{group}:{}:meta", String::from_utf8_lossy(id)))
            .collect();
        if keys.is_empty() {
            return Ok(ThreadPage {
                threads: Vec::new(),
                next: None,
            });
        }
        let metas = self.store.get_many(&keys).await?;
        let mut threads = Vec::with_capacity(metas.len());
        for (key, meta) in keys.iter().zip(metas) {
            if let Some(bytes) = meta {
                threads.push(decode(key, &bytes)?);
            }
        }
        let next = more.then_some(cursor + limit);
        Ok(ThreadPage { threads, next })
    }

    /// Messages `from..from+limit` (oldest first) and the thread's length.
    pub async fn messages(
        &self,
        id: &ThreadId,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<ThreadMessage>, u64), AgentError> {
        let key = id.messages_key();
        let total = self.store.len(&key).await?;
        if limit == 0 || from >= total {
            return Ok((Vec::new(), total));
        }
        let stop = (from + limit as u64 - 1).min(total - 1);
        let raw = self.store.range(&key, from as i64, stop as i64).await?;
        Ok((decode_all(&key, &raw)?, total))
    }

    /// The last `n` messages, oldest first, and the thread's length.
    pub async fn recent(
        &self,
        id: &ThreadId,
        n: usize,
    ) -> Result<(Vec<ThreadMessage>, u64), AgentError> {
        let key = id.messages_key();
        let total = self.store.len(&key).await?;
        if n == 0 || total == 0 {
            return Ok((Vec::new(), total));
        }
        let raw = self.store.range(&key, -(n as i64), -1).await?;
        Ok((decode_all(&key, &raw)?, total))
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(value).map_err(|err| AgentError::Invalid {
        what: "record",
        message: err.to_string(),
    })
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|err| AgentError::Corrupt {
        key: key.to_owned(),
        message: err.to_string(),
    })
}

pub(crate) fn decode_all<T: for<'de> Deserialize<'de>>(
    key: &str,
    raw: &[Vec<u8>],
) -> Result<Vec<T>, AgentError> {
    raw.iter().map(|bytes| decode(key, bytes)).collect()
}
