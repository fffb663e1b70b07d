//! Loading and liveness: the open items scanned and reloaded, items of dead runners
//! reclaimed, metrics published and the runner's lease renewed.

use super::*;

impl PoolActor {
    /// Loads open items this incarnation does not hold: pending ones are queued, ended ones
    /// finalized, and running ones whose runner is dead are retried.
    pub(crate) fn scan(&mut self, ctx: &mut Context<Self>) {
        if self.scanning || self.draining {
            return;
        }
        self.scanning = true;
        let known: HashSet<String> = self.slots.keys().cloned().collect();
        let load = persist::load(
            self.store.clone(),
            self.keys.clone(),
            known,
            self.runner.clone(),
        );
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| {
            act.scanning = false;
            match result {
                Ok((found, dead)) => act.loaded_items(found, &dead, ctx),
                Err(err) => {
                    tracing::warn!(pool = %act.name, error = %err, "could not load work from the store; will try again")
                }
            }
        }));
    }

    pub(super) fn loaded_items(
        &mut self,
        found: Vec<Found>,
        dead: &HashSet<String>,
        ctx: &mut Context<Self>,
    ) {
        let first = !self.loaded;
        self.loaded = true;
        let (mut queued, mut reclaimed) = (0usize, 0usize);
        let mut missing = Vec::new();
        for item in found {
            let (record, bytes) = match item {
                Found::Record(versioned) => *versioned,
                Found::Missing(id) => {
                    missing.push(id);
                    continue;
                }
            };
            if self.slots.contains_key(&record.id) {
                continue;
            }
            match &record.state {
                WorkState::Pending => {
                    queued += 1;
                    let id = record.id.clone();
                    self.slots
                        .insert(id.clone(), Slot::new((record, bytes), Phase::Queued, None));
                    self.queue(&id);
                }
                WorkState::Running { runner } => {
                    let orphan = *runner == self.runner
                        || dead.contains(runner)
                        || self.shared.is_previous_runner(runner)
                        || self.is_earlier_process(runner);
                    if orphan {
                        reclaimed += 1;
                        self.reclaim((record, bytes), ctx);
                    }
                }
                _ => self.finalize(record, ctx),
            }
        }
        if !missing.is_empty() {
            let (store, open) = (self.store.clone(), self.keys.open());
            ctx.spawn(
                async move {
                    let fields: Vec<&str> = missing.iter().map(String::as_str).collect();
                    store.hdel(&open, &fields).await
                }
                .into_actor(self)
                .map(|result, act, _| {
                    if let Err(err) = result {
                        tracing::warn!(pool = %act.name, error = %err, "could not drop stale index entries");
                    }
                }),
            );
        }
        if first || queued > 0 || reclaimed > 0 {
            tracing::info!(pool = %self.name, queued, reclaimed, "loaded work from the store");
        }
        if self.parked > 0 {
            // In case a `HandlersChanged` was lost (sent while the mailbox was full).
            self.unpark(ctx);
        }
        self.pump(ctx);
    }

    /// An item whose runner died mid-attempt: that attempt counts; retry it if attempts
    /// remain, else it fails.
    pub(super) fn reclaim(&mut self, versioned: Versioned, ctx: &mut Context<Self>) {
        let id = versioned.0.id.clone();
        let mut next = versioned.0.clone();
        let error = format!("its runner stopped during attempt {}", next.attempts);
        tracing::warn!(pool = %self.name, work = %id, attempt = next.attempts, "work's runner died; retrying it");
        next.state = if next.attempts >= next.max_attempts {
            WorkState::Failed {
                error: WorkFailure::new(
                    WorkErrorKind::Interrupted,
                    format!("{error} (gave up after {} attempts)", next.attempts),
                ),
            }
        } else {
            WorkState::Pending
        };
        next.run_at_ms = now_ms();
        next.last_error = Some(error);
        self.slots
            .insert(id.clone(), Slot::new(versioned, Phase::Writing, None));
        self.write(&id, next, Step::Reclaim, 1, ctx);
    }

    /// Whether `runner` is another runner of this pool's instance (`{instance}-{12 hex}`)
    /// when the instance names one live process at most: then it ran in an earlier process
    /// under the same name, which is dead (this process's earlier incarnations are
    /// recognized by `is_previous_runner`).
    pub(super) fn is_earlier_process(&self, runner: &str) -> bool {
        self.options.instance_is_unique
            && runner != self.runner
            && runner
                .strip_prefix(self.options.instance.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Sets this pool's occupancy gauges.
    pub(super) fn publish_metrics(&self) {
        let stats = self.stats();
        let m = crate::metrics::metrics();
        for (state, n) in [
            ("running", stats.running),
            ("ready", stats.ready),
            ("delayed", stats.delayed),
        ] {
            let labels = crate::metrics::PoolLabels {
                pool: self.name.to_string(),
                state,
            };
            m.pool_items.get_or_create(&labels).set(n as i64);
        }
    }

    pub(super) fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let (store, key, runner) = (
            self.store.clone(),
            self.keys.runner(&self.runner),
            self.runner.clone(),
        );
        let ttl = self.options.runner_lease;
        ctx.spawn(
            async move { store.acquire_lease(&key, &runner, ttl).await }
                .into_actor(self)
                .map(|result, act, _| match result {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(pool = %act.name, runner = %act.runner, "runner lease held by someone else")
                    }
                    Err(err) => {
                        tracing::warn!(pool = %act.name, error = %err, "could not renew the runner lease")
                    }
                }),
        );
    }
}
