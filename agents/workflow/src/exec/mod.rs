//! `Exec`: the state of one execution of a run, and what every step does with the journal
//! (replay, begin, complete, memo, notes, deadlines, status). The step interpreter is
//! `steps.rs` (one match over the step kinds), the agent calls and knowledge searches
//! `calls.rs`.

mod calls;
mod steps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::Recipient;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use tokio::sync::{oneshot, watch};
use tracing::Instrument as _;
use troupe_config::{RouteTarget, StepKind, StepSettings, WorkflowSettings};
use troupe_runtime::limit::{LimitError, Scope};
use troupe_runtime::pool::{
    Pool, PoolError, WorkCompletedEvent, WorkErrorKind, WorkFailure, WorkId, WorkOutcome, WorkSpec,
};
use troupe_runtime::retry::{retry_with, Backoff, Jitter, Next, RetryPolicy};
use troupe_runtime::store::Write;

use crate::env::Env;
use crate::error::WorkflowError;
use crate::journal::{
    call_id, now_ms, Entry, EntryKind, Journal, OutputRef, Replay, RunRecord, RunStatus, Snapshot,
    INLINE_MAX,
};
use crate::label::{parse_label, parse_score};
use crate::pool_call::{answer_of, Call, CallFailure, WORKFLOW_CALL};
use crate::template::{render, StepOutput};

/// What the router tells a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Keep going.
    Go,
    /// A cancel was requested: end the run as canceled.
    Cancel,
    /// The daemon is stopping: stop at the next step boundary, leave the run open.
    Shutdown,
    /// The lease was lost (another daemon may run it): stop at once, leave the run open.
    LeaseLost,
}

/// Who awaits which pool item: item id -> where to send its outcome.
pub(crate) type Waiting = Arc<Mutex<HashMap<WorkId, oneshot::Sender<WorkOutcome>>>>;

/// The pool items a run awaits, and the run actor's recipient that pools notify.
#[derive(Clone)]
pub(crate) struct Completions {
    pub(crate) waiting: Waiting,
    pub(crate) recipient: Recipient<WorkCompletedEvent>,
}

/// The state of one execution of a run.
pub(super) struct Exec {
    pub(super) env: Arc<Env>,
    pub(super) journal: Journal,
    pub(super) record: Mutex<RunRecord>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) replay: Mutex<Replay>,
    /// Hashes of outputs stored apart from the journal (they expire with it).
    pub(super) stored: Mutex<Vec<String>>,
    /// The threads of the run's calls, journaled earlier or made now (they expire with it).
    pub(super) threads: Mutex<BTreeSet<String>>,
    pub(super) signal: watch::Receiver<Signal>,
    pub(super) completions: Completions,
    /// Entries journaled with the next write of the journal, in order: the `adopted` entry,
    /// and the `completed` entries of steps whose calls are journaled (a crash that loses
    /// one runs the step again from its calls' results, without a call).
    pub(super) carried: Mutex<Vec<Entry>>,
    /// Calls whose `started` entry their step journaled for them (a parallel step's).
    pub(super) begun: Mutex<BTreeSet<String>>,
    /// The run's last step, if it is one call (an `agent` step): the run ends as soon as it
    /// completes, so its completion batch goes in the batch that ends the run.
    pub(super) last_call: Option<String>,
    /// That batch's writes (the call's thread and usage, a long output), held for the end;
    /// its `completed` entry is carried.
    pub(super) held: Mutex<Vec<Write>>,
}

impl Exec {
    pub(super) fn record(&self) -> RunRecord {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An error if the run must stop.
    pub(super) fn check(&self) -> Result<(), WorkflowError> {
        match *self.signal.borrow() {
            Signal::Go => Ok(()),
            Signal::Cancel => Err(WorkflowError::Canceled),
            Signal::Shutdown => Err(WorkflowError::Interrupted("the daemon is shutting down")),
            Signal::LeaseLost => Err(WorkflowError::Interrupted("the run's lease was lost")),
        }
    }

    /// Runs `fut` unless the run is told to stop first. `fut` is boxed before anything
    /// awaits it: a future passed by value to an `async fn` is stored twice in its state
    /// (the argument and the awaited copy), and these wrappers nest, so every run in flight
    /// would carry each call's state several times over.
    pub(super) fn interruptible<'a, T: 'a>(
        &'a self,
        fut: impl Future<Output = T> + 'a,
    ) -> impl Future<Output = Result<T, WorkflowError>> + 'a {
        let fut = Box::pin(fut);
        async move {
            self.check()?;
            let mut signal = self.signal.clone();
            let stopped = async move {
                loop {
                    if *signal.borrow_and_update() != Signal::Go {
                        return;
                    }
                    if signal.changed().await.is_err() {
                        futures::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                out = fut => Ok(out),
                () = stopped => Err(self.check().err().unwrap_or(WorkflowError::Interrupted("stopped"))),
            }
        }
    }

    /// The journaled output of `key`, if it completed.
    pub(super) async fn replayed(&self, key: &str) -> Result<Option<String>, WorkflowError> {
        let found = self
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .completed
            .get(key)
            .cloned();
        match found {
            Some(output) => self.journal.output(&output).await.map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn begin(
        &self,
        key: &str,
        detail: Option<String>,
    ) -> Result<(), WorkflowError> {
        let mut entry = Entry::new(key, EntryKind::Started);
        entry.detail = detail;
        self.journal_start(key, vec![entry]).await
    }

    /// [`begin`](Self::begin) of `key` that journals the `started` entries of its calls
    /// `calls` in the same write; each call then starts without a write of its own.
    pub(super) async fn begin_with(
        &self,
        key: &str,
        calls: Vec<String>,
    ) -> Result<(), WorkflowError> {
        let mut entries = vec![Entry::new(key, EntryKind::Started)];
        entries.extend(
            calls
                .iter()
                .map(|call| Entry::new(call, EntryKind::Started)),
        );
        self.journal_start(key, entries).await?;
        self.begun
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(calls);
        Ok(())
    }

    /// Journals `entries` (the `started` of `key`, and of its calls), then runs the step hook.
    async fn journal_start(&self, key: &str, entries: Vec<Entry>) -> Result<(), WorkflowError> {
        self.check()?;
        let write = self.with_carried(entries)?;
        self.journal.store().apply(vec![write]).await?;
        self.started(key);
        Ok(())
    }

    /// Starts `key`: journals it started, unless its step did already.
    async fn start(&self, key: &str) -> Result<(), WorkflowError> {
        let begun = self
            .begun
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if !begun {
            return self.begin(key, None).await;
        }
        self.check()?;
        self.started(key);
        Ok(())
    }

    /// Tells the step hook that `key` started.
    fn started(&self, key: &str) {
        if let Some(hook) = &self.env.options.on_step_start {
            (hook.0)(key);
        }
    }

    /// The write that journals `entries` after the carried ones (taken).
    pub(super) fn with_carried(&self, entries: Vec<Entry>) -> Result<Write, WorkflowError> {
        let mut all = self.take_carried();
        all.extend(entries);
        self.journal.entries_write(&all)
    }

    /// The carried entries, taken (for the batch that ends the run).
    pub(super) fn take_carried(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.carried.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The writes held for the batch that ends the run (see `last_call`), taken.
    pub(super) fn take_held(&self) -> Vec<Write> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Journals `key` completed with `output` at the journal's next write (see `carried`):
    /// for a step whose own work is journaled already (its calls), so that a crash before
    /// that write only runs the step again from its calls' journaled results. An output
    /// stored apart from the journal (a long one) is journaled now, with it.
    pub(super) async fn complete_step(&self, key: &str, output: &str) -> Result<(), WorkflowError> {
        if output.len() > INLINE_MAX {
            return self.complete(key, output).await;
        }
        let reference = OutputRef::Inline(output.to_owned());
        let mut entry = Entry::new(key, EntryKind::Completed);
        entry.output = Some(reference.clone());
        self.carried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
        self.completed(key, reference);
        Ok(())
    }

    /// Remembers `key` completed with `output` (for the run's later steps).
    fn completed(&self, key: &str, output: OutputRef) {
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .completed
            .insert(key.to_owned(), output);
    }

    pub(super) async fn complete(&self, key: &str, output: &str) -> Result<(), WorkflowError> {
        self.complete_with(key, output, Vec::new()).await
    }

    /// Journals `key` completed with `output`, in one batch with `with` (what the step's
    /// call wrote: its thread and usage); the run's last call, in the batch that ends it.
    pub(super) async fn complete_with(
        &self,
        key: &str,
        output: &str,
        with: Vec<Write>,
    ) -> Result<(), WorkflowError> {
        let (reference, stored) = self.journal.output_ref(output);
        if let OutputRef::Stored { hash, .. } = &reference {
            self.stored
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(hash.clone());
        }
        let mut entry = Entry::new(key, EntryKind::Completed);
        entry.output = Some(reference.clone());
        let mut writes = with;
        writes.extend(stored);
        if self.last_call.as_deref() == Some(key) {
            // The run ends next, with nothing awaited in between: its end writes this too.
            self.carried
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(entry);
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(writes);
        } else {
            writes.push(self.with_carried(vec![entry])?);
            self.journal.store().apply(writes).await?;
        }
        self.completed(key, reference);
        Ok(())
    }

    /// The journaled output of `key`, or `work`'s, journaled (started, then completed).
    pub(super) fn memo<'a>(
        &'a self,
        key: &'a str,
        work: impl Future<Output = Result<String, WorkflowError>> + 'a,
    ) -> impl Future<Output = Result<String, WorkflowError>> + 'a {
        self.memo_with(key, async { Ok((work.await?, Vec::new())) })
    }

    /// [`memo`](Self::memo) of a `work` that yields writes of its own too, sent in the batch
    /// that journals its completion. `work` is boxed first (see
    /// [`interruptible`](Self::interruptible)).
    pub(super) fn memo_with<'a>(
        &'a self,
        key: &'a str,
        work: impl Future<Output = Result<(String, Vec<Write>), WorkflowError>> + 'a,
    ) -> impl Future<Output = Result<String, WorkflowError>> + 'a {
        let work = Box::pin(work);
        async move {
            if let Some(output) = self.replayed(key).await? {
                return Ok(output);
            }
            self.start(key).await?;
            let (output, with) = work.await?;
            self.complete_with(key, &output, with).await?;
            Ok(output)
        }
    }

    pub(super) async fn note(&self, key: &str, detail: String) -> Result<(), WorkflowError> {
        tracing::info!(step = key, "{detail}");
        self.journal
            .append(&Entry::new(key, EntryKind::Note).detail(detail))
            .await
    }

    pub(super) async fn set_status(&self, status: RunStatus) -> Result<(), WorkflowError> {
        let record = {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            if record.status == status {
                return Ok(());
            }
            record.status = status;
            record.updated_ms = now_ms();
            record.clone()
        };
        self.journal.save_record(&record).await
    }

    /// A deadline journaled for `key` (the first time: now + `after`).
    pub(super) async fn deadline(&self, key: &str, after: Duration) -> Result<u64, WorkflowError> {
        let known = self
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadlines
            .get(key)
            .copied();
        if let Some(until) = known {
            return Ok(until);
        }
        let until = now_ms() + u64::try_from(after.as_millis()).unwrap_or(u64::MAX / 2);
        let mut entry = Entry::new(key, EntryKind::Waiting);
        entry.until = Some(until);
        self.journal.append(&entry).await?;
        Ok(until)
    }
}
