//! Queueing: items admitted, ordered by priority and `run_at`, started while there is room,
//! the timer armed for the next delayed one; and the per-kind parallelism counts.

use super::*;

impl PoolActor {
    /// Takes in a pending item (new, loaded, or a follow-up) and queues it.
    pub(crate) fn admit(
        &mut self,
        versioned: Versioned,
        notify: Option<Recipient<WorkCompletedEvent>>,
        ctx: &mut Context<Self>,
    ) {
        let id = versioned.0.id.clone();
        if self.slots.contains_key(&id) {
            return;
        }
        self.slots
            .insert(id.clone(), Slot::new(versioned, Phase::Queued, notify));
        self.queue(&id);
        self.pump(ctx);
    }

    /// Puts a known item in the ready or delayed queue (or parks it).
    pub(super) fn queue(&mut self, id: &str) {
        self.next_token += 1;
        let token = self.next_token;
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.token = token;
        slot.phase = Phase::Queued;
        let record = &slot.record;
        if record.run_at_ms > now_ms() {
            self.delayed.push(Reverse(Delayed {
                run_at_ms: record.run_at_ms,
                order: token,
                id: id.to_owned(),
                token,
            }));
        } else {
            self.ready.push(Ready {
                priority: record.priority,
                order: token,
                id: id.to_owned(),
                token,
            });
        }
    }

    pub(super) fn is_live(&self, id: &str, token: u64) -> bool {
        self.slots
            .get(id)
            .is_some_and(|s| s.token == token && matches!(s.phase, Phase::Queued))
    }

    /// Starts what may start now and arms the timer for the next delayed item.
    pub(crate) fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let now = now_ms();
        while let Some(Reverse(top)) = self.delayed.peek() {
            if top.run_at_ms > now && self.is_live(&top.id, top.token) {
                break;
            }
            let Some(Reverse(entry)) = self.delayed.pop() else {
                break;
            };
            if let Some(slot) = self.slots.get(&entry.id) {
                if slot.token == entry.token && matches!(slot.phase, Phase::Queued) {
                    self.ready.push(Ready {
                        priority: slot.record.priority,
                        order: entry.order,
                        id: entry.id,
                        token: entry.token,
                    });
                }
            }
        }
        while self.running < self.parallelism {
            let Some(entry) = self.ready.pop() else {
                break;
            };
            if !self.is_live(&entry.id, entry.token) {
                continue;
            }
            let kind_known = self
                .slots
                .get(&entry.id)
                .is_some_and(|s| self.shared.handler(&s.record.kind).is_some());
            if !kind_known {
                if let Some(slot) = self.slots.get_mut(&entry.id) {
                    tracing::debug!(pool = %self.name, work = %entry.id, kind = %slot.record.kind, "no handler for this kind yet: parked");
                    slot.phase = Phase::Parked;
                    self.parked += 1;
                }
                continue;
            }
            self.claim(&entry.id, ctx);
        }
        self.arm_timer(ctx);
    }

    pub(super) fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(Reverse(next)) = self.delayed.peek() else {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        let due = next.run_at_ms;
        if self.timer.as_ref().is_some_and(|(at, _)| *at == due) {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(1));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.pump(ctx);
        });
        self.timer = Some((due, handle));
    }

    /// A handler was registered: parked items of known kinds go back to the queue.
    pub(crate) fn unpark(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                matches!(s.phase, Phase::Parked) && self.shared.handler(&s.record.kind).is_some()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.parked -= 1;
            self.queue(&id);
        }
        self.pump(ctx);
    }

    pub(super) fn count(&mut self, id: &str) {
        if let Some(slot) = self.slots.get_mut(id) {
            if !slot.counted {
                slot.counted = true;
                self.running += 1;
            }
        }
    }

    pub(super) fn uncount(&mut self, id: &str, ctx: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(id) {
            if slot.counted {
                slot.counted = false;
                self.running -= 1;
            }
        }
        if self.draining && self.running == 0 {
            ctx.stop();
        }
    }
}
