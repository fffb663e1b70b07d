//! `RunActor`: one workflow run. Started (under a panic guard) by the
//! [`RouterActor`](super::router::RouterActor), which supervises it: a run that panics is
//! started again from its journal, at most a few times. Takes [`SignalRun`] (cancel, shutdown,
//! lease lost) and [`WorkCompletedEvent`] (a pool item running one of its calls ended).
//!
//! The run's driver replays the journal first: a step or call whose `completed` entry is in
//! the journal is not run again, its output is read back. Everything else runs, and is
//! journaled — `started` before the agent is called, `completed` before the run moves on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use tokio::sync::{oneshot, watch};
use tracing::Instrument as _;
use troupe_config::{RouteTarget, StepKind, StepSettings, WorkflowSettings};
use troupe_runtime::limit::{LimitError, Scope};
use troupe_runtime::pool::{Pool, PoolError, WorkCompletedEvent, WorkId, WorkOutcome, WorkSpec};

use super::env::{Env, Fresh};
use super::error::WorkflowError;
use super::journal::{
    call_id, lease_key, now_ms, Entry, EntryKind, Journal, OutputRef, Replay, RunRecord, RunStatus,
    Snapshot,
};
use super::label::{parse_label, parse_score};
use super::pool_call::{answer_of, Call, CallFailure, WORKFLOW_CALL};
use super::template::{render, StepOutput};

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

/// Tells a run to stop (see [`Signal`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SignalRun(pub Signal);

/// Who awaits which pool item: item id -> where to send its outcome.
type Waiting = Arc<Mutex<HashMap<WorkId, oneshot::Sender<WorkOutcome>>>>;

/// The pool items a run awaits, and the run actor's recipient that pools notify.
#[derive(Clone)]
struct Completions {
    waiting: Waiting,
    recipient: Recipient<WorkCompletedEvent>,
}

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
        let span = tracing::info_span!("workflow.run", run = %self.run, group = %self.group);
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
    match execute(&env, &journal, fresh, signal.clone(), completions).await {
        Ok(status) => tracing::info!(status = status.as_str(), "workflow run ended"),
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
    if *signal.borrow() != Signal::LeaseLost {
        if let Err(err) = env
            .store
            .release_lease(&lease_key(&run), &env.options.owner)
            .await
        {
            tracing::warn!(error = %err, "could not release a run lease; it will expire");
        }
    }
    env.endings.ended(&run);
}

async fn execute(
    env: &Arc<Env>,
    journal: &Journal,
    fresh: Option<Box<Fresh>>,
    signal: watch::Receiver<Signal>,
    completions: Completions,
) -> Result<RunStatus, WorkflowError> {
    // A run this daemon just submitted is as it wrote it: nothing to read back or replay.
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
        return Ok(record.status);
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
    journal
        .append(&Entry::new("", EntryKind::Adopted).detail(env.options.owner.clone()))
        .await?;
    let mut stored = Vec::new();
    for entry in &entries {
        if let Some(OutputRef::Stored { hash, .. }) = &entry.output {
            stored.push(hash.clone());
        }
    }
    let order: Vec<String> = snapshot
        .definitions
        .get(&record.workflow)
        .map(|d| d.steps.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let replay = Replay::fold(&entries, &order);
    let resumed = replay.completed.len();
    if resumed > 0 {
        tracing::info!(
            completed = resumed,
            "resuming: completed steps are not run again"
        );
    }
    let cancel_requested = env.store.exists(&journal.cancel_key()).await?;
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
    journal
        .append(&Entry::new("", EntryKind::Finished).detail(record.status.as_str()))
        .await?;
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
    journal
        .finish(&record, &stored, &threads, env.options.retention)
        .await?;
    Ok(record.status)
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

/// The state of one execution of a run.
struct Exec {
    env: Arc<Env>,
    journal: Journal,
    record: Mutex<RunRecord>,
    snapshot: Arc<Snapshot>,
    replay: Mutex<Replay>,
    /// Hashes of outputs stored apart from the journal (they expire with it).
    stored: Mutex<Vec<String>>,
    /// The threads of the run's calls, journaled earlier or made now (they expire with it).
    threads: Mutex<BTreeSet<String>>,
    signal: watch::Receiver<Signal>,
    completions: Completions,
}

impl Exec {
    fn record(&self) -> RunRecord {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An error if the run must stop.
    fn check(&self) -> Result<(), WorkflowError> {
        match *self.signal.borrow() {
            Signal::Go => Ok(()),
            Signal::Cancel => Err(WorkflowError::Canceled),
            Signal::Shutdown => Err(WorkflowError::Interrupted("the daemon is shutting down")),
            Signal::LeaseLost => Err(WorkflowError::Interrupted("the run's lease was lost")),
        }
    }

    /// Runs `fut` unless the run is told to stop first.
    async fn interruptible<T>(&self, fut: impl Future<Output = T>) -> Result<T, WorkflowError> {
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

    /// The journaled output of `key`, if it completed.
    async fn replayed(&self, key: &str) -> Result<Option<String>, WorkflowError> {
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

    async fn begin(&self, key: &str, detail: Option<String>) -> Result<(), WorkflowError> {
        self.check()?;
        let mut entry = Entry::new(key, EntryKind::Started);
        entry.detail = detail;
        self.journal.append(&entry).await?;
        if let Some(hook) = &self.env.options.on_step_start {
            (hook.0)(key);
        }
        Ok(())
    }

    async fn complete(&self, key: &str, output: &str) -> Result<(), WorkflowError> {
        let reference = self.journal.put_output(output).await?;
        if let OutputRef::Stored { hash, .. } = &reference {
            self.stored
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(hash.clone());
        }
        let mut entry = Entry::new(key, EntryKind::Completed);
        entry.output = Some(reference.clone());
        self.journal.append(&entry).await?;
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .completed
            .insert(key.to_owned(), reference);
        Ok(())
    }

    /// The journaled output of `key`, or `work`'s, journaled (started, then completed).
    async fn memo(
        &self,
        key: &str,
        work: impl Future<Output = Result<String, WorkflowError>>,
    ) -> Result<String, WorkflowError> {
        if let Some(output) = self.replayed(key).await? {
            return Ok(output);
        }
        self.begin(key, None).await?;
        let output = work.await?;
        self.complete(key, &output).await?;
        Ok(output)
    }

    async fn note(&self, key: &str, detail: String) -> Result<(), WorkflowError> {
        tracing::info!(step = key, "{detail}");
        self.journal
            .append(&Entry::new(key, EntryKind::Note).detail(detail))
            .await
    }

    async fn set_status(&self, status: RunStatus) -> Result<(), WorkflowError> {
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
    async fn deadline(&self, key: &str, after: Duration) -> Result<u64, WorkflowError> {
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

    /// Runs workflow `name` (the run's, or a child's with journal keys under `prefix`).
    fn workflow<'a>(
        &'a self,
        name: &'a str,
        prefix: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            let def: &WorkflowSettings =
                self.snapshot
                    .definitions
                    .get(name)
                    .ok_or_else(|| WorkflowError::NotFound {
                        what: "workflow",
                        id: name.to_owned(),
                    })?;
            let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
            let mut previous = input.to_owned();
            let mut index = 0;
            while let Some(step) = def.steps.get(index) {
                let key = format!("{prefix}{}", step.name);
                let span = tracing::info_span!(
                    "workflow.step",
                    workflow = name,
                    run = %self.record().id,
                    step = %key,
                    group = %self.record().group,
                );
                let text = match &step.input {
                    Some(template) => render(template, input, &outputs).map_err(|source| {
                        WorkflowError::Template {
                            step: key.clone(),
                            source,
                        }
                    })?,
                    None => previous.clone(),
                };
                let (output, jump) = self
                    .step(step, &key, &text, &outputs)
                    .instrument(span)
                    .await?;
                previous = output.output.clone();
                outputs.insert(step.name.clone(), output);
                index = match jump {
                    Some(target) => def.steps.iter().position(|s| s.name == target).ok_or(
                        WorkflowError::NotFound {
                            what: "step",
                            id: target,
                        },
                    )?,
                    None => index + 1,
                };
            }
            Ok(previous)
        }
        .boxed()
    }

    /// Runs one step; returns its output and the step to jump to, if it routes to one.
    fn step<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        text: &'a str,
        outputs: &'a BTreeMap<String, StepOutput>,
    ) -> BoxFuture<'a, Result<(StepOutput, Option<String>), WorkflowError>> {
        async move {
        let plain = |output: String| StepOutput {
            output,
            branches: BTreeMap::new(),
        };
        match &step.kind {
            StepKind::Agent { agent } => {
                let output = self.call(step, key, agent, text).await?;
                Ok((plain(output), None))
            }
            StepKind::Parallel {
                agents,
                max_concurrency,
            } => {
                let done = self.replayed(key).await?.is_some();
                if !done {
                    self.begin(key, None).await?;
                }
                let width = max_concurrency.unwrap_or(agents.len()).max(1);
                let calls: Vec<_> = agents
                    .iter()
                    .map(|agent| async move {
                        let branch_key = format!("{key}/{agent}");
                        let output = self.call(step, &branch_key, agent, text).await?;
                        Ok::<_, WorkflowError>((agent.clone(), output))
                    })
                    .collect();
                let branches: Vec<(String, String)> = futures::stream::iter(calls)
                    .buffered(width)
                    .try_collect()
                    .await?;
                let output = branches
                    .iter()
                    .map(|(agent, output)| format!("[{agent}]\n{output}"))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                if !done {
                    self.complete(key, &output).await?;
                }
                Ok((
                    StepOutput {
                        output,
                        branches: branches.into_iter().collect(),
                    },
                    None,
                ))
            }
            StepKind::Route {
                on,
                routes,
                default,
            } => {
                let answer = outputs
                    .get(on)
                    .map(|o| o.output.clone())
                    .unwrap_or_default();
                let labels: Vec<&str> = routes.keys().map(String::as_str).collect();
                let label_key = format!("{key}/label");
                let label = self
                    .memo(&label_key, async {
                        Ok(match parse_label(&answer, &labels) {
                            Some(label) => {
                                self.note(key, format!("label {label:?} read from {answer:?}"))
                                    .await?;
                                label.to_owned()
                            }
                            None => {
                                self.note(
                                    key,
                                    format!("no label in {answer:?}: taking the default branch"),
                                )
                                .await?;
                                String::new()
                            }
                        })
                    })
                    .await?;
                let target = routes.get(&label).or(default.as_ref()).ok_or_else(|| {
                    WorkflowError::NoRoute {
                        step: key.to_owned(),
                        answer: answer.clone(),
                    }
                })?;
                let mut branches = BTreeMap::new();
                branches.insert("label".to_owned(), label);
                match target {
                    RouteTarget::Agent(agent) => {
                        let output = self.call(step, key, agent, text).await?;
                        Ok((StepOutput { output, branches }, None))
                    }
                    RouteTarget::Step(target) => {
                        let output = self.memo(key, async { Ok(text.to_owned()) }).await?;
                        Ok((StepOutput { output, branches }, Some(target.clone())))
                    }
                }
            }
            StepKind::Loop {
                agent,
                scorers,
                until_score,
                max_iterations,
            } => {
                let done = self.replayed(key).await?.is_some();
                if !done {
                    self.begin(key, None).await?;
                }
                let mut current = text.to_owned();
                let mut branches = BTreeMap::new();
                for iteration in 0..=*max_iterations {
                    let scoring = format!(
                        "SCORE the text below from 0 to 1; answer with the number, then why.\n\n{current}"
                    );
                    let scoring = &scoring;
                    let calls: Vec<_> = scorers
                        .iter()
                        .map(|scorer| async move {
                            let sub = format!("{key}/{iteration}/{scorer}");
                            let answer = self.call(step, &sub, scorer, scoring).await?;
                            Ok::<_, WorkflowError>((scorer.clone(), answer))
                        })
                        .collect();
                    let answers: Vec<(String, String)> =
                        futures::future::try_join_all(calls).await?;
                    let mut low = Vec::new();
                    for (scorer, answer) in &answers {
                        let score = parse_score(answer);
                        if score.is_none_or(|s| s < *until_score) {
                            low.push(format!(
                                "{scorer} ({}): {answer}",
                                score.map_or("no score".to_owned(), |s| format!("{s:.2}"))
                            ));
                        }
                        branches.insert(scorer.clone(), answer.clone());
                    }
                    if low.is_empty() {
                        break;
                    }
                    if iteration == *max_iterations {
                        if !done {
                            self.note(
                                key,
                                format!("bound reached after {max_iterations} refinements"),
                            )
                            .await?;
                        }
                        break;
                    }
                    let refine = format!(
                        "REFINE the text below to answer this feedback:\n{}\n\nText:\n{current}",
                        low.join("\n")
                    );
                    let sub = format!("{key}/{iteration}/{agent}");
                    current = self.call(step, &sub, agent, &refine).await?;
                }
                if !done {
                    self.complete(key, &current).await?;
                }
                Ok((
                    StepOutput {
                        output: current,
                        branches,
                    },
                    None,
                ))
            }
            StepKind::Sleep { duration } => {
                if let Some(output) = self.replayed(key).await? {
                    return Ok((plain(output), None));
                }
                self.begin(key, None).await?;
                let until = self.deadline(key, *duration).await?;
                let left = Duration::from_millis(until.saturating_sub(now_ms()));
                self.interruptible(tokio::time::sleep(left)).await?;
                self.complete(key, text).await?;
                Ok((plain(text.to_owned()), None))
            }
            StepKind::WaitEvent { event } => {
                if let Some(output) = self.replayed(key).await? {
                    return Ok((plain(output), None));
                }
                self.begin(key, Some(format!("waiting for event {event:?}")))
                    .await?;
                let until = match step.timeout {
                    Some(timeout) => Some(self.deadline(key, timeout).await?),
                    None => None,
                };
                self.set_status(RunStatus::Waiting).await?;
                let data = loop {
                    self.check()?;
                    if let Some(data) = self.journal.event(event).await? {
                        break data;
                    }
                    let now = now_ms();
                    if until.is_some_and(|until| now >= until) {
                        return Err(WorkflowError::EventTimeout {
                            step: key.to_owned(),
                            event: event.clone(),
                        });
                    }
                    let left = until.map_or(u64::MAX, |until| until - now);
                    let poll = self.env.options.event_poll;
                    let nap = poll.min(Duration::from_millis(left));
                    self.interruptible(tokio::time::sleep(nap)).await?;
                };
                self.set_status(RunStatus::Running).await?;
                self.complete(key, &data).await?;
                Ok((plain(data), None))
            }
            StepKind::Knowledge { namespace, top_k } => {
                let output = self
                    .memo(key, self.knowledge(key, namespace.as_deref(), *top_k, text))
                    .await?;
                let branches = troupe_agents::rag::knowledge_branches(&output);
                Ok((StepOutput { output, branches }, None))
            }
            StepKind::Workflow { workflow } => {
                let done = self.replayed(key).await?;
                if let Some(output) = done {
                    return Ok((plain(output), None));
                }
                self.begin(key, None).await?;
                let prefix = format!("{key}/");
                let output = self.workflow(workflow, &prefix, text).await?;
                self.complete(key, &output).await?;
                Ok((plain(output), None))
            }
        }
        }
        .boxed()
    }

    /// Searches the run's group's knowledge base with `query`: the passages found, numbered,
    /// then their sources (or a line saying nothing matched).
    async fn knowledge(
        &self,
        key: &str,
        namespace: Option<&str>,
        top_k: Option<usize>,
        query: &str,
    ) -> Result<String, WorkflowError> {
        let group = self.record().group;
        let caller = troupe_agents::rag::Caller::new(&group, "workflow", key);
        let mut request = troupe_agents::rag::SearchRequest::text(query);
        request.namespace = namespace.map(str::to_owned);
        request.top_k = top_k;
        let failed = |source| WorkflowError::Knowledge {
            step: key.to_owned(),
            source,
        };
        let hits = self
            .interruptible(self.env.rag.search(&caller, request))
            .await?
            .map_err(failed)?;
        tracing::info!(hits = hits.len(), "knowledge searched");
        Ok(if hits.is_empty() {
            troupe_agents::rag::NO_PASSAGE.to_owned()
        } else {
            troupe_agents::rag::format_hits(&hits)
        })
    }

    /// Asks `agent` with `input` in the call's own thread, with the step's retries, timeout,
    /// pool and limits; journaled under `key`. A step with a pool hands the call to the pool,
    /// whose retry policy then applies (the step's `retries`, when set, are its attempts).
    fn call<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        agent: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            self.memo(key, async {
                let attempts = if step.pool.is_some() {
                    1
                } else {
                    step.retries.unwrap_or(0) + 1
                };
                let mut attempt = 1;
                loop {
                    match self.attempt(step, key, agent, input).await {
                        Ok(answer) => return Ok(answer),
                        // Failures while the run is being stopped are the stop, not the step's.
                        Err(_) if self.check().is_err() => self.check()?,
                        Err(err) if attempt < attempts && err.is_retryable() => {
                            self.journal
                                .append(
                                    &Entry::new(key, EntryKind::AttemptFailed)
                                        .detail(format!("attempt {attempt}: {err}")),
                                )
                                .await?;
                            let backoff = Duration::from_millis(200 * (1 << attempt.min(5)));
                            self.interruptible(tokio::time::sleep(backoff)).await?;
                            attempt += 1;
                        }
                        Err(err) => return Err(err),
                    }
                }
            })
            .await
        }
        .boxed()
    }

    fn attempt<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        agent: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            let record = self.record();
            if let Some(limiters) = &self.env.limiters {
                for limit in &step.limits {
                    let scope = Scope {
                        group: &record.group,
                        user: Some(&record.user),
                    };
                    let agent_error = |source: LimitError| WorkflowError::Agent {
                        step: key.to_owned(),
                        source: source.into(),
                    };
                    let limit_key = limiters.key_for(limit, scope).map_err(agent_error)?;
                    self.interruptible(limiters.acquire(limit, &limit_key, 1, None))
                        .await?
                        .map_err(agent_error)?;
                }
            }
            let thread = call_id(&record.id, record.restarts, key);
            self.threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(thread.clone());
            let call = Call {
                workflow: record.workflow.clone(),
                run: record.id.clone(),
                step: key.to_owned(),
                group: record.group.clone(),
                user: record.user.clone(),
                agent: agent.to_owned(),
                thread,
                input: input.to_owned(),
                timeout_ms: step
                    .timeout
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            };
            if let Some(name) = &step.pool {
                let pool = self
                    .env
                    .pools
                    .get(name)
                    .ok_or_else(|| WorkflowError::NotFound {
                        what: "pool",
                        id: name.clone(),
                    })?;
                return self.pooled(pool, step, call).await;
            }
            self.interruptible(call.perform(&self.env.talk))
                .await?
                .map_err(|failure| failed(key, failure))
        }
        .boxed()
    }

    /// Runs `call` as a work item of `pool` and awaits its end. The item's id is the call's
    /// thread: a call made again (its run was adopted after a crash) finds the item of the
    /// first attempt, running or ended, instead of asking the agent again.
    async fn pooled(
        &self,
        pool: &Pool,
        step: &StepSettings,
        call: Call,
    ) -> Result<String, WorkflowError> {
        let key = call.step.clone();
        let id: WorkId = call.thread.clone();
        let pool_error = |source: PoolError| WorkflowError::Pool {
            step: key.clone(),
            source,
        };
        let payload = serde_json::to_value(&call).map_err(|err| WorkflowError::Invalid {
            what: "workflow call",
            message: err.to_string(),
        })?;
        let (tx, mut rx) = oneshot::channel();
        self.completions
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let mut spec = WorkSpec::new(WORKFLOW_CALL, payload)
            .id(id.clone())
            .notify(self.completions.recipient.clone());
        if let Some(retries) = step.retries {
            spec = spec.max_attempts(retries + 1);
        }
        let outcome = async {
            match pool.enqueue(spec).await {
                Ok(_) | Err(PoolError::Duplicate { .. }) => {}
                Err(err) => return Err(pool_error(err)),
            }
            loop {
                // The record first: the item may have ended already (taken over, or ended by
                // another daemon's pool, which does not notify this run).
                let record = pool.record(&id).await.map_err(pool_error)?;
                if let Some(outcome) = record.and_then(|r| r.outcome()) {
                    return Ok(outcome);
                }
                tokio::select! {
                    notified = &mut rx => if let Ok(outcome) = notified {
                        return Ok(outcome);
                    },
                    () = tokio::time::sleep(self.env.options.pool_poll) => {}
                }
            }
        };
        let outcome = self.interruptible(outcome).await;
        self.completions
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Err(WorkflowError::Canceled) = &outcome {
            // Best effort: a canceled run does not need the answer.
            let _ = pool.cancel(&id).await;
        }
        match outcome?? {
            WorkOutcome::Succeeded { output } => match answer_of(&output) {
                Some(answer) => Ok(answer.to_owned()),
                None => Err(WorkflowError::PoolCall {
                    step: key,
                    pool: pool.name().to_owned(),
                    error: format!("the item's output has no answer: {output}"),
                }),
            },
            WorkOutcome::Failed { error } => Err(WorkflowError::PoolCall {
                step: key,
                pool: pool.name().to_owned(),
                error,
            }),
            WorkOutcome::Canceled => Err(WorkflowError::PoolCall {
                step: key,
                pool: pool.name().to_owned(),
                error: "the item was canceled".to_owned(),
            }),
        }
    }
}

/// A failed call as the run's error.
fn failed(key: &str, failure: CallFailure) -> WorkflowError {
    match failure {
        CallFailure::Agent(source) => WorkflowError::Agent {
            step: key.to_owned(),
            source,
        },
        CallFailure::Timeout(after) => WorkflowError::Timeout {
            step: key.to_owned(),
            after,
        },
        CallFailure::NoAnswer(status) => WorkflowError::NoAnswer {
            step: key.to_owned(),
            status: status.to_owned(),
        },
    }
}
