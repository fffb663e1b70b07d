//! The [`CronScheduler`] actor: it loads the cron definitions (the config's, published to the
//! store, and those registered at run time), keeps one timer per cron, and on each tick hands
//! a [`FireJob`] to a task of its own (`fire.rs`). Its messages are handled in `handlers.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use troupe_config::CronSettings;

use super::fire::FireJob;
use super::messages::{CronOrigin, StoredCron};
use super::{CronError, CronHandler, CronOptions, CronSchedule, DEFS};
use crate::clock::now_ms;
use crate::store::{Store, StoreError};

/// A scheduler this late (or three periods late, if longer) skips ahead instead of firing
/// the ticks it missed one after the other.
const CATCH_UP_MS: u64 = 1_000;
/// How long a cron's claim key and history outlive the tick after their last one.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

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
    pub(super) store: Arc<dyn Store>,
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
    pub(super) fn schedule(&mut self, name: &str, stored: StoredCron, ctx: &mut Context<Self>) {
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

    pub(super) fn unschedule(&mut self, name: &str, ctx: &mut Context<Self>) -> bool {
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
