//! How the [`PoolActor`] handles each message: enqueue persists before it answers, cancel
//! answers once the cancel is decided, the rest are immediate.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::actor::PoolActor;
use super::messages::{
    Cancel, CancelOutcome, Enqueue, GetPoolStats, HandlersChanged, SetParallelism,
};
use super::persist;
use super::work::{now_ms, to_ms_ceil, WorkId, WorkRecord, WorkState};
use super::PoolError;
use crate::detach::{detach, Resume};

impl Handler<Resume<Self>> for PoolActor {
    type Result = ();

    fn handle(&mut self, resume: Resume<Self>, ctx: &mut Context<Self>) {
        resume.run(self, ctx);
    }
}

impl Handler<Enqueue> for PoolActor {
    type Result = ResponseFuture<Result<WorkId, PoolError>>;

    fn handle(&mut self, Enqueue(spec): Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_draining() {
            let pool = self.name().to_owned();
            return Box::pin(std::future::ready(Err(PoolError::Stopping { pool })));
        }
        let now = now_ms();
        let chosen = spec.id.is_some();
        let id = spec
            .id
            .unwrap_or_else(|| format!("{now:013}-{:016x}", rand::random::<u64>()));
        let record = WorkRecord {
            id: id.clone(),
            kind: spec.kind,
            payload: spec.payload,
            priority: spec.priority,
            run_at_ms: spec.run_at.map_or(now, to_ms_ceil),
            enqueued_at_ms: now,
            attempts: 0,
            max_attempts: spec.max_attempts.unwrap_or(self.max_attempts()),
            last_error: None,
            then: spec.then,
            state: WorkState::Pending,
            rev: rand::random(),
        };
        let span = tracing::debug_span!("pool.enqueue", pool = %self.name(), work = %id, kind = %record.kind);
        let _entered = span.enter();
        let bytes = record.encode();
        let (store, keys, pool) = (self.store(), self.keys().clone(), self.name().to_owned());
        let notify = spec.notify;
        let write = async move {
            let stored = if chosen {
                persist::insert_unique(store.as_ref(), &keys, &bytes, &id)
                    .await
                    .map_err(PoolError::store(&pool))?
            } else {
                persist::insert(store.as_ref(), &keys, &bytes, &id)
                    .await
                    .map_err(PoolError::store(&pool))?;
                true
            };
            if !stored {
                return Err(PoolError::Duplicate { pool, id });
            }
            Ok((record, bytes))
        };
        // The write runs apart from the actor's context (see `detach`); the actor admits the
        // item once it is stored, then answers.
        let (reply, answer) = oneshot::channel();
        let stopping = PoolError::Stopping {
            pool: self.name().to_owned(),
        };
        detach(ctx, write, move |act: &mut Self, result, ctx| {
            let admitted = result.map(|(record, bytes)| {
                let id = record.id.clone();
                tracing::debug!(pool = %act.name(), work = %id, "work enqueued");
                act.admit((record, bytes), notify, ctx);
                id
            });
            let _ = reply.send(admitted);
        });
        Box::pin(async move { answer.await.unwrap_or(Err(stopping)) })
    }
}

impl Handler<Cancel> for PoolActor {
    type Result = ResponseActFuture<Self, Result<CancelOutcome, PoolError>>;

    fn handle(&mut self, Cancel(id): Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        let pool = self.name().to_owned();
        let waited = {
            let pool = pool.clone();
            async move { answer.await.unwrap_or(Err(PoolError::Stopping { pool })) }
        };
        match self.cancel_known(&id, reply, ctx) {
            Ok(()) => Box::pin(waited.into_actor(self)),
            Err(reply) => {
                // Not held here: read it, then cancel through the store.
                let (store, keys) = (self.store(), self.keys().clone());
                let read = async move {
                    persist::read(store.as_ref(), &keys, &id)
                        .await
                        .map_err(PoolError::store(&pool))
                };
                Box::pin(
                    read.into_actor(self)
                        .map(move |found, act, ctx| match found {
                            Err(err) => {
                                let _ = reply.send(Err(err));
                            }
                            Ok(None) => {
                                let _ = reply.send(Ok(CancelOutcome::NotFound));
                            }
                            Ok(Some((record, _))) if record.state.is_terminal() => {
                                let _ =
                                    reply.send(Ok(CancelOutcome::AlreadyEnded(record.status())));
                            }
                            Ok(Some(versioned)) => act.cancel_loaded(versioned, reply, ctx),
                        })
                        .then(move |(), act, _| waited.into_actor(act)),
                )
            }
        }
    }
}

impl Handler<SetParallelism> for PoolActor {
    type Result = ();

    fn handle(&mut self, SetParallelism(n): SetParallelism, ctx: &mut Context<Self>) {
        self.set_parallelism(n, ctx);
    }
}

impl Handler<GetPoolStats> for PoolActor {
    type Result = MessageResult<GetPoolStats>;

    fn handle(&mut self, _: GetPoolStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<HandlersChanged> for PoolActor {
    type Result = ();

    fn handle(&mut self, _: HandlersChanged, ctx: &mut Context<Self>) {
        self.unpark(ctx);
    }
}
