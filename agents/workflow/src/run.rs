//! `RunActor`: one workflow run. Started (under a panic guard) by the
//! [`RouterActor`](super::router::RouterActor), which supervises it: a run that panics is
//! started again from its journal, at most a few times. Takes [`SignalRun`] (cancel, shutdown,
//! lease lost) and [`WorkCompletedEvent`] (a pool item running one of its calls ended).
//!
//! The run's driver replays the journal first: a step or call whose `completed` entry is in
//! the journal is not run again, its output is read back. Everything else runs, and is
//! journaled — `started` before the agent is called, `completed` before the run moves on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use tokio::sync::watch;
use tracing::Instrument as _;
use troupe_runtime::pool::WorkCompletedEvent;
use troupe_runtime::store::Write;

use super::env::{Env, Fresh};
use super::error::WorkflowError;
use super::journal::{
    call_id, lease_key, now_ms, Entry, EntryKind, Journal, OutputRef, Replay, RunRecord, RunStatus,
};
use crate::exec::{Completions, Exec, Signal, Waiting};

/// Tells a run to stop (see [`Signal`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SignalRun(pub Signal);

/// One run (see the module documentation).
pub struct RunActor {
    env: Arc<Env>,
    group: String,
    run: String,
    fresh: Option<Box<Fresh>>,
    signal: watch::Sender<Signal>,
    waiting: Waiting,
}

impl RunActor {
    /// The actor of run `run` of `group`; `fresh` when this daemon just submitted it.
    pub(crate) fn new(
        env: Arc<Env>,
        group: String,
        run: String,
        fresh: Option<Box<Fresh>>,
    ) -> Self {
        let (signal, _) = watch::channel(Signal::Go);
        RunActor {
            env,
            group,
            run,
            fresh,
            signal,
            waiting: Arc::default(),
        }
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let span = tracing::info_span!(troupe_runtime::trace::span::WORKFLOW_RUN, run = %self.run, group = %self.group);
        if let Some(fresh) = &self.fresh {
            // Submitted here (for an ingress task, say): linked, not a child, since a run
            // outlives its submitter and may be adopted by another daemon.
            span.follows_from(&fresh.span);
        }
        let completions = Completions {
            waiting: self.waiting.clone(),
            recipient: ctx.address().recipient(),
        };
        let driver = drive(
            self.env.clone(),
            self.group.clone(),
            self.run.clone(),
            self.fresh.take(),
            self.signal.subscribe(),
            completions,
        )
        .instrument(span);
        ctx.spawn(driver.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

impl Handler<SignalRun> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: SignalRun, _: &mut Self::Context) {
        // Cancel does not override a shutdown or a lost lease: those leave the run open.
        if *self.signal.borrow() == Signal::Go || msg.0 != Signal::Cancel {
            self.signal.send_replace(msg.0);
        }
    }
}

impl Handler<WorkCompletedEvent> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: WorkCompletedEvent, _: &mut Self::Context) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&msg.id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(msg.outcome);
        }
    }
}

/// Runs `run` to its end (or until told to stop), then releases its lease unless it was lost.
async fn drive(
    env: Arc<Env>,
    group: String,
    run: String,
    fresh: Option<Box<Fresh>>,
    signal: watch::Receiver<Signal>,
    completions: Completions,
) {
    let journal = Journal::new(env.store.clone(), &group, &run);
    let mut released = false;
    match execute(&env, &journal, fresh, signal.clone(), completions).await {
        Ok(Ended::Finished(status)) => {
            // Its lease was dropped in the batch that ended it.
            released = true;
            tracing::info!(status = status.as_str(), "workflow run ended");
        }
        Ok(Ended::Closed(status)) => tracing::info!(status = status.as_str(), "workflow run ended"),
        Err(err) if err.leaves_run_open() => {
            tracing::info!(reason = %err, "workflow run left for later")
        }
        Err(err) => {
            tracing::error!(error = %err, "workflow run cannot be loaded or finished; failing it");
            if let Err(err) = fail_broken(&env, &journal, &err).await {
                tracing::error!(error = %err, "could not fail a broken workflow run");
            }
        }
    }
    if !released && *signal.borrow() != Signal::LeaseLost {
        if let Err(err) = env
            .store
            .release_lease(&lease_key(&run), &env.options.owner)
            .await
        {
            tracing::warn!(error = %err, "could not release a run lease; it will expire");
        }
    }
    env.waiters.endings.ended(&run);
}

/// How [`execute`] ended a run.
enum Ended {
    /// Run to its end here: the batch that ended it dropped its lease.
    Finished(RunStatus),
    /// Found ended already (its index entry was left): taken out of the index.
    Closed(RunStatus),
}

async fn execute(
    env: &Arc<Env>,
    journal: &Journal,
    fresh: Option<Box<Fresh>>,
    signal: watch::Receiver<Signal>,
    completions: Completions,
) -> Result<Ended, WorkflowError> {
    // A run this daemon just submitted is as it wrote it: nothing to read back or replay.
    let is_fresh = fresh.is_some();
    let (mut record, snapshot, entries) = match fresh {
        Some(fresh) => {
            let Fresh {
                record, snapshot, ..
            } = *fresh;
            (record, snapshot, Vec::new())
        }
        None => (
            journal.require_record().await?,
            Arc::new(journal.snapshot().await?),
            journal.entries().await?,
        ),
    };
    if record.status.is_terminal() {
        // Ended, then interrupted before leaving the index: its end (and result) is written.
        journal.close(env.options.retention).await?;
        return Ok(Ended::Closed(record.status));
    }
    let current = env.snapshots.hash(&record.workflow);
    if current != Some(snapshot.hash.as_str()) {
        let now = current.unwrap_or("none (removed from the config)");
        tracing::warn!(
            workflow = %record.workflow,
            snapshot = %snapshot.hash,
            config = %now,
            "workflow definition changed since the run started: continuing with the run's snapshot"
        );
        let note = format!(
            "definition changed (run {}, config {now}): continuing with the run's snapshot",
            snapshot.hash
        );
        journal
            .append(&Entry::new("", EntryKind::Note).detail(note))
            .await?;
    }
    // Journaled with the run's next write.
    let adopted = Entry::new("", EntryKind::Adopted).detail(env.options.owner.clone());
    let mut stored = Vec::new();
    for entry in &entries {
        if let Some(OutputRef::Stored { hash, .. }) = &entry.output {
            stored.push(hash.clone());
        }
    }
    let order = snapshot.top_steps(&record.workflow);
    let last_call = snapshot.last_call(&record.workflow).map(str::to_owned);
    let replay = Replay::fold(&entries, &order);
    let resumed = replay.completed.len();
    if resumed > 0 {
        tracing::info!(
            completed = resumed,
            "resuming: completed steps are not run again"
        );
    }
    // A run just submitted here has no cancel yet; one requested from now on reaches it by
    // its notice (or the next scan).
    let cancel_requested = !is_fresh && env.store.exists(&journal.cancel_key()).await?;
    let exec = Exec {
        env: env.clone(),
        journal: journal.clone(),
        record: Mutex::new(record.clone()),
        snapshot,
        replay: Mutex::new(replay),
        stored: Mutex::new(stored),
        threads: Mutex::new(call_threads(&record, &entries)),
        signal,
        completions,
        carried: Mutex::new(vec![adopted]),
        begun: Mutex::new(BTreeSet::new()),
        last_call,
        held: Mutex::new(Vec::new()),
    };
    let result = if cancel_requested {
        Err(WorkflowError::Canceled)
    } else {
        exec.workflow(&record.workflow, "", &record.input).await
    };
    record = exec.record();
    match result {
        Ok(output) => {
            record.status = RunStatus::Completed;
            record.output = Some(output);
        }
        Err(WorkflowError::Canceled) => record.status = RunStatus::Canceled,
        Err(err) if err.leaves_run_open() => return Err(err),
        Err(err) => {
            tracing::warn!(error = %err, "workflow run failed");
            record.status = RunStatus::Failed;
            record.error = Some(err.to_string());
        }
    }
    record.updated_ms = now_ms();
    let mut last = exec.take_carried();
    last.push(Entry::new("", EntryKind::Finished).detail(record.status.as_str()));
    let stored = exec
        .stored
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let threads: Vec<String> = exec
        .threads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    // The lease goes with the end: no one adopts a run out of the index.
    let lease = Write::Del {
        key: lease_key(&record.id),
    };
    // Flags written by older daemons have no expiry of their own: a canceled run's, and the
    // events of a run that can wait for some, go with it.
    let signaled = record.status == RunStatus::Canceled || exec.snapshot.waits_for_events();
    journal
        .finish_with(
            &record,
            &stored,
            &threads,
            env.options.retention,
            (exec.take_held(), &last, vec![lease]),
            signaled,
        )
        .await?;
    Ok(Ended::Finished(record.status))
}

/// Fails a run that cannot be loaded or finished (a missing or corrupt record, snapshot or
/// journal entry) with `why`, once: its record (when one can be read) says failed with the
/// reason, its task (if any) is answered, and it leaves the index of unfinished runs, so no
/// daemon adopts it again.
async fn fail_broken(
    env: &Env,
    journal: &Journal,
    why: &WorkflowError,
) -> Result<(), WorkflowError> {
    let record = match journal.record().await {
        Ok(record) => record,
        Err(err) => {
            tracing::warn!(error = %err, "the broken run's record cannot be read either");
            None
        }
    };
    match record {
        Some(mut record) if !record.status.is_terminal() => {
            record.status = RunStatus::Failed;
            record.error = Some(format!("the run cannot be loaded or finished: {why}"));
            record.updated_ms = now_ms();
            journal
                .finish(&record, &[], &[], env.options.retention)
                .await
        }
        _ => journal.close(env.options.retention).await,
    }
}

/// The threads of the calls journaled in `entries` (each started step's [`call_id`] under the
/// restart count of its time; ids of steps that made no call name no keys and cost nothing).
fn call_threads(record: &RunRecord, entries: &[Entry]) -> BTreeSet<String> {
    let mut restarts = 0;
    let mut threads = BTreeSet::new();
    for entry in entries {
        match entry.kind {
            EntryKind::Restarted => restarts += 1,
            EntryKind::Started if !entry.step.is_empty() => {
                threads.insert(call_id(&record.id, restarts, &entry.step));
            }
            _ => {}
        }
    }
    threads
}
