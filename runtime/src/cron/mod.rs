//! Crons: targets (agents, workflows) invoked on a schedule — a cron expression with optional
//! seconds and a time zone, or a fixed interval — from the config or registered at run time.
//!
//! ```text
//! cron:defs                  hash    name -> JSON definition (config and run-time crons)
//! cron:{name}:last           string  the last tick claimed, by whom, and whether it was decided
//!                                    (`claim.rs`); expires a week after the tick that follows
//! cron:{name}:running        lease   held while a fire of this cron runs
//! cron:{name}:history        stream  one entry per tick: fired / skipped / failed (+ failed
//!                                    after fired); capped, expires a week after its last entry
//! ```
//!
//! Exactly once per tick with several daemons: every daemon computes the same tick times
//! ([`CronSchedule`]); to fire tick `T` a daemon must claim it in `cron:{name}:last` by
//! compare-and-set, which one daemon does, then decide it (same key, from its own claim)
//! before invoking the target. A claimed tick is fired, skipped or recorded as failed: a claim
//! left undecided (its daemon died, or lost the store) is taken over after `claim_timeout` or
//! recorded as failed by the claim of the next tick; store failures on the way are retried
//! within the claim's time and logged. A tick is **skipped** (and recorded so) when the
//! previous fire still holds the running lease. Ticks that pass while no daemon runs are not
//! caught up.
//!
//! The [`CronScheduler`] actor takes [`RegisterCron`], [`DeleteCron`] and [`ListCrons`]
//! (handlers in `handlers.rs`); it is supervised by the daemon's root supervisor. The target
//! is invoked through a [`CronHandler`] the daemon provides.

mod claim;
mod error;
mod handlers;
mod messages;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use actix::prelude::*;
use async_trait::async_trait;
use troupe_config::{CronSettings, CronTarget};

use self::claim::{judge, Last, Verdict};
pub use self::error::CronError;
use self::messages::StoredCron;
pub use self::messages::{
    CronInfo, CronOrigin, DeleteCron, HistoryEntry, ListCrons, RegisterCron, TickOutcome,
};
pub use self::schedule::CronSchedule;
use crate::actor_ref::ActorRef;
use crate::guard::isolate;
use crate::store::{Store, StoreError, Trim, Write};
use crate::supervisor::{ChildOptions, SupervisorSpec};

/// The hash of cron definitions.
const DEFS: &str = "cron:defs";
/// A scheduler this late (or three periods late, if longer) skips ahead instead of firing
/// the ticks it missed one after the other.
const CATCH_UP_MS: u64 = 1_000;
/// How long a cron's claim key and history outlive the tick after their last one.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// First pause before a failed store call of a tick is tried again; doubled per failure up
/// to `STORE_RETRY_MAX`, within the claim's time.
const STORE_RETRY: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

fn key(cron: &str, what: &str) -> String {
    format!("cron:{cron}:{what}")
}

/// Invokes a cron's target. The daemon wires agents and workflows behind it.
#[async_trait]
pub trait CronHandler: Send + Sync + 'static {
    /// Runs `target` with `input` for the cron `cron`; an `Err` is recorded as a failed tick.
    async fn fire(&self, cron: &str, target: &CronTarget, input: &str) -> Result<(), String>;
}

/// A [`CronHandler`] made from an async function of the cron's name, target and input.
pub fn cron_handler_fn<F, Fut>(f: F) -> Arc<dyn CronHandler>
where
    F: Fn(String, CronTarget, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    struct FnHandler<F>(F);

    #[async_trait]
    impl<F, Fut> CronHandler for FnHandler<F>
    where
        F: Fn(String, CronTarget, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        async fn fire(&self, cron: &str, target: &CronTarget, input: &str) -> Result<(), String> {
            (self.0)(cron.to_owned(), target.clone(), input.to_owned()).await
        }
    }

    Arc::new(FnHandler(f))
}

/// A [`CronHandler`] that invokes nothing: the cron's history is its only effect. Used until
/// targets are wired to agents and workflows.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordOnly;

#[async_trait]
impl CronHandler for RecordOnly {
    async fn fire(&self, cron: &str, target: &CronTarget, _input: &str) -> Result<(), String> {
        tracing::info!(cron, ?target, "cron fired (no target wired yet)");
        Ok(())
    }
}

/// Runtime knobs of the scheduler.
#[derive(Debug, Clone)]
pub struct CronOptions {
    /// This daemon's name in histories and lease owners (made unique per incarnation).
    pub daemon: String,
    /// How often the definitions are reloaded (to see crons other daemons registered or
    /// deleted).
    pub refresh: Duration,
    /// TTL of the running lease, renewed every third of it while a fire runs; a daemon that
    /// dies mid-fire blocks the cron's ticks at most this long.
    pub run_lease: Duration,
    /// How long a daemon that claimed a tick has to decide it (take the running lease, mark
    /// it fired or skipped); after that another daemon may take the tick over.
    pub claim_timeout: Duration,
    /// Entries kept per cron history.
    pub history_len: u64,
}

impl Default for CronOptions {
    fn default() -> Self {
        CronOptions {
            daemon: "troupe".to_owned(),
            refresh: Duration::from_secs(5),
            run_lease: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(10),
            history_len: 1000,
        }
    }
}

/// One scheduled cron.
struct Entry {
    stored: StoredCron,
    settings: CronSettings,
    schedule: CronSchedule,
    next_tick: Option<u64>,
    timer: Option<SpawnHandle>,
}

/// The scheduler. See the module documentation.
pub struct CronScheduler {
    store: Arc<dyn Store>,
    handler: Arc<dyn CronHandler>,
    options: CronOptions,
    owner: String,
    config: BTreeMap<String, CronSettings>,
    crons: HashMap<String, Entry>,
    refreshing: bool,
    /// Fires in progress: a stopping scheduler waits for them (bounded by its supervisor).
    firing: usize,
    stopping: bool,
}

impl CronScheduler {
    /// A scheduler for the crons of the config (`config`) and those in `store`.
    pub fn new(
        config: BTreeMap<String, CronSettings>,
        store: Arc<dyn Store>,
        handler: Arc<dyn CronHandler>,
        options: CronOptions,
    ) -> Self {
        let owner = format!("{}-{:08x}", options.daemon, rand::random::<u32>());
        CronScheduler {
            store,
            handler,
            options,
            owner,
            config,
            crons: HashMap::new(),
            firing: 0,
            stopping: false,
            refreshing: false,
        }
    }

    /// Writes the config's crons to the store and drops config crons no longer in it.
    async fn publish_config(
        store: Arc<dyn Store>,
        config: BTreeMap<String, CronSettings>,
    ) -> Result<(), StoreError> {
        let existing = store.hgetall(DEFS).await?;
        let stale: Vec<&str> = existing
            .iter()
            .filter(|(name, bytes)| {
                !config.contains_key(name)
                    && StoredCron::decode(bytes).is_some_and(|s| s.origin == CronOrigin::Config)
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !stale.is_empty() {
            store.hdel(DEFS, &stale).await?;
        }
        let encoded: Vec<(String, Vec<u8>)> = config
            .iter()
            .map(|(name, settings)| {
                (
                    name.clone(),
                    StoredCron::new(settings, CronOrigin::Config).encode(),
                )
            })
            .collect();
        if !encoded.is_empty() {
            let fields: Vec<(&str, &[u8])> = encoded
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
                .collect();
            store.hset(DEFS, &fields).await?;
        }
        Ok(())
    }

    /// Reloads the definitions and reconciles the timers with them.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let store = self.store.clone();
        ctx.spawn(
            async move { store.hgetall(DEFS).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.refreshing = false;
                    match result {
                        Ok(defs) => act.reconcile(defs, ctx),
                        Err(err) => {
                            tracing::warn!(error = %err, "could not load cron definitions; will try again")
                        }
                    }
                }),
        );
    }

    fn reconcile(&mut self, defs: Vec<(String, Vec<u8>)>, ctx: &mut Context<Self>) {
        let mut seen = Vec::with_capacity(defs.len());
        for (name, bytes) in defs {
            let Some(stored) = StoredCron::decode(&bytes) else {
                tracing::error!(cron = %name, "unreadable cron definition; ignoring it");
                continue;
            };
            seen.push(name.clone());
            if self.crons.get(&name).is_some_and(|e| e.stored == stored) {
                continue;
            }
            self.schedule(&name, stored, ctx);
        }
        let gone: Vec<String> = self
            .crons
            .keys()
            .filter(|name| !seen.contains(name))
            .cloned()
            .collect();
        for name in gone {
            self.unschedule(&name, ctx);
        }
    }

    /// (Re)schedules a cron from its definition.
    fn schedule(&mut self, name: &str, stored: StoredCron, ctx: &mut Context<Self>) {
        self.unschedule(name, ctx);
        let parsed = stored
            .settings()
            .ok_or_else(|| CronError::InvalidSchedule {
                cron: name.to_owned(),
                message: "incomplete definition".to_owned(),
            })
            .and_then(|settings| CronSchedule::parse(name, &settings).map(|s| (settings, s)));
        let (settings, schedule) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::error!(cron = %name, error = %err, "cron not scheduled");
                return;
            }
        };
        tracing::info!(cron = %name, schedule = ?settings.schedule, origin = ?stored.origin, "cron scheduled");
        self.crons.insert(
            name.to_owned(),
            Entry {
                stored,
                settings,
                schedule,
                next_tick: None,
                timer: None,
            },
        );
        self.arm(name, now_ms(), ctx);
    }

    fn unschedule(&mut self, name: &str, ctx: &mut Context<Self>) -> bool {
        match self.crons.remove(name) {
            Some(entry) => {
                if let Some(timer) = entry.timer {
                    ctx.cancel_future(timer);
                }
                tracing::info!(cron = %name, "cron unscheduled");
                true
            }
            None => false,
        }
    }

    /// Arms the timer for the first tick after `after_ms`.
    fn arm(&mut self, name: &str, after_ms: u64, ctx: &mut Context<Self>) {
        let Some(entry) = self.crons.get_mut(name) else {
            return;
        };
        let Some(tick) = entry.schedule.next_after(after_ms) else {
            tracing::info!(cron = %name, "cron has no further ticks");
            entry.next_tick = None;
            return;
        };
        entry.next_tick = Some(tick);
        let wait = Duration::from_millis(tick.saturating_sub(now_ms()));
        let cron = name.to_owned();
        entry.timer = Some(ctx.run_later(wait, move |act, ctx| act.tick(&cron, tick, ctx)));
    }

    fn tick(&mut self, name: &str, tick: u64, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(entry) = self.crons.get_mut(name) else {
            return;
        };
        if entry.next_tick != Some(tick) {
            return;
        }
        entry.timer = None;
        let now = now_ms();
        if now + 5 < tick {
            // The timer woke early (wall clock moved): wait again for the same tick.
            self.arm(name, tick.saturating_sub(1), ctx);
            return;
        }
        let period = u64::try_from(entry.schedule.period_hint().as_millis()).unwrap_or(u64::MAX);
        let late = now.saturating_sub(tick);
        let gap = entry
            .schedule
            .next_after(tick)
            .map_or(0, |next| next.saturating_sub(tick));
        let fire = FireJob {
            store: self.store.clone(),
            handler: self.handler.clone(),
            cron: name.to_owned(),
            settings: entry.settings.clone(),
            tick,
            holder: format!("{}:{tick}", self.owner),
            daemon: self.options.daemon.clone(),
            run_lease: self.options.run_lease,
            claim_timeout: self.options.claim_timeout,
            history_len: self.options.history_len,
            keep: KEEP.saturating_add(Duration::from_millis(gap)),
        };
        self.firing += 1;
        ctx.spawn(fire.run().into_actor(self).map(|(), act, ctx| {
            act.firing -= 1;
            if act.stopping && act.firing == 0 {
                ctx.stop();
            }
        }));
        // Next tick: the one after this (a late timer catches up), unless the scheduler was
        // stalled for several periods: then skip to the next tick from now.
        let tolerance = period.saturating_mul(3).max(CATCH_UP_MS);
        let after = if late > tolerance {
            tracing::warn!(cron = %name, late_ms = late, "scheduler was late; skipping ahead");
            now
        } else {
            tick
        };
        self.arm(name, after, ctx);
    }
}

/// Everything one tick needs, detached from the actor.
struct FireJob {
    store: Arc<dyn Store>,
    handler: Arc<dyn CronHandler>,
    cron: String,
    settings: CronSettings,
    tick: u64,
    /// This daemon incarnation and tick: the claim's and the running lease's holder.
    holder: String,
    daemon: String,
    run_lease: Duration,
    claim_timeout: Duration,
    history_len: u64,
    /// TTL of the claim key and the history: until well after the next tick.
    keep: Duration,
}

/// What a claim attempt found.
enum Claimed {
    /// The claim is this daemon's.
    Ours(Last),
    /// Another daemon's to fire (or fired already).
    Taken,
    /// Another daemon's claim, undecided until then.
    Held { until_ms: u64 },
    /// The key changed between the read and the compare-and-set: look again.
    Raced,
}

impl FireJob {
    async fn run(self) {
        let span = tracing::info_span!("cron.tick", cron = %self.cron, tick = self.tick);
        tracing::Instrument::instrument(self.run_inner(), span).await;
    }

    async fn run_inner(self) {
        let Some(claim) = self.claim().await else {
            return;
        };
        let running = key(&self.cron, "running");
        let until = claim.until_ms();
        let lease = self
            .retrying("take the running lease", until, || {
                self.store
                    .acquire_lease(&running, &self.holder, self.run_lease)
            })
            .await;
        let acquired = match lease {
            Ok(acquired) => acquired,
            Err(err) => {
                // Decided as failed here rather than left to a takeover that may fail alike.
                if self.decide(&claim).await {
                    let detail = format!("could not take the running lease: {err}");
                    self.record(self.tick, TickOutcome::Failed, &detail).await;
                }
                return;
            }
        };
        if !self.decide(&claim).await {
            if acquired {
                self.release(&running).await;
            }
            return;
        }
        if !acquired {
            tracing::info!("previous run still going: tick skipped");
            self.record(
                self.tick,
                TickOutcome::Skipped,
                "the previous run was still going",
            )
            .await;
            return;
        }
        self.record(self.tick, TickOutcome::Fired, "").await;
        let fire = isolate(
            &self.cron,
            self.handler
                .fire(&self.cron, &self.settings.target, &self.settings.input),
        );
        tokio::pin!(fire);
        let mut renew = tokio::time::interval((self.run_lease / 3).max(Duration::from_millis(10)));
        renew.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut fire => break result,
                _ = renew.tick() => {
                    if let Err(err) = self.store.renew_lease(&running, &self.holder, self.run_lease).await {
                        tracing::warn!(error = %err, "could not renew the cron's running lease");
                    }
                }
            }
        };
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(panicked) => Some(panicked.to_string()),
        };
        if let Some(message) = failure {
            tracing::warn!(error = %message, "cron target failed");
            self.record(self.tick, TickOutcome::Failed, &message).await;
        }
        self.release(&running).await;
    }

    /// Claims the tick (see `claim.rs`): `None` if another daemon has it, or if the store
    /// failed until the tick's claim time was up (logged; a claim that landed unseen is
    /// taken over or superseded by another daemon).
    async fn claim(&self) -> Option<Last> {
        let last = key(&self.cron, "last");
        let give_up = self.tick.saturating_add(ms(self.claim_timeout));
        loop {
            let found = self
                .retrying("claim the tick", give_up, || self.claim_once(&last))
                .await;
            match found {
                Ok(Claimed::Ours(claim)) => return Some(claim),
                Ok(Claimed::Taken) => {
                    tracing::debug!("tick taken by another daemon");
                    return None;
                }
                Ok(Claimed::Held { until_ms }) => {
                    // Another daemon's claim: look again once its time is up, in case that
                    // daemon died before deciding the tick.
                    let jitter = rand::random::<u64>() % 50;
                    let wait = until_ms.saturating_sub(now_ms()) + 1 + jitter;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                Ok(Claimed::Raced) => {}
                Err(_) => return None,
            }
        }
    }

    async fn claim_once(&self, last: &str) -> Result<Claimed, StoreError> {
        let current = self.store.get(last).await?;
        let now = now_ms();
        let seen = current.as_deref().and_then(Last::decode);
        let superseded = match judge(seen.as_ref(), self.tick, &self.holder, now) {
            Verdict::Ours => return Ok(seen.map_or(Claimed::Raced, Claimed::Ours)),
            Verdict::Taken => return Ok(Claimed::Taken),
            Verdict::Held { until_ms } => return Ok(Claimed::Held { until_ms }),
            Verdict::Claim { superseded } => superseded,
        };
        let mine = Last::Claimed {
            tick: self.tick,
            until_ms: now.saturating_add(ms(self.claim_timeout)),
            holder: self.holder.clone(),
        };
        let swapped = self
            .store
            .compare_and_set(
                last,
                current.as_deref(),
                Some(&mine.encode()),
                Some(self.keep),
            )
            .await?;
        if !swapped {
            return Ok(Claimed::Raced);
        }
        match superseded {
            Some((tick, claimer)) if tick == self.tick => {
                tracing::warn!(%claimer, "took over a tick its claimer had not fired in time");
            }
            Some((tick, claimer)) => {
                tracing::warn!(%claimer, claimed_tick = tick, "an earlier tick was claimed but never fired: recording it as failed");
                let detail = format!("claimed by {claimer}, which did not fire it");
                self.record(tick, TickOutcome::Failed, &detail).await;
            }
            None => {}
        }
        Ok(Claimed::Ours(mine))
    }

    /// Moves the key from this daemon's claim to decided; whether it did (`false`: another
    /// daemon took the tick over, or the store failed until the claim's time was up; logged).
    async fn decide(&self, claim: &Last) -> bool {
        let last = key(&self.cron, "last");
        let decided = Last::Decided {
            tick: self.tick,
            holder: Some(self.holder.clone()),
        };
        let (from, to) = (claim.encode(), decided.encode());
        let result = self
            .retrying("mark the tick decided", claim.until_ms(), || async {
                let swapped = self
                    .store
                    .compare_and_set(&last, Some(&from), Some(&to), Some(self.keep))
                    .await?;
                // A try whose answer was lost may have landed: then the key is ours.
                Ok(swapped || self.store.get(&last).await?.as_deref() == Some(to.as_slice()))
            })
            .await;
        match result {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("another daemon took the tick over before it was fired");
                false
            }
            Err(_) => false,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `until_ms` (ms since the epoch) has
    /// passed; every failure is logged, the last one as an error.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        until_ms: u64,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut pause = STORE_RETRY;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retryable() && now_ms() + ms(pause) < until_ms => {
                    tracing::warn!(error = %err, "could not {what}; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(STORE_RETRY_MAX);
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not {what}");
                    return Err(err);
                }
            }
        }
    }

    async fn release(&self, running: &str) {
        if let Err(err) = self.store.release_lease(running, &self.holder).await {
            tracing::warn!(error = %err, "could not release the cron's running lease; it expires");
        }
    }

    /// Appends `tick`'s outcome to the history (capped, expiring `keep` after its last
    /// entry). Not retried (an entry whose answer was lost may have landed); a failure is
    /// logged and does not stop the tick.
    async fn record(&self, tick: u64, outcome: TickOutcome, detail: &str) {
        let name = match outcome {
            TickOutcome::Fired => "fired",
            TickOutcome::Skipped => "skipped",
            TickOutcome::Failed => "failed",
        };
        let stream = key(&self.cron, "history");
        let fields = [
            ("tick", tick.to_string()),
            ("outcome", name.to_owned()),
            ("daemon", self.daemon.clone()),
            ("detail", detail.to_owned()),
        ];
        let written = self
            .store
            .apply(vec![
                Write::XAdd {
                    stream: stream.clone(),
                    fields: fields
                        .into_iter()
                        .map(|(f, v)| (f.as_bytes().to_vec(), v.into_bytes()))
                        .collect(),
                    trim: Some(Trim::MaxLen(self.history_len)),
                },
                Write::Expire {
                    key: stream,
                    ttl: self.keep,
                },
            ])
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, outcome = name, "could not record the tick in the cron's history");
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

use crate::clock::now_ms;

impl Actor for CronScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(daemon = %self.owner, configured = self.config.len(), "cron scheduler started");
        let (store, config) = (self.store.clone(), self.config.clone());
        ctx.wait(
            async move { Self::publish_config(store, config).await }
                .into_actor(self)
                .map(|result, _, _| {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "could not store the config's crons");
                    }
                }),
        );
        self.refresh(ctx);
        ctx.run_interval(self.options.refresh, |act, ctx| act.refresh(ctx));
    }

    /// A fire in progress finishes first (its target's turn is not cut short); no new tick
    /// fires meanwhile. The supervisor's shutdown time bounds the wait.
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.stopping = true;
        if self.firing > 0 && tokio::runtime::Handle::try_current().is_ok() {
            Running::Continue
        } else {
            Running::Stop
        }
    }
}

/// The cron scheduler's handle: its actor and its histories. Cheap to clone.
#[derive(Clone)]
pub struct Crons {
    actor: ActorRef<CronScheduler>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Crons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crons").finish_non_exhaustive()
    }
}

impl Crons {
    /// Declares the scheduler (`crons`) as a child of `supervisor`, with the config's crons.
    pub fn child_of(
        supervisor: &mut SupervisorSpec,
        config: BTreeMap<String, CronSettings>,
        store: Arc<dyn Store>,
        handler: Arc<dyn CronHandler>,
        options: CronOptions,
        child: ChildOptions,
    ) -> Crons {
        let actor_store = store.clone();
        let actor = supervisor.child("crons", child, move |_| {
            CronScheduler::new(
                config.clone(),
                actor_store.clone(),
                handler.clone(),
                options.clone(),
            )
        });
        Crons { actor, store }
    }

    /// The scheduler's address.
    pub fn actor(&self) -> &ActorRef<CronScheduler> {
        &self.actor
    }

    /// Registers or replaces a cron at run time.
    pub async fn register(&self, name: &str, settings: CronSettings) -> Result<(), CronError> {
        self.actor
            .send(RegisterCron {
                name: name.to_owned(),
                settings,
            })
            .await?
    }

    /// Deletes a cron; whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, CronError> {
        self.actor.send(DeleteCron(name.to_owned())).await?
    }

    /// The crons in the store.
    pub async fn list(&self) -> Result<Vec<CronInfo>, CronError> {
        self.actor.send(ListCrons).await?
    }

    /// The last `count` entries of the cron's history, oldest first.
    pub async fn history(&self, cron: &str, count: usize) -> Result<Vec<HistoryEntry>, CronError> {
        history(self.store.as_ref(), cron, count).await
    }
}

/// The last `count` entries of the cron `cron`'s history in `store`, oldest first.
pub async fn history(
    store: &dyn Store,
    cron: &str,
    count: usize,
) -> Result<Vec<HistoryEntry>, CronError> {
    let stream = key(cron, "history");
    let entries = store.xrange(&stream, "-", "+", None).await?;
    let skip = entries.len().saturating_sub(count);
    Ok(entries
        .into_iter()
        .skip(skip)
        .filter_map(|entry| {
            let text = |name: &str| {
                entry
                    .field(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let tick = text("tick")?.parse::<u64>().ok()?;
            let outcome = match text("outcome")?.as_str() {
                "fired" => TickOutcome::Fired,
                "skipped" => TickOutcome::Skipped,
                "failed" => TickOutcome::Failed,
                _ => return None,
            };
            Some(HistoryEntry {
                tick: UNIX_EPOCH + Duration::from_millis(tick),
                outcome,
                daemon: text("daemon").unwrap_or_default(),
                detail: text("detail").unwrap_or_default(),
            })
        })
        .collect())
}
