//! [`Runs`]: submits, inspects, cancels, restarts runs and sends them events, through the
//! store only — a CLI or another daemon submits a run by writing it there, and whichever
//! daemon scans first adopts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_config::WorkflowSettings;
use troupe_runtime::store::{Store, Write};

use super::env::{Fresh, Snapshots, Waiters};
use super::error::WorkflowError;
use super::journal::{
    new_run_id, now_ms, task_run_id, top_step, Created, Entry, EntryKind, Journal, OutputRef,
    Replay, Reply, RunRecord, RunStatus, Snapshot,
};
use super::notices::{Notice, Tail};
use super::options::RUN_RETENTION;
use troupe_runtime::key_name::check_key_name as check_name;

/// A request to run a workflow.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    /// The workflow's name.
    pub workflow: String,
    /// The tenant group.
    pub group: String,
    /// The submitting user.
    pub user: String,
    /// The input.
    pub input: String,
}

/// The run of an ingress task, as [`Router::submit_task`](crate::Router::submit_task) found it.
#[derive(Debug, Clone)]
pub enum TaskRun {
    /// Submitted now or by an earlier delivery, not ended: the task is acknowledged.
    Submitted(String),
    /// Ended (its result was written when it ended); the task's acknowledgement was not
    /// written.
    Ended(Box<RunRecord>),
}

/// One top-level step as the journal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// `pending`, `running`, `completed`.
    pub state: &'static str,
}

/// A run as `status` shows it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run record.
    pub record: RunRecord,
    /// The steps of the run's workflow (its snapshot) and where each is.
    pub steps: Vec<StepView>,
    /// Number of journal entries.
    pub journal_len: usize,
}

/// How long a run's cancel flag and events last after their last write. They are written
/// with it, so one written just as the run ended (its status read before the end) is not kept
/// for good; and a run that waits longer than this for a daemon loses them.
pub const SIGNAL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Submits, inspects, cancels, restarts runs and sends them events, through the store only.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn Store>,
    snapshots: Arc<Snapshots>,
    /// The waiters of the daemon these `Runs` belong to; `None` for a store-only client.
    daemon: Option<Waiters>,
}

impl Runs {
    /// The API over `store` with the config's `workflows` (what `submit` snapshots).
    pub fn new(store: Arc<dyn Store>, workflows: BTreeMap<String, WorkflowSettings>) -> Self {
        let snapshots = Arc::new(Snapshots::new(Arc::new(workflows)));
        Runs::with(store, snapshots, None)
    }

    pub(crate) fn with(
        store: Arc<dyn Store>,
        snapshots: Arc<Snapshots>,
        daemon: Option<Waiters>,
    ) -> Self {
        Runs {
            store,
            snapshots,
            daemon,
        }
    }

    /// Writes a new run (record, definition snapshot, index entry) and returns its id, with
    /// an `opened` notice in the same batch: a daemon with room adopts it at once.
    pub async fn submit(&self, submit: Submit) -> Result<String, WorkflowError> {
        self.create(submit, true).await.map(|fresh| fresh.record.id)
    }

    /// Writes a new run; with its `opened` notice if `announce` (a daemon that adopts the
    /// run itself announces it only when it has no room for it).
    pub(crate) async fn create(
        &self,
        submit: Submit,
        announce: bool,
    ) -> Result<Fresh, WorkflowError> {
        let (record, snapshot, encoded) = self.new_record(submit, new_run_id(), None)?;
        let journal = Journal::new(self.store.clone(), &record.group, &record.id);
        let mut writes = journal.create_writes(&record, encoded)?;
        if announce {
            writes.push(
                Notice::Opened {
                    run: record.id.clone(),
                    group: record.group.clone(),
                }
                .write(),
            );
        }
        self.store.apply(writes).await?;
        tracing::debug!(workflow = %record.workflow, run = %record.id, group = %record.group, "workflow run submitted");
        Ok(Fresh {
            record,
            snapshot,
            span: tracing::Span::current(),
        })
    }

    /// Submits the run of the ingress task `reply.task` — once, whatever happened to earlier
    /// deliveries of the task: its id is [`task_run_id`] of the group and the task id, and its
    /// record is created with `SET NX`. `extra` (the task's acknowledgement) is written in the
    /// batch that makes the run adoptable, unless the run has ended already. When the run
    /// ends, its result is written to `reply.stream` by the daemon that ends it. Also returns
    /// the run to adopt when this call created it.
    pub(crate) async fn create_task(
        &self,
        submit: Submit,
        reply: Reply,
        extra: Vec<Write>,
    ) -> Result<(TaskRun, Option<Fresh>), WorkflowError> {
        let id = task_run_id(&submit.group, &reply.task);
        let (record, snapshot, encoded) = self.new_record(submit, id, Some(reply))?;
        let journal = Journal::new(self.store.clone(), &record.group, &record.id);
        let run = record.id.clone();
        Ok(
            match journal
                .create_once(&record, encoded, extra, RUN_RETENTION)
                .await?
            {
                Created::New => {
                    tracing::debug!(workflow = %record.workflow, run = %run, group = %record.group, "workflow run submitted for a task");
                    let fresh = Fresh {
                        record,
                        snapshot,
                        span: tracing::Span::current(),
                    };
                    (TaskRun::Submitted(run), Some(fresh))
                }
                Created::Open(_) => (TaskRun::Submitted(run), None),
                Created::Ended(record) => (TaskRun::Ended(Box::new(record)), None),
            },
        )
    }

    /// A new run's record (validated), its definition snapshot and the snapshot's encoding.
    fn new_record(
        &self,
        submit: Submit,
        id: String,
        reply: Option<Reply>,
    ) -> Result<(RunRecord, Arc<Snapshot>, &[u8]), WorkflowError> {
        for (what, value) in [("group", &submit.group), ("user", &submit.user)] {
            check_name(what, value)?;
        }
        let (snapshot, encoded) = self.snapshots.get(&submit.workflow)?;
        let now = now_ms();
        let record = RunRecord {
            id,
            workflow: submit.workflow,
            group: submit.group,
            user: submit.user,
            input: submit.input,
            status: RunStatus::Running,
            definition_hash: snapshot.hash.clone(),
            restarts: 0,
            created_ms: now,
            updated_ms: now,
            output: None,
            error: None,
            reply,
        };
        Ok((record, snapshot, encoded))
    }

    fn journal(&self, group: &str, run: &str) -> Result<Journal, WorkflowError> {
        for (what, value) in [("group", group), ("run id", run)] {
            check_name(what, value)?;
        }
        Ok(Journal::new(self.store.clone(), group, run))
    }

    /// The run's record (another group's run is `NotFound`).
    pub async fn record(&self, group: &str, run: &str) -> Result<RunRecord, WorkflowError> {
        self.journal(group, run)?.require_record().await
    }

    /// The run with its steps.
    pub async fn status(&self, group: &str, run: &str) -> Result<RunView, WorkflowError> {
        let journal = self.journal(group, run)?;
        let record = journal.require_record().await?;
        let snapshot = journal.snapshot().await?;
        let entries = journal.entries().await?;
        let order = snapshot.top_steps(&record.workflow);
        let replay = Replay::fold(&entries, &order);
        let steps = order
            .iter()
            .map(|name| {
                let state = if replay.completed.contains_key(name) {
                    "completed"
                } else if replay.started.iter().any(|k| top_step(k) == name) {
                    "running"
                } else {
                    "pending"
                };
                StepView {
                    name: name.clone(),
                    state,
                }
            })
            .collect();
        Ok(RunView {
            record,
            steps,
            journal_len: entries.len(),
        })
    }

    /// The run's journal.
    pub async fn journal_entries(
        &self,
        group: &str,
        run: &str,
    ) -> Result<Vec<Entry>, WorkflowError> {
        let journal = self.journal(group, run)?;
        journal.require_record().await?;
        journal.entries().await
    }

    /// Requests a cancel: the daemon running the run (or the next one to adopt it) ends it as
    /// canceled at its next step boundary or wait. A finished run is left as it is.
    pub async fn cancel(&self, group: &str, run: &str) -> Result<RunRecord, WorkflowError> {
        let journal = self.journal(group, run)?;
        let record = journal.require_record().await?;
        if !record.status.is_terminal() {
            let flag = Write::Set {
                key: journal.cancel_key(),
                value: b"1".to_vec(),
                ttl: Some(SIGNAL_TTL),
            };
            let notice = Notice::Canceled {
                run: run.to_owned(),
            };
            self.store.apply(vec![flag, notice.write()]).await?;
        }
        Ok(record)
    }

    /// Sends event `name` with JSON `data` to the run; a `wait_event` step waiting for it
    /// (now or later) receives it, at once if it runs in the daemon these `Runs` belong to.
    pub async fn send_event(
        &self,
        group: &str,
        run: &str,
        name: &str,
        data: &serde_json::Value,
    ) -> Result<(), WorkflowError> {
        check_name("event", name)?;
        let journal = self.journal(group, run)?;
        let record = journal.require_record().await?;
        if record.status.is_terminal() {
            return Err(WorkflowError::Invalid {
                what: "event",
                message: format!("run {run} has ended ({})", record.status.as_str()),
            });
        }
        let key = journal.events_key();
        let event = Write::HSet {
            key: key.clone(),
            fields: vec![(name.to_owned(), data.to_string().into_bytes())],
        };
        let bound = Write::Expire {
            key: key.clone(),
            ttl: SIGNAL_TTL,
        };
        let notice = Notice::Event {
            run: run.to_owned(),
            group: group.to_owned(),
        };
        self.store.apply(vec![event, bound, notice.write()]).await?;
        if let Some(daemon) = &self.daemon {
            daemon.arrivals.sent(&key);
        }
        Ok(())
    }

    /// Restarts a finished run from step `from`: the results of that step and the later ones
    /// are void, earlier ones are kept. The run keeps its definition snapshot.
    pub async fn restart(&self, group: &str, run: &str, from: &str) -> Result<(), WorkflowError> {
        let journal = self.journal(group, run)?;
        let mut record = journal.require_record().await?;
        if !record.status.is_terminal() {
            return Err(WorkflowError::Active {
                run: run.to_owned(),
            });
        }
        let snapshot = journal.snapshot().await?;
        let known = snapshot
            .definitions
            .get(&record.workflow)
            .is_some_and(|d| d.steps.iter().any(|s| s.name == from));
        if !known {
            return Err(WorkflowError::NotFound {
                what: "step",
                id: from.to_owned(),
            });
        }
        let stored: Vec<String> = journal
            .entries()
            .await?
            .into_iter()
            .filter_map(|entry| match entry.output {
                Some(OutputRef::Stored { hash, .. }) => Some(hash),
                _ => None,
            })
            .collect();
        record.status = RunStatus::Running;
        record.restarts += 1;
        record.output = None;
        record.error = None;
        // The task it ran for was answered by its first end.
        record.reply = None;
        record.updated_ms = now_ms();
        let entry = Entry::new(from, EntryKind::Restarted);
        let mut writes = journal.restart_writes(&record, &entry, &stored)?;
        writes.push(
            Notice::Opened {
                run: run.to_owned(),
                group: group.to_owned(),
            }
            .write(),
        );
        self.store.apply(writes).await?;
        Ok(())
    }

    /// Waits until the run has ended, at most `timeout`. Woken by the run's `ended` notice
    /// ([`notices`](crate::notices)): the `Runs` of a daemon through its router's listener
    /// (or at once, for a run that daemon runs), a store-only client by tailing the notices
    /// itself. Both read the record again every [`WAIT_CHECK`] in case a notice was missed.
    pub async fn wait(
        &self,
        group: &str,
        run: &str,
        timeout: Duration,
    ) -> Result<RunRecord, WorkflowError> {
        let endings = self.daemon.as_ref().map(|daemon| &daemon.endings);
        // Made before the first read of the record: a notice written after it is not missed.
        let mut tail = endings.is_none().then(Tail::new);
        let deadline = Instant::now() + timeout;
        loop {
            let ended = endings.map(|endings| endings.listen(run));
            let read = self.record(group, run).await;
            let now = Instant::now();
            let done = match &read {
                Ok(record) => record.status.is_terminal() || now >= deadline,
                Err(_) => true,
            };
            if !done {
                let nap = deadline.saturating_duration_since(now).min(WAIT_CHECK);
                match (ended, &mut tail) {
                    (Some(ended), _) => {
                        let _ = tokio::time::timeout(nap, ended).await;
                    }
                    (None, Some(tail)) => self.ended_notice(tail, run, nap).await,
                    (None, None) => tokio::time::sleep(nap).await,
                }
            } else {
                drop(ended);
            }
            if let Some(endings) = endings {
                endings.prune(run);
            }
            if done {
                return read;
            }
        }
    }

    /// Tails the notices for at most `nap`, until one says `run` ended.
    async fn ended_notice(&self, tail: &mut Tail, run: &str, nap: Duration) {
        let until = Instant::now() + nap;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match tail.next(self.store.as_ref(), left).await {
                Ok(notices) => {
                    let ended = |n: &Notice| matches!(n, Notice::Ended { run: r } if r == run);
                    if notices.iter().any(ended) {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "run notices unreadable; reading the record");
                    tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                    return;
                }
            }
        }
    }
}

/// How often [`Runs::wait`] reads the run's record while no notice says it ended.
pub const WAIT_CHECK: Duration = Duration::from_secs(5);
