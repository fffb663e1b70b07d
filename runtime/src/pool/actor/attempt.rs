//! Attempts and state writes: an attempt started and its outcome judged by the retry policy,
//! then every transition written with compare-and-set (retried with the same rev, a lost claim
//! recognised), completion notified and the ended record finalized.

use super::*;

impl PoolActor {
    pub(super) fn claim(&mut self, id: &str, ctx: &mut Context<Self>) {
        self.count(id);
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let mut next = slot.record.clone();
        next.attempts += 1;
        next.state = WorkState::Running {
            runner: self.runner.clone(),
        };
        self.write(id, next, Step::Claim, 1, ctx);
    }

    pub(super) fn start_attempt(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let record = &slot.record;
        let Some(handler) = self.shared.handler(&record.kind) else {
            // Handlers are never removed, so this does not happen; fail safe anyway: the
            // claim is undone and the attempt that never ran is not counted.
            let mut next = record.clone();
            next.attempts = next.attempts.saturating_sub(1);
            next.state = WorkState::Pending;
            self.write(id, next, Step::Finish, 1, ctx);
            return;
        };
        let work = Work {
            pool: self.name.to_string(),
            id: record.id.clone(),
            kind: record.kind.clone(),
            payload: record.payload.clone(),
            attempt: record.attempts,
            max_attempts: record.max_attempts,
        };
        let span = tracing::info_span!(
            crate::trace::span::POOL_WORK,
            pool = %self.name,
            work = %record.id,
            kind = %record.kind,
            attempt = record.attempts
        );
        let actor = self.life.name().to_owned();
        let attempt = async move {
            tracing::debug!("attempt started");
            match isolate(&actor, handler.run(work)).await {
                Ok(result) => result,
                Err(panicked) => Err(
                    WorkError::retryable(format!("handler panicked: {panicked}"))
                        .with_kind(WorkErrorKind::Panicked),
                ),
            }
        }
        .instrument(span);
        let key = id.to_owned();
        let handle = detach(ctx, attempt, move |act: &mut Self, result, ctx| {
            act.attempt_done(&key, result, ctx)
        });
        if let Some(slot) = self.slots.get_mut(id) {
            slot.phase = Phase::Running(handle);
        }
    }

    pub(super) fn attempt_done(
        &mut self,
        id: &str,
        result: Result<serde_json::Value, WorkError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.phase = Phase::Writing;
        let mut next = slot.record.clone();
        let attempt = next.attempts;
        match result {
            Ok(output) => {
                tracing::debug!(pool = %self.name, work = %id, attempt, "attempt succeeded");
                next.state = WorkState::Succeeded { output };
            }
            Err(error) => match retry::decide(&self.policy_of(&next), attempt, &error) {
                RetryDecision::Retry(delay) => {
                    tracing::info!(pool = %self.name, work = %id, attempt, ?delay, error = %error, "attempt failed; will retry");
                    next.state = WorkState::Pending;
                    next.run_at_ms = now_ms()
                        .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                    next.last_error = Some(error.to_string());
                }
                RetryDecision::GiveUp(reason) => {
                    tracing::warn!(pool = %self.name, work = %id, attempt, error = %reason, "work failed");
                    next.last_error = Some(error.to_string());
                    next.state = WorkState::Failed { error: reason };
                }
            },
        }
        self.write(id, next, Step::Finish, 1, ctx);
    }

    // ---- state writes ------------------------------------------------------------------------

    /// Moves the item to `next` in the store (CAS from the bytes last seen), then continues
    /// according to `step`.
    pub(super) fn write(
        &mut self,
        id: &str,
        mut next: WorkRecord,
        step: Step,
        try_no: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.phase = Phase::Writing;
        if try_no == 1 {
            // A retry keeps its `rev`, so that it recognises its first try if that landed.
            next.rev = rand::random();
        }
        let expected = slot.bytes.clone();
        let (store, keys, retention) = (self.store.clone(), self.keys.clone(), self.retention);
        let key = id.to_owned();
        let transition = async move {
            let result =
                persist::transition(store.as_ref(), &keys, &expected, &next, retention).await;
            (next, result)
        };
        detach(
            ctx,
            transition,
            move |act: &mut Self, (next, result), ctx| {
                act.written(&key, next, step, try_no, result, ctx)
            },
        );
    }

    pub(super) fn written(
        &mut self,
        id: &str,
        next: WorkRecord,
        step: Step,
        try_no: u32,
        result: Result<Cas, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if !self.slots.contains_key(id) {
            return;
        }
        match result {
            Ok(Cas::Swapped(bytes)) => {
                let terminal = next.state.is_terminal();
                let cancel = match self.slots.get_mut(id) {
                    Some(slot) => {
                        slot.record = next;
                        slot.bytes = bytes;
                        slot.cancel_requested
                    }
                    None => return,
                };
                match step {
                    Step::Claim if cancel => self.cancel_now(id, ctx),
                    Step::Claim => self.start_attempt(id, ctx),
                    Step::Finish | Step::Cancel | Step::Reclaim => {
                        self.uncount(id, ctx);
                        if terminal {
                            self.complete(id, ctx);
                        } else if cancel {
                            self.cancel_now(id, ctx);
                        } else {
                            self.queue(id);
                        }
                    }
                }
            }
            Ok(Cas::Conflict(Some(fresh)))
                if matches!(next.state, WorkState::Succeeded { .. })
                    && !fresh.0.state.is_terminal() =>
            {
                // Another daemon moved the item (it took our runner for dead while the store
                // was out of our reach): the attempt succeeded all the same, so its result
                // goes onto the record as it is now instead of being thrown away.
                tracing::warn!(pool = %self.name, work = %id, "the record moved under a succeeded attempt; keeping its result");
                let (record, bytes) = *fresh;
                let mut rebased = record.clone();
                rebased.state = next.state;
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.record = record;
                    slot.bytes = bytes;
                }
                self.write(id, rebased, Step::Finish, 1, ctx);
            }
            Ok(Cas::Conflict(fresh)) => {
                tracing::debug!(pool = %self.name, work = %id, ?step, "the record changed under us");
                self.uncount(id, ctx);
                self.reconcile(id, fresh.map(|f| *f), ctx);
            }
            Err(err) => {
                // The same write again, with the same `rev`: if an earlier try landed (its
                // answer lost), the retry recognises it. The item stays held meanwhile, so
                // neither a rescan here nor another daemon (this runner's lease is renewed)
                // takes it: a claimed item starts, a finished attempt's result is kept.
                if try_no == WRITE_TRIES {
                    tracing::error!(pool = %self.name, work = %id, ?step, error = %err, try_no, "state write still failing; keeping the item and trying again");
                    if let Some(slot) = self.slots.get_mut(id) {
                        // A waiting canceller learns of the trouble; the cancel goes on.
                        let (pool, message) = (self.name.to_string(), err.to_string());
                        fail(std::mem::take(&mut slot.cancellers), || PoolError::Store {
                            pool: pool.clone(),
                            source: StoreError::Other {
                                op: "cancel",
                                message: message.clone(),
                            },
                        });
                    }
                } else {
                    tracing::warn!(pool = %self.name, work = %id, ?step, error = %err, try_no, "state write failed; trying again");
                }
                let key = id.to_owned();
                let pause = self.options.store_retry * try_no.min(MAX_RETRY_FACTOR);
                ctx.run_later(pause, move |act, ctx| {
                    act.write(&key, next, step, try_no.saturating_add(1), ctx)
                });
            }
        }
        self.pump(ctx);
    }

    /// The store says the item is now `fresh` (someone else moved it).
    pub(super) fn reconcile(
        &mut self,
        id: &str,
        fresh: Option<Versioned>,
        ctx: &mut Context<Self>,
    ) {
        let Some((record, bytes)) = fresh else {
            if let Some(slot) = self.slots.remove(id) {
                answer(slot.cancellers, CancelOutcome::NotFound);
            }
            return;
        };
        match &record.state {
            WorkState::Pending => {
                let cancel = match self.slots.get_mut(id) {
                    Some(slot) => {
                        slot.record = record;
                        slot.bytes = bytes;
                        slot.cancel_requested
                    }
                    None => return,
                };
                if cancel {
                    self.cancel_now(id, ctx);
                } else {
                    self.queue(id);
                }
            }
            WorkState::Running { .. } => {
                // Another runner has it. A pending cancel goes to the store directly; that
                // runner's next write will find the item canceled.
                let cancel = self.slots.get(id).is_some_and(|s| s.cancel_requested);
                if cancel {
                    if let Some(slot) = self.slots.get_mut(id) {
                        slot.record = record;
                        slot.bytes = bytes;
                    }
                    self.cancel_now(id, ctx);
                } else {
                    self.slots.remove(id);
                }
            }
            _ => {
                if let Some(slot) = self.slots.remove(id) {
                    answer(
                        slot.cancellers,
                        CancelOutcome::AlreadyEnded(record.status()),
                    );
                }
            }
        }
    }

    /// The item ended here: notify exactly once (this daemon won the end transition), then
    /// finalize it in the store.
    pub(super) fn complete(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.remove(id) else {
            return;
        };
        let record = slot.record;
        let Some(outcome) = record.outcome() else {
            return;
        };
        tracing::debug!(pool = %self.name, work = %id, attempts = record.attempts, status = ?record.status(), "work ended");
        let event = WorkCompletedEvent {
            pool: self.name.to_string(),
            id: record.id.clone(),
            kind: record.kind.clone(),
            attempts: record.attempts,
            outcome,
        };
        if let Some(recipient) = &slot.notify {
            recipient.do_send(event.clone());
        }
        self.shared.publish(&event);
        let reply = match record.state {
            WorkState::Canceled => CancelOutcome::Canceled,
            _ => CancelOutcome::AlreadyEnded(record.status()),
        };
        answer(slot.cancellers, reply);
        self.finalize(record, ctx);
    }

    pub(super) fn finalize(&mut self, record: WorkRecord, ctx: &mut Context<Self>) {
        let (store, keys) = (self.store.clone(), self.keys.clone());
        let (max_attempts, retention) = (self.policy.max_attempts, self.retention);
        let finalize = async move {
            persist::finalize(store.as_ref(), &keys, &record, max_attempts, retention)
                .await
                .map_err(|err| (record.id, err))
        };
        detach(ctx, finalize, |act: &mut Self, result, ctx| match result {
            Ok(Some(follow_up)) => act.admit(follow_up, None, ctx),
            Ok(None) => {}
            Err((id, err)) => {
                tracing::warn!(pool = %act.name, work = %id, error = %err, "could not finalize; the next load will")
            }
        });
    }
}
