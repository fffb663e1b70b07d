//! [`RouterActor`]: the actor that adopts, runs and supervises workflow runs.
//!
//! [`RouterActor`] is the child `router` of the `workflows` supervisor. It takes [`ScanRuns`]
//! (look for runs to adopt now) and [`RunEndedEvent`] (sent when one of its runs ends). It
//! tails the run notices ([`crate::notices`]): a run opened by any process is adopted at its
//! `opened` notice (its lease taken if it is free and there is room), a cancel reaches the run
//! at its `canceled` notice, an event wakes the run's wait, an end wakes this daemon's
//! waiters. Every `scan` interval — the safety net, for a crashed daemon's runs (their leases
//! expire) and missed notices — it reads the index of unfinished runs and the lease keys of
//! the runs it does not have (one `MGET` per [`LEASES_PER_READ`]), takes the leases that are
//! free — at most `max_runs`, at most `max_runs_per_group` of one group — and starts a
//! [`RunActor`] for each, under a panic guard; it signals its runs when a cancel is
//! requested. Every third of the lease, on a timer of its own, it renews the leases
//! of all its runs in one round trip, and stops the runs whose lease was lost. A run that
//! panics is started again from its journal, at most [`MAX_RUN_PANICS`] times, then failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use troupe_runtime::detach::{detach, Resume};
use troupe_runtime::{Exit, Life, Spawn};

use super::messages::{AdoptRun, CountRuns, Noticed, RunEndedEvent, ScanRuns, StopRuns};
use crate::env::{Env, Fresh};
use crate::error::WorkflowError;
use crate::exec::Signal;
use crate::journal::{
    lease_key, now_ms, open_runs, Entry, EntryKind, Journal, RunStatus, OPEN_INDEX,
};
use crate::notices::{Notice, Tail};
use crate::run::{RunActor, SignalRun};

/// A run that panics this many times is failed instead of started again.
pub const MAX_RUN_PANICS: u32 = 3;

struct Owned {
    group: String,
    addr: Addr<RunActor>,
    life: Life,
}

/// The router actor (see the module documentation).
pub struct RouterActor {
    env: Arc<Env>,
    owned: HashMap<String, Owned>,
    panics: HashMap<String, u32>,
    scanning: bool,
    /// A scan was asked for while one ran: another starts when it ends.
    rescan: bool,
    renewing: bool,
    stopping: bool,
    /// Runs whose lease is being taken to adopt them, not yet in `owned`, by group.
    adopting: HashMap<String, usize>,
    /// How many of `owned` each group has.
    running: HashMap<String, usize>,
    /// Runs started so far (picks their arbiter).
    started: usize,
}

/// How many lease keys a scan reads per round trip.
const LEASES_PER_READ: usize = 512;

/// How long one read of the notices waits for one.
const NOTICE_BLOCK: Duration = Duration::from_secs(5);

impl RouterActor {
    pub(crate) fn new(env: Arc<Env>) -> Self {
        RouterActor {
            env,
            owned: HashMap::new(),
            panics: HashMap::new(),
            scanning: false,
            rescan: false,
            renewing: false,
            stopping: false,
            adopting: HashMap::new(),
            running: HashMap::new(),
            started: 0,
        }
    }

    /// Runs this daemon has or is adopting, by group.
    fn load(&self) -> HashMap<String, usize> {
        let mut load = self.adopting.clone();
        for (group, n) in &self.running {
            *load.entry(group.clone()).or_default() += n;
        }
        load
    }

    /// Runs of `group` this daemon has or is adopting.
    fn group_load(&self, group: &str) -> usize {
        self.running.get(group).copied().unwrap_or(0)
            + self.adopting.get(group).copied().unwrap_or(0)
    }

    /// Takes `run` out of the runs this daemon has.
    fn disown(&mut self, run: &str) -> Option<Owned> {
        let owned = self.owned.remove(run)?;
        if let Some(n) = self.running.get_mut(&owned.group) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&owned.group);
            }
        }
        Some(owned)
    }

    /// Runs this daemon has or is adopting.
    fn count(&self) -> usize {
        self.owned.len() + self.adopting.values().sum::<usize>()
    }

    /// Renews the leases of every run this daemon has, in one round trip, on its own timer
    /// (whatever a scan costs); runs whose lease was lost are told to stop.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        if self.renewing || self.owned.is_empty() {
            return;
        }
        self.renewing = true;
        let env = self.env.clone();
        let runs: Vec<String> = self.owned.keys().cloned().collect();
        let job = async move {
            let keys: Vec<String> = runs.iter().map(|run| lease_key(run)).collect();
            let renewed = env
                .store
                .renew_leases(&keys, &env.options.owner, env.options.lease)
                .await;
            (runs, renewed)
        };
        detach(ctx, job, |act: &mut Self, (runs, renewed), _| {
            act.renewing = false;
            match renewed {
                Ok(renewed) => {
                    for (run, renewed) in runs.iter().zip(renewed) {
                        if renewed {
                            continue;
                        }
                        if let Some(owned) = act.owned.get(run) {
                            tracing::warn!(run = %run, "workflow run lease lost; stopping it here");
                            owned.addr.do_send(SignalRun(Signal::LeaseLost));
                        }
                    }
                }
                // A store error is not a lost lease: the next renewal may succeed.
                Err(err) => tracing::warn!(error = %err, "renewing workflow run leases failed"),
            }
        });
    }

    /// Reads cancel requests of this daemon's runs, and adopts open runs no daemon holds:
    /// the lease keys of the candidates are read in batches ([`LEASES_PER_READ`] a round
    /// trip), and only free ones are taken, so runs other daemons hold cost no round trip
    /// each. A group that has `max_runs_per_group` runs here adopts no more.
    fn scan(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        if self.scanning {
            // What is asked now may have been read already: look again after this one.
            self.rescan = true;
            return;
        }
        self.scanning = true;
        let env = self.env.clone();
        let owned: Vec<(String, String)> = self
            .owned
            .iter()
            .map(|(run, o)| (run.clone(), o.group.clone()))
            .collect();
        let room = env.options.max_runs.saturating_sub(self.count());
        let mut load = self.load();
        let job = async move {
            let store = env.store.as_ref();
            let owner = env.options.owner.as_str();
            let per_group = env.options.max_runs_per_group;
            // Cancels of the runs this daemon has.
            let cancel_keys: Vec<String> = owned
                .iter()
                .map(|(run, group)| Journal::new(env.store.clone(), group, run).cancel_key())
                .collect();
            let cancels = if cancel_keys.is_empty() {
                Vec::new()
            } else {
                store.get_many(&cancel_keys).await.unwrap_or_default()
            };
            let mut cancel = Vec::new();
            for ((run, _), flag) in owned.iter().zip(cancels) {
                if flag.is_some() {
                    cancel.push(run.clone());
                }
            }
            let mut adopted = Vec::new();
            if room == 0 {
                return (cancel, adopted);
            }
            let mine: std::collections::HashSet<&str> =
                owned.iter().map(|(r, _)| r.as_str()).collect();
            let open = match open_runs(store).await {
                Ok(open) => open,
                Err(err) => {
                    tracing::warn!(error = %err, "workflow scan: store error");
                    return (cancel, adopted);
                }
            };
            let candidates: Vec<(String, String)> = open
                .into_iter()
                .filter(|(run, _)| !mine.contains(run.as_str()))
                .collect();
            'batches: for batch in candidates.chunks(LEASES_PER_READ) {
                let wanted: Vec<&(String, String)> = batch
                    .iter()
                    .filter(|(_, group)| load.get(group).copied().unwrap_or(0) < per_group)
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let keys: Vec<String> = wanted.iter().map(|(run, _)| lease_key(run)).collect();
                let holders = match store.get_many(&keys).await {
                    Ok(holders) => holders,
                    Err(err) => {
                        tracing::warn!(error = %err, "workflow scan: store error");
                        break;
                    }
                };
                for ((run, group), holder) in wanted.into_iter().zip(holders) {
                    if adopted.len() >= room {
                        break 'batches;
                    }
                    let free = holder.as_deref().is_none_or(|h| h == owner.as_bytes());
                    if !free || load.get(group).copied().unwrap_or(0) >= per_group {
                        continue;
                    }
                    match store
                        .acquire_lease(&lease_key(run), owner, env.options.lease)
                        .await
                    {
                        Ok(true) => {
                            *load.entry(group.clone()).or_default() += 1;
                            adopted.push((run.clone(), group.clone()));
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "workflow scan: store error");
                            break 'batches;
                        }
                    }
                }
            }
            (cancel, adopted)
        };
        detach(ctx, job, |act: &mut Self, (cancel, adopted), ctx| {
            act.scanning = false;
            if std::mem::take(&mut act.rescan) {
                act.scan(ctx);
            }
            for run in cancel {
                if let Some(owned) = act.owned.get(&run) {
                    owned.addr.do_send(SignalRun(Signal::Cancel));
                }
            }
            for (run, group) in adopted {
                if act.stopping {
                    let env = act.env.clone();
                    ctx.spawn(fut::wrap_future(async move {
                        let _ = env
                            .store
                            .release_lease(&lease_key(&run), &env.options.owner)
                            .await;
                    }));
                    continue;
                }
                act.start_run(ctx, run, group, None);
            }
        });
    }

    /// Starts the actor of `run` (`fresh` when this daemon just submitted it).
    fn start_run(
        &mut self,
        ctx: &mut Context<Self>,
        run: String,
        group: String,
        fresh: Option<Box<Fresh>>,
    ) {
        if self.owned.contains_key(&run) {
            return;
        }
        if fresh.is_none() {
            tracing::info!(run = %run, group = %group, "adopting workflow run");
        }
        let me = ctx.address();
        let ended = run.clone();
        let env = self.env.clone();
        let (id, g) = (run.clone(), group.clone());
        let mut spawn = Spawn::named(format!("run-{run}"));
        let arbiters = &self.env.options.arbiters;
        if !arbiters.is_empty() {
            spawn = spawn.on(arbiters[self.started % arbiters.len()].clone());
        }
        self.started = self.started.wrapping_add(1);
        let (addr, life) = spawn
            .on_exit(move |exit| {
                me.do_send(RunEndedEvent {
                    run: ended,
                    exit: exit.clone(),
                })
            })
            .start(move |_| RunActor::new(env, g, id, fresh));
        *self.running.entry(group.clone()).or_default() += 1;
        self.owned.insert(run, Owned { group, addr, life });
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(owner = %self.env.options.owner, "workflow router started");
        // Listening before the first scan: a run opened in between is not missed.
        ctx.spawn(fut::wrap_future(listen(self.env.clone(), ctx.address())));
        self.scan(ctx);
        ctx.run_interval(self.env.options.scan, |act, ctx| act.scan(ctx));
        let every = (self.env.options.lease / 3).max(Duration::from_millis(10));
        ctx.run_interval(every, |act, ctx| act.renew(ctx));
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        for owned in self.owned.values() {
            owned.addr.do_send(SignalRun(Signal::Shutdown));
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Runs that did not stop by themselves are stopped with the router.
        for owned in self.owned.values() {
            if owned.life.is_alive() {
                owned.life.stop();
            }
        }
    }
}

impl Handler<ScanRuns> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: ScanRuns, ctx: &mut Self::Context) {
        self.scan(ctx);
    }
}

impl Handler<AdoptRun> for RouterActor {
    type Result = ();

    fn handle(&mut self, AdoptRun(fresh): AdoptRun, ctx: &mut Self::Context) {
        let (run, group) = (fresh.record.id.clone(), fresh.record.group.clone());
        if !self.adopt(ctx, run.clone(), group.clone(), Some(fresh)) && !self.stopping {
            // No room here: another daemon with room takes it at its notice.
            let env = self.env.clone();
            ctx.spawn(fut::wrap_future(async move {
                let notice = Notice::Opened { run, group }.write();
                if let Err(err) = env.store.apply(vec![notice]).await {
                    tracing::warn!(error = %err, "announcing a run: store error; a scan finds it");
                }
            }));
        }
    }
}

impl Handler<Noticed> for RouterActor {
    type Result = ();

    fn handle(&mut self, noticed: Noticed, ctx: &mut Self::Context) {
        match noticed {
            Noticed::Opened { run, group } => {
                self.adopt(ctx, run, group, None);
            }
            Noticed::Canceled { run } => {
                let Some(owned) = self.owned.get(&run) else {
                    return;
                };
                // The flag decides, not the notice.
                let (addr, env) = (owned.addr.clone(), self.env.clone());
                let flag = Journal::new(env.store.clone(), &owned.group, &run).cancel_key();
                ctx.spawn(fut::wrap_future(async move {
                    match env.store.exists(&flag).await {
                        Ok(true) => addr.do_send(SignalRun(Signal::Cancel)),
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "reading a cancel flag: store error; a scan retries")
                        }
                    }
                }));
            }
        }
    }
}

impl RouterActor {
    /// Adopts `run` of `group` now if there is room: takes its lease if it is free and starts
    /// it (`fresh` when this daemon just submitted it). `false` if there was no room (a scan
    /// adopts it later), `true` if it is owned here already or its lease is being taken.
    fn adopt(
        &mut self,
        ctx: &mut Context<Self>,
        run: String,
        group: String,
        fresh: Option<Box<Fresh>>,
    ) -> bool {
        if self.owned.contains_key(&run) {
            return true;
        }
        let full = self.count() >= self.env.options.max_runs
            || self.group_load(&group) >= self.env.options.max_runs_per_group;
        if self.stopping || full {
            return false;
        }
        *self.adopting.entry(group.clone()).or_default() += 1;
        let env = self.env.clone();
        let take = async move {
            env.store
                .acquire_lease(&lease_key(&run), &env.options.owner, env.options.lease)
                .await
                .map(|taken| (run, fresh, taken))
        };
        // Apart from the actor's context: thousands of adoptions may be in flight.
        detach(ctx, take, move |act: &mut Self, taken, ctx| {
            if let Some(n) = act.adopting.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    act.adopting.remove(&group);
                }
            }
            match taken {
                Ok((run, fresh, true)) if !act.stopping => {
                    act.start_run(ctx, run, group, fresh);
                }
                Ok((run, _, true)) => {
                    let env = act.env.clone();
                    ctx.spawn(fut::wrap_future(async move {
                        let _ = env
                            .store
                            .release_lease(&lease_key(&run), &env.options.owner)
                            .await;
                    }));
                }
                Ok((_, _, false)) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "adopting a run: store error; a scan retries")
                }
            }
        });
        true
    }
}

/// Tails the run notices for the router (see [`crate::notices`]) until it stops: the
/// notices of runs to adopt or cancel go to the router, those of events and ends wake this
/// daemon's waiters directly.
async fn listen(env: Arc<Env>, router: Addr<RouterActor>) {
    let mut tail = Tail::new();
    loop {
        let notices = match tail.next(env.store.as_ref(), NOTICE_BLOCK).await {
            Ok(notices) => notices,
            Err(err) => {
                tracing::warn!(error = %err, "run notices: store error; the scan is the net");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !router.connected() {
            return;
        }
        for notice in notices {
            // Waking a waiter is harmless (it reads the store); adopting or canceling is
            // checked against the store.
            match notice {
                Notice::Event { run, group } => {
                    let key = Journal::new(env.store.clone(), &group, &run).events_key();
                    env.waiters.arrivals.sent(&key);
                }
                Notice::Ended { run } => env.waiters.endings.ended(&run),
                Notice::Opened { run, .. } => match env.store.hget(OPEN_INDEX, &run).await {
                    // The index names the run's group; the notice's is not trusted.
                    Ok(Some(group)) => router.do_send(Noticed::Opened {
                        run,
                        group: String::from_utf8_lossy(&group).into_owned(),
                    }),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "run notices: store error; the scan is the net")
                    }
                },
                Notice::Canceled { run } => router.do_send(Noticed::Canceled { run }),
            }
        }
    }
}

impl Handler<Resume<Self>> for RouterActor {
    type Result = ();

    fn handle(&mut self, resume: Resume<Self>, ctx: &mut Self::Context) {
        resume.run(self, ctx);
    }
}

impl Handler<StopRuns> for RouterActor {
    type Result = MessageResult<StopRuns>;

    fn handle(&mut self, _: StopRuns, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let lives = self
            .owned
            .values()
            .map(|owned| {
                owned.addr.do_send(SignalRun(Signal::Shutdown));
                owned.life.clone()
            })
            .collect();
        MessageResult(lives)
    }
}

impl Handler<CountRuns> for RouterActor {
    type Result = usize;

    fn handle(&mut self, _: CountRuns, _: &mut Self::Context) -> usize {
        self.owned.len()
    }
}

impl Handler<RunEndedEvent> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: RunEndedEvent, ctx: &mut Self::Context) {
        let was_full = self.count() >= self.env.options.max_runs;
        let Some(owned) = self.disown(&msg.run) else {
            return;
        };
        if was_full {
            // Room again: runs left waiting in the store for it are adopted now.
            self.scan(ctx);
        }
        if !matches!(msg.exit, Exit::Panicked(_)) {
            self.env.waiters.endings.ended(&msg.run);
        }
        let Exit::Panicked(why) = &msg.exit else {
            self.panics.remove(&msg.run);
            return;
        };
        let panics = self.panics.entry(msg.run.clone()).or_insert(0);
        *panics += 1;
        tracing::error!(run = %msg.run, panics = *panics, reason = %why, "workflow run panicked");
        if *panics < MAX_RUN_PANICS {
            // Still ours (the lease is held): start it again from its journal.
            self.start_run(ctx, msg.run, owned.group, None);
            return;
        }
        self.panics.remove(&msg.run);
        let env = self.env.clone();
        let reason = why.clone();
        let fail = async move {
            let journal = Journal::new(env.store.clone(), &owned.group, &msg.run);
            let mut record = journal.require_record().await?;
            record.status = RunStatus::Failed;
            record.error = Some(format!("the run panicked {MAX_RUN_PANICS} times: {reason}"));
            record.updated_ms = now_ms();
            journal
                .append(&Entry::new("", EntryKind::Finished).detail("failed"))
                .await?;
            journal
                .finish(&record, &[], &[], env.options.retention)
                .await?;
            env.store
                .release_lease(&lease_key(&msg.run), &env.options.owner)
                .await?;
            env.waiters.endings.ended(&msg.run);
            Ok::<_, WorkflowError>(())
        };
        ctx.spawn(fut::wrap_future(async move {
            if let Err(err) = fail.await {
                tracing::error!(error = %err, "could not fail a panicking run");
            }
        }));
    }
}
