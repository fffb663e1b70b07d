//! [`Journal`]: the reads and writes of one run's keys — creating, reading, journaling,
//! storing outputs, finishing, closing and restarting a run — and [`open_runs`], the index
//! of unfinished runs read.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_agents::task_result::{done_key, TaskResult, RESULT_FIELD};
use troupe_agents::thread_store::{self, ThreadId};
use troupe_runtime::key_name::join;
use troupe_runtime::store::{Store, Write};

use super::entry::{Entry, OutputRef};
use super::keys::{group_key, OPEN_INDEX};
use super::record::{Reply, RunRecord};
use super::snapshot::{fnv1a, Snapshot};
use crate::error::WorkflowError;
use crate::notices::Notice;

/// Outputs longer than this many bytes are stored once under their hash, not in the journal.
pub const INLINE_MAX: usize = 2048;

/// One run's keys in the store.
#[derive(Clone)]
pub struct Journal {
    store: Arc<dyn Store>,
    group: String,
    run: String,
}

impl Journal {
    /// The keys of run `run` of `group`.
    pub fn new(store: Arc<dyn Store>, group: &str, run: &str) -> Journal {
        Journal {
            store,
            group: group.to_owned(),
            run: run.to_owned(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn key(&self, what: &str) -> String {
        join(&["wf:", &self.group, ":", &self.run, ":", what])
    }

    /// The run record's key.
    pub fn meta_key(&self) -> String {
        self.key("meta")
    }

    /// The journal list's key.
    pub fn journal_key(&self) -> String {
        self.key("journal")
    }

    /// The events hash's key.
    pub fn events_key(&self) -> String {
        self.key("events")
    }

    /// The cancel flag's key.
    pub fn cancel_key(&self) -> String {
        self.key("cancel")
    }

    fn def_key(&self) -> String {
        self.key("def")
    }

    fn out_key(&self, hash: &str) -> String {
        join(&["wf:", &self.group, ":", &self.run, ":out:", hash])
    }

    /// The writes that create a run: record, snapshot (`snapshot`, encoded), owner, index
    /// entry.
    pub fn create_writes(
        &self,
        record: &RunRecord,
        snapshot: &[u8],
    ) -> Result<Vec<Write>, WorkflowError> {
        let mut writes = vec![Write::Set {
            key: self.meta_key(),
            value: encode(record)?,
            ttl: None,
        }];
        writes.extend(self.open_writes(snapshot));
        Ok(writes)
    }

    /// Everything of a new run but its record: snapshot, owner, index entry (last written
    /// in the batch, so an indexed run is whole).
    fn open_writes(&self, snapshot: &[u8]) -> Vec<Write> {
        vec![
            Write::Set {
                key: self.def_key(),
                value: snapshot.to_vec(),
                ttl: None,
            },
            Write::Set {
                key: group_key(&self.run),
                value: self.group.as_bytes().to_vec(),
                ttl: None,
            },
            Write::HSet {
                key: OPEN_INDEX.to_owned(),
                fields: vec![(self.run.clone(), self.group.as_bytes().to_vec())],
            },
        ]
    }

    /// Creates the run `record` unless a run with its id exists (the record is the
    /// `SET NX` that decides), writing `extra` in the batch that opens it. A run found
    /// unfinished is opened again (snapshot and owner written only if missing, index entry,
    /// `extra`): a creation cut short by a crash or a failed write is completed, never
    /// repeated. A finished run is returned as it is, and `extra` is not written.
    ///
    /// The record is created expiring after `retention` and made permanent by the batch that
    /// opens the run: a record whose creation was cut short and never completed (its task
    /// expired before a redelivery) is gone after the retention period, like an ended run.
    pub async fn create_once(
        &self,
        record: &RunRecord,
        snapshot: &[u8],
        extra: Vec<Write>,
        retention: Duration,
    ) -> Result<Created, WorkflowError> {
        if self
            .store
            .set_nx(&self.meta_key(), &encode(record)?, Some(retention))
            .await?
        {
            let mut writes = self.open_writes(snapshot);
            writes.push(Write::Persist {
                key: self.meta_key(),
            });
            writes.extend(extra);
            self.store.apply(writes).await?;
            return Ok(Created::New);
        }
        let found = self.require_record().await?;
        if found.status.is_terminal() {
            return Ok(Created::Ended(found));
        }
        self.store.set_nx(&self.def_key(), snapshot, None).await?;
        self.store
            .set_nx(&group_key(&self.run), self.group.as_bytes(), None)
            .await?;
        let mut writes = vec![
            Write::Persist {
                key: self.meta_key(),
            },
            Write::HSet {
                key: OPEN_INDEX.to_owned(),
                fields: vec![(self.run.clone(), self.group.as_bytes().to_vec())],
            },
        ];
        writes.extend(extra);
        self.store.apply(writes).await?;
        Ok(Created::Open(found))
    }

    /// The run record, `None` if there is none for this group.
    pub async fn record(&self) -> Result<Option<RunRecord>, WorkflowError> {
        let key = self.meta_key();
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The run record; `Forbidden` if another group owns the run, else `NotFound`.
    pub async fn require_record(&self) -> Result<RunRecord, WorkflowError> {
        if let Some(record) = self.record().await? {
            return Ok(record);
        }
        match self.store.get(&group_key(&self.run)).await? {
            Some(owner) if owner != self.group.as_bytes() => Err(WorkflowError::Forbidden {
                run: self.run.clone(),
            }),
            _ => Err(WorkflowError::NotFound {
                what: "run",
                id: self.run.clone(),
            }),
        }
    }

    /// Marks the run as owned by its group for good (a restarted run's mark must not expire
    /// with the retention of its earlier end).
    pub async fn keep_owner(&self) -> Result<(), WorkflowError> {
        self.store
            .set(&group_key(&self.run), self.group.as_bytes(), None)
            .await?;
        Ok(())
    }

    /// Replaces the run record.
    pub async fn save_record(&self, record: &RunRecord) -> Result<(), WorkflowError> {
        let bytes = encode(record)?;
        self.store.set(&self.meta_key(), &bytes, None).await?;
        Ok(())
    }

    /// The definition snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot, WorkflowError> {
        let key = self.def_key();
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes),
            None => Err(WorkflowError::Corrupt {
                key,
                message: "the run has no definition snapshot".to_owned(),
            }),
        }
    }

    /// Appends an entry (one round trip; it is durable when this returns).
    pub async fn append(&self, entry: &Entry) -> Result<(), WorkflowError> {
        let bytes = encode(entry)?;
        self.store.push(&self.journal_key(), &[&bytes]).await?;
        Ok(())
    }

    /// Every entry, in order.
    pub async fn entries(&self) -> Result<Vec<Entry>, WorkflowError> {
        let key = self.journal_key();
        let raw = self.store.range(&key, 0, -1).await?;
        raw.iter().map(|bytes| decode(&key, bytes)).collect()
    }

    /// The reference by which the journal holds `output`: inline when short, else under its
    /// hash, with the write that stores it there (its content names it: writing it again
    /// changes nothing).
    pub fn output_ref(&self, output: &str) -> (OutputRef, Option<Write>) {
        if output.len() <= INLINE_MAX {
            return (OutputRef::Inline(output.to_owned()), None);
        }
        let hash = format!("{:016x}", fnv1a(output.as_bytes()));
        let write = Write::Set {
            key: self.out_key(&hash),
            value: output.as_bytes().to_vec(),
            ttl: None,
        };
        let reference = OutputRef::Stored {
            hash,
            len: output.len(),
        };
        (reference, Some(write))
    }

    /// The write that appends `entry` to the journal, for a batch of the caller's.
    pub fn entry_write(&self, entry: &Entry) -> Result<Write, WorkflowError> {
        self.entries_write(std::slice::from_ref(entry))
    }

    /// The write that appends `entries` to the journal, in order (one `RPUSH`).
    pub fn entries_write(&self, entries: &[Entry]) -> Result<Write, WorkflowError> {
        Ok(Write::Push {
            key: self.journal_key(),
            values: entries.iter().map(encode).collect::<Result<_, _>>()?,
        })
    }

    /// The text of an output reference.
    pub async fn output(&self, output: &OutputRef) -> Result<String, WorkflowError> {
        match output {
            OutputRef::Inline(text) => Ok(text.clone()),
            OutputRef::Stored { hash, .. } => {
                let key = self.out_key(hash);
                let bytes = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| WorkflowError::Corrupt {
                        key: key.clone(),
                        message: "a journaled output is missing".to_owned(),
                    })?;
                String::from_utf8(bytes).map_err(|err| WorkflowError::Corrupt {
                    key,
                    message: err.to_string(),
                })
            }
        }
    }

    /// The data of event `name`, if it was sent.
    pub async fn event(&self, name: &str) -> Result<Option<String>, WorkflowError> {
        let data = self.store.hget(&self.events_key(), name).await?;
        Ok(data.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Ends the run: writes its final record and, for an ingress task's run, the task's
    /// result (to its reply stream and its idempotency record), expires its keys and the
    /// threads of its calls (`call_threads`; not for a run that began less than
    /// [`retouch_within`](thread_store::retouch_within) ago, whose calls' threads were written
    /// expiring after the same retention) after `retention`, publishes its `ended` notice
    /// and takes it out of the index of unfinished runs, all in one batch.
    pub async fn finish(
        &self,
        record: &RunRecord,
        stored_outputs: &[String],
        call_threads: &[String],
        retention: Duration,
    ) -> Result<(), WorkflowError> {
        self.finish_with(
            record,
            stored_outputs,
            call_threads,
            retention,
            (Vec::new(), &[], Vec::new()),
            true,
        )
        .await
    }

    /// [`finish`](Self::finish) with `first` written at the start of the same batch (what
    /// the run's last call wrote: its thread, usage, a long output), `last` journaled in it
    /// (the run's `finished` entry, after the entries that waited for a write to ride with)
    /// and `also` written in it (the run's lease dropped). `signaled`: the run was canceled
    /// or waits for events, so its cancel flag and events are expired with it.
    pub async fn finish_with(
        &self,
        record: &RunRecord,
        stored_outputs: &[String],
        call_threads: &[String],
        retention: Duration,
        (first, last, also): (Vec<Write>, &[Entry], Vec<Write>),
        signaled: bool,
    ) -> Result<(), WorkflowError> {
        let mut writes = first;
        if !last.is_empty() {
            writes.push(self.entries_write(last)?);
        }
        writes.extend(self.expiring(stored_outputs, retention, signaled));
        // A call's thread was written expiring after the run's retention: a run that ends
        // soon after it began leaves them be, and they expire up to that long before its keys.
        let young = crate::journal::now_ms().saturating_sub(record.created_ms)
            < u64::try_from(thread_store::retouch_within(retention).as_millis())
                .unwrap_or(u64::MAX);
        for thread in call_threads.iter().filter(|_| !young) {
            if let Ok(id) = ThreadId::new(&self.group, thread) {
                writes.push(thread_store::expiring(&id, retention));
            }
        }
        writes.push(Write::Set {
            key: self.meta_key(),
            value: encode(record)?,
            ttl: Some(retention),
        });
        if let Some(reply) = &record.reply {
            writes.extend(reply_writes(reply, record)?);
        }
        writes.push(
            Notice::Ended {
                run: self.run.clone(),
            }
            .write(),
        );
        writes.extend(also);
        // In the batch: a restart written after it (the run is answered already) puts the
        // run back in the index, and must not be taken out by this end.
        writes.push(Write::HDel {
            key: OPEN_INDEX.to_owned(),
            fields: vec![self.run.clone()],
        });
        Ok(self.store.apply(writes).await?)
    }

    /// Takes a run found finished (its end was written, its index entry was not removed) out
    /// of the index; its result, if any, was written with its end.
    pub async fn close(&self, retention: Duration) -> Result<(), WorkflowError> {
        let mut writes = self.expiring(&[], retention, true);
        writes.push(Write::HDel {
            key: OPEN_INDEX.to_owned(),
            fields: vec![self.run.clone()],
        });
        Ok(self.store.apply(writes).await?)
    }

    /// The writes of a restart from a step: `entry` journaled, `record` saved, the cancel
    /// flag and events dropped, and every key the run still needs — record, snapshot,
    /// journal, owner, the outputs of `stored_outputs` — made permanent again (they expired
    /// after the retention period of its earlier end), then the index entry.
    pub fn restart_writes(
        &self,
        record: &RunRecord,
        entry: &Entry,
        stored_outputs: &[String],
    ) -> Result<Vec<Write>, WorkflowError> {
        let mut writes = vec![
            Write::Del {
                key: self.cancel_key(),
            },
            Write::Del {
                key: self.events_key(),
            },
            Write::Push {
                key: self.journal_key(),
                values: vec![encode(entry)?],
            },
            Write::Set {
                key: self.meta_key(),
                value: encode(record)?,
                ttl: None,
            },
            Write::Set {
                key: group_key(&self.run),
                value: self.group.as_bytes().to_vec(),
                ttl: None,
            },
        ];
        let mut needed = vec![self.def_key(), self.journal_key()];
        needed.extend(stored_outputs.iter().map(|hash| self.out_key(hash)));
        writes.extend(needed.into_iter().map(|key| Write::Persist { key }));
        writes.push(Write::HSet {
            key: OPEN_INDEX.to_owned(),
            fields: vec![(self.run.clone(), self.group.as_bytes().to_vec())],
        });
        Ok(writes)
    }

    /// The writes that expire the run's keys (but its record) after `retention`; its events
    /// and cancel flag too if `signaled` (they may have been written without an expiry, by a
    /// daemon from before [`SIGNAL_TTL`](crate::runs::SIGNAL_TTL)).
    fn expiring(
        &self,
        stored_outputs: &[String],
        retention: Duration,
        signaled: bool,
    ) -> Vec<Write> {
        let mut expiring = vec![self.def_key(), self.journal_key(), group_key(&self.run)];
        if signaled {
            expiring.extend([self.events_key(), self.cancel_key()]);
        }
        expiring.extend(stored_outputs.iter().map(|hash| self.out_key(hash)));
        expiring
            .into_iter()
            .map(|key| Write::Expire {
                key,
                ttl: retention,
            })
            .collect()
    }
}

/// What [`Journal::create_once`] found.
#[derive(Debug)]
pub enum Created {
    /// The run did not exist: it was created.
    New,
    /// It existed, unfinished (now indexed, whatever its creation had left undone).
    Open(RunRecord),
    /// It existed and has ended.
    Ended(RunRecord),
}

/// The writes that answer an ingress task with the end of its run: the result on the task's
/// reply stream and under its idempotency key.
fn reply_writes(reply: &Reply, record: &RunRecord) -> Result<Vec<Write>, WorkflowError> {
    let result = TaskResult::of_run(
        &reply.task,
        &record.group,
        &record.id,
        record.status.as_str(),
        record.output.clone(),
        record.error.clone(),
    );
    let json = encode(&result)?;
    let retention = Duration::from_millis(reply.retention_ms.max(1));
    Ok(vec![
        Write::XAdd {
            stream: reply.stream.clone(),
            fields: vec![(RESULT_FIELD.as_bytes().to_vec(), json.clone())],
            trim: Some(troupe_runtime::store::Trim::MaxLen(reply.max_len)),
        },
        Write::Renew {
            key: reply.stream.clone(),
            ttl: retention,
        },
        Write::Set {
            key: done_key(&record.group, &reply.task),
            value: json,
            ttl: Some(retention),
        },
    ])
}

/// Unfinished runs: (run id, group).
pub async fn open_runs(store: &dyn Store) -> Result<Vec<(String, String)>, WorkflowError> {
    Ok(store
        .hgetall(OPEN_INDEX)
        .await?
        .into_iter()
        .map(|(run, group)| (run, String::from_utf8_lossy(&group).into_owned()))
        .collect())
}
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WorkflowError> {
    serde_json::to_vec(value).map_err(|err| WorkflowError::Invalid {
        what: "record",
        message: err.to_string(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, WorkflowError> {
    serde_json::from_slice(bytes).map_err(|err| WorkflowError::Corrupt {
        key: key.to_owned(),
        message: err.to_string(),
    })
}
