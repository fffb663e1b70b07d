//! The persisted form of workflow runs: the run record, the definition snapshot, the journal
//! of step starts and results, large outputs, events, cancel requests, the index of unfinished
//! runs and the ownership leases.
//!
//! Layout (the backend adds its prefix; `{group}` scopes everything a run owns):
//! - `wf:{group}:{run}:meta` — JSON [`RunRecord`]: workflow, user, input, status, hashes.
//! - `wf:{group}:{run}:def` — JSON [`Snapshot`]: the definitions the run started with (its
//!   workflow and every child workflow) and their hash. Never rewritten.
//! - `wf:{group}:{run}:journal` — list of JSON [`Entry`]s, appended in order: a step's
//!   `started` before its agent is called, its `completed` (with the output) before the run
//!   moves on; plus notes (route fallbacks, scores), waits, restarts and the final status.
//! - `wf:{group}:{run}:out:{hash}` — an output longer than [`INLINE_MAX`] bytes, stored once
//!   (`SET NX`) and referenced from the journal by its hash.
//! - `wf:{group}:{run}:events` — hash: event name -> JSON data sent to the run.
//! - `wf:{group}:{run}:cancel` — present when a cancel was requested.
//! - `wf-open` — hash: run id -> group, every unfinished run (what daemons adopt).
//! - `wf-lease:{run}` — the lease of the daemon running the run.
//! - `wf-group:{run}` — the group that owns the run: asking for it as another group is
//!   [`WorkflowError::Forbidden`], not `NotFound`.
//!
//! Finished runs leave `wf-open`, and their keys expire after the retention period; a run
//! restarted from a step makes the keys it still needs permanent again.
//!
//! A run submitted for an ingress task has the id [`task_run_id`] of the task's group and id,
//! and its record names where the task's result goes ([`Reply`]): the batch that finishes the
//! run writes that result, so whichever daemon ends the run answers the task, once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_config::WorkflowSettings;
use troupe_runtime::store::{Store, Write};

use super::error::WorkflowError;
use troupe_agents::task_result::{done_key, TaskResult, RESULT_FIELD};
use troupe_agents::thread_store::{self, ThreadId};

/// Outputs longer than this many bytes are stored once under their hash, not in the journal.
pub const INLINE_MAX: usize = 2048;
/// The index of unfinished runs.
pub const OPEN_INDEX: &str = "wf-open";

/// The key naming the group that owns a run.
pub fn group_key(run: &str) -> String {
    format!("wf-group:{run}")
}

/// The lease key of a run.
pub fn lease_key(run: &str) -> String {
    format!("wf-lease:{run}")
}

/// Length of every run id: `r` + 19 hex digits (time and randomness) for runs submitted
/// through the API, `t` + 19 hex digits of a hash for the run of an ingress task.
pub const RUN_ID_LEN: usize = 20;

/// A new run id for a submission through the API: the time, then randomness.
pub fn new_run_id() -> String {
    format!(
        "r{:011x}{:08x}",
        now_ms() & 0xfff_ffff_ffff,
        rand::random::<u32>()
    )
}

/// The run id of the ingress task `task` of `group`: the same for every delivery of the task,
/// and different for every other (group, task) pair (76 bits of SHA-256; `group` holds no
/// `:`).
pub fn task_run_id(group: &str, task: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{group}:{task}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t{}", &hex[..RUN_ID_LEN - 1])
}

/// The id of the thread (and pool item) of the call journaled under `key` in run `run`,
/// restarted `restarts` times: `wf-{run}[-r{restarts}].{key, '/' -> '.'}`. Names hold only
/// letters, digits, `_` and `-`, so two different keys never make the same id.
pub fn call_id(run: &str, restarts: u32, key: &str) -> String {
    let restart = if restarts > 0 {
        format!("-r{restarts}")
    } else {
        String::new()
    };
    format!("wf-{run}{restart}.{}", key.replace('/', "."))
}

/// Where the result of an ingress task's run goes when the run ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The task's id.
    pub task: String,
    /// The task's `reply_to` stream.
    pub stream: String,
    /// Approximate MAXLEN of that stream.
    pub max_len: u64,
    /// The stream expires this long (ms) after the result is written (`[ingress]
    /// reply_retention` of the daemon that accepted the task). Records written before the
    /// field existed get the default.
    #[serde(default = "default_reply_retention_ms")]
    pub retention_ms: u64,
}

/// `[ingress] reply_retention`'s default, in ms, for records that carry none.
fn default_reply_retention_ms() -> u64 {
    let default = troupe_config::IngressSettings::default().reply_retention;
    u64::try_from(default.as_millis()).unwrap_or(u64::MAX)
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Submitted or running steps.
    Running,
    /// Waiting for an event (a `wait_event` step).
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Canceled.
    Canceled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled
        )
    }

    /// The status as written in the store and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }
}

/// A run's record (`wf:{group}:{run}:meta`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The tenant group.
    pub group: String,
    /// The user who submitted it.
    pub user: String,
    /// The run's input.
    pub input: String,
    /// Where it is.
    pub status: RunStatus,
    /// Hash of the definition snapshot the run uses.
    pub definition_hash: String,
    /// How many times it was restarted from a step.
    pub restarts: u32,
    /// Submission time, ms since the epoch.
    pub created_ms: u64,
    /// Last status change, ms since the epoch.
    pub updated_ms: u64,
    /// The final output, when completed.
    pub output: Option<String>,
    /// Why it failed, when failed.
    pub error: Option<String>,
    /// The ingress task whose result the run's end writes, if it was submitted for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

/// The definitions a run started with: its workflow and every workflow it runs as a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The run's workflow.
    pub workflow: String,
    /// Name -> definition.
    pub definitions: BTreeMap<String, WorkflowSettings>,
    /// Hash of `definitions` (see [`definition_hash`]).
    pub hash: String,
}

impl Snapshot {
    /// The snapshot of `workflow` (and its children) from `all`.
    pub fn of(
        workflow: &str,
        all: &BTreeMap<String, WorkflowSettings>,
    ) -> Result<Snapshot, WorkflowError> {
        let mut definitions = BTreeMap::new();
        let mut todo = vec![workflow.to_owned()];
        while let Some(name) = todo.pop() {
            if definitions.contains_key(&name) {
                continue;
            }
            let def = all.get(&name).ok_or_else(|| WorkflowError::NotFound {
                what: "workflow",
                id: name.clone(),
            })?;
            for step in &def.steps {
                if let troupe_config::StepKind::Workflow { workflow } = &step.kind {
                    todo.push(workflow.clone());
                }
            }
            definitions.insert(name, def.clone());
        }
        let hash = definition_hash(&definitions);
        Ok(Snapshot {
            workflow: workflow.to_owned(),
            definitions,
            hash,
        })
    }
}

/// A stable hash of definitions (FNV-1a over their JSON), hex.
pub fn definition_hash(definitions: &BTreeMap<String, WorkflowSettings>) -> String {
    let bytes = serde_json::to_vec(definitions).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A step (or one call of it) started; an attempt number in `detail`.
    Started,
    /// A step (or call) finished with `output`.
    Completed,
    /// An attempt failed (`detail`); it may be retried.
    AttemptFailed,
    /// A decision worth knowing (a route's fallback, a loop's scores), in `detail`.
    Note,
    /// The run waits until `until` (a sleep, or an event's deadline).
    Waiting,
    /// The run was restarted from the step `step`; results of it and later steps are void.
    Restarted,
    /// A daemon (`detail`) adopted the run.
    Adopted,
    /// The run ended with status `detail`.
    Finished,
}

/// An output in the journal: inline, or stored once under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputRef {
    /// The text itself.
    Inline(String),
    /// `wf:{group}:{run}:out:{hash}`, of `len` bytes.
    Stored {
        /// Its hash.
        hash: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When, ms since the epoch.
    pub at: u64,
    /// The journal key: a step name, `step/branch`, `step/iteration/agent`, `child/step`…
    pub step: String,
    /// What happened.
    pub kind: EntryKind,
    /// The output, for `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputRef>,
    /// Details (attempt, error, note, owner, status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A deadline, ms since the epoch, for `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl Entry {
    /// An entry of `kind` for `step`, now.
    pub fn new(step: &str, kind: EntryKind) -> Entry {
        Entry {
            at: now_ms(),
            step: step.to_owned(),
            kind,
            output: None,
            detail: None,
            until: None,
        }
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = Some(detail.into());
        self
    }
}

/// What a journal says, folded: the results to reuse, the deadlines to keep.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Journal key -> output of completed steps and calls.
    pub completed: BTreeMap<String, OutputRef>,
    /// Journal key -> deadline of sleeps and event waits.
    pub deadlines: BTreeMap<String, u64>,
    /// Journal keys started and not completed (in flight at a crash, or failed).
    pub started: BTreeSet<String>,
}

impl Replay {
    /// Folds `entries`; a restart voids the results of the steps named in `order` from the
    /// restart's step on (`order`: the run workflow's top-level step names in order).
    pub fn fold(entries: &[Entry], order: &[String]) -> Replay {
        let mut replay = Replay::default();
        for entry in entries {
            match entry.kind {
                EntryKind::Started => {
                    replay.started.insert(entry.step.clone());
                }
                EntryKind::Completed => {
                    replay.started.remove(&entry.step);
                    if let Some(output) = &entry.output {
                        replay.completed.insert(entry.step.clone(), output.clone());
                    }
                }
                EntryKind::Waiting => {
                    if let Some(until) = entry.until {
                        replay.deadlines.insert(entry.step.clone(), until);
                    }
                }
                EntryKind::Restarted => {
                    let from = order.iter().position(|s| *s == entry.step).unwrap_or(0);
                    let void: BTreeSet<&str> = order[from..].iter().map(String::as_str).collect();
                    let voided = |key: &String| void.contains(top_step(key));
                    replay.completed.retain(|k, _| !voided(k));
                    replay.deadlines.retain(|k, _| !voided(k));
                    replay.started.retain(|k| !voided(k));
                }
                EntryKind::AttemptFailed
                | EntryKind::Note
                | EntryKind::Adopted
                | EntryKind::Finished => {}
            }
        }
        replay
    }
}

/// The top-level step of a journal key (`research` of `research/web`).
pub fn top_step(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

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
        format!("wf:{}:{}:{what}", self.group, self.run)
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
        self.key(&format!("out:{hash}"))
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

    /// Stores `output` for the journal: inline when short, else once under its hash.
    pub async fn put_output(&self, output: &str) -> Result<OutputRef, WorkflowError> {
        if output.len() <= INLINE_MAX {
            return Ok(OutputRef::Inline(output.to_owned()));
        }
        let hash = format!("{:016x}", fnv1a(output.as_bytes()));
        self.store
            .set_nx(&self.out_key(&hash), output.as_bytes(), None)
            .await?;
        Ok(OutputRef::Stored {
            hash,
            len: output.len(),
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
    /// threads of its calls (`call_threads`) after `retention` — all in one batch —, then
    /// takes it out of the index of unfinished runs.
    pub async fn finish(
        &self,
        record: &RunRecord,
        stored_outputs: &[String],
        call_threads: &[String],
        retention: Duration,
    ) -> Result<(), WorkflowError> {
        let mut writes = self.expiring(stored_outputs, retention);
        for thread in call_threads {
            if let Ok(id) = ThreadId::new(&self.group, thread) {
                writes.extend(thread_store::expiring(&id, retention));
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
        self.store.apply(writes).await?;
        self.store.hdel(OPEN_INDEX, &[self.run.as_str()]).await?;
        Ok(())
    }

    /// Takes a run found finished (its end was written, its index entry was not removed) out
    /// of the index; its result, if any, was written with its end.
    pub async fn close(&self, retention: Duration) -> Result<(), WorkflowError> {
        self.store.apply(self.expiring(&[], retention)).await?;
        self.store.hdel(OPEN_INDEX, &[self.run.as_str()]).await?;
        Ok(())
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

    /// The writes that expire the run's keys (but its record) after `retention`.
    fn expiring(&self, stored_outputs: &[String], retention: Duration) -> Vec<Write> {
        let mut expiring = vec![
            self.def_key(),
            self.journal_key(),
            self.events_key(),
            self.cancel_key(),
            group_key(&self.run),
        ];
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
        Write::Expire {
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

pub use troupe_runtime::clock::now_ms;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_have_one_length_and_a_task_always_gets_the_same() {
        assert_eq!(new_run_id().len(), RUN_ID_LEN);
        let id = task_run_id("acme", "t1");
        assert_eq!(id.len(), RUN_ID_LEN);
        assert_eq!(id, task_run_id("acme", "t1"));
        assert_ne!(id, task_run_id("acme", "t2"));
        assert_ne!(id, task_run_id("globex", "t1"));
    }

    #[test]
    fn call_ids_of_different_keys_differ_and_fit_in_a_thread_id() {
        let run = task_run_id("acme", "t1");
        for (a, b) in [
            (("a/b", 0), ("a-b", 0)),
            (("x", 1), ("x/r1", 0)),
            (("x", 1), ("x-r1", 0)),
            (("s/0/c", 0), ("s-0-c", 0)),
        ] {
            assert_ne!(
                call_id(&run, a.1, a.0),
                call_id(&run, b.1, b.0),
                "{a:?} {b:?}"
            );
        }
        let longest = call_id(&run, u32::MAX, &"k".repeat(troupe_config::MAX_CALL_KEY));
        assert_eq!(longest.len(), 128);
    }

    #[test]
    fn a_reply_recorded_before_retention_existed_decodes_with_the_default() {
        let old = r#"{"task":"t1","stream":"results:acme","max_len":10}"#;
        let reply: Reply = serde_json::from_str(old).expect("an old reply decodes");
        assert_eq!(reply.retention_ms, 24 * 60 * 60 * 1000);
        let new = r#"{"task":"t1","stream":"results:acme","max_len":10,"retention_ms":5}"#;
        let reply: Reply = serde_json::from_str(new).expect("a reply decodes");
        assert_eq!(reply.retention_ms, 5);
    }
}
