//! Cancellation of known and loaded items.

use super::*;

impl PoolActor {
    /// Cancels a locally known item (see [`Cancel`](super::Cancel)); gives the reply back
    /// if the item is not known here.
    pub(crate) fn cancel_known(
        &mut self,
        id: &str,
        reply: CancelReply,
        ctx: &mut Context<Self>,
    ) -> Result<(), CancelReply> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Err(reply);
        };
        slot.cancellers.push(reply);
        if slot.cancel_requested {
            return Ok(());
        }
        slot.cancel_requested = true;
        match std::mem::replace(&mut slot.phase, Phase::Writing) {
            Phase::Writing => {
                // The write in flight decides; `written` sees `cancel_requested`.
                slot.phase = Phase::Writing;
            }
            Phase::Running(handle) => {
                tracing::info!(pool = %self.name, work = %id, "canceling a running attempt");
                handle.abort();
                self.cancel_now(id, ctx);
            }
            Phase::Parked => {
                self.parked -= 1;
                self.cancel_now(id, ctx);
            }
            Phase::Queued => self.cancel_now(id, ctx),
        }
        Ok(())
    }

    /// Cancels an item this pool does not hold, read from the store.
    pub(crate) fn cancel_loaded(
        &mut self,
        versioned: Versioned,
        reply: CancelReply,
        ctx: &mut Context<Self>,
    ) {
        let id = versioned.0.id.clone();
        if let Err(reply) = self.cancel_known(&id, reply, ctx) {
            let mut slot = Slot::new(versioned, Phase::Writing, None);
            slot.cancel_requested = true;
            slot.cancellers.push(reply);
            self.slots.insert(id.clone(), slot);
            self.cancel_now(&id, ctx);
        }
    }

    pub(super) fn cancel_now(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let mut next = slot.record.clone();
        next.state = WorkState::Canceled;
        self.write(id, next, Step::Cancel, 1, ctx);
    }
}
