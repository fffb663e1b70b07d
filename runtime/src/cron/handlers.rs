//! How the [`CronScheduler`] handles each message: every change is persisted before it is
//! applied locally, so the other daemons see it at their next refresh.

use actix::prelude::*;

use super::messages::{CronInfo, CronOrigin, DeleteCron, ListCrons, RegisterCron, StoredCron};
use super::{CronError, CronSchedule, CronScheduler, DEFS};

impl Handler<RegisterCron> for CronScheduler {
    type Result = ResponseActFuture<Self, Result<(), CronError>>;

    fn handle(&mut self, msg: RegisterCron, _: &mut Context<Self>) -> Self::Result {
        let RegisterCron { name, settings } = msg;
        if let Err(err) = CronSchedule::parse(&name, &settings) {
            return Box::pin(fut::ready(Err(err)));
        }
        let stored = StoredCron::new(&settings, CronOrigin::Runtime);
        let (store, bytes) = (self.store.clone(), stored.encode());
        let field = name.clone();
        Box::pin(
            async move {
                store
                    .hset(DEFS, &[(field.as_str(), bytes.as_slice())])
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                result?;
                tracing::info!(cron = %name, "cron registered");
                act.schedule(&name, stored, ctx);
                Ok(())
            }),
        )
    }
}

impl Handler<DeleteCron> for CronScheduler {
    type Result = ResponseActFuture<Self, Result<bool, CronError>>;

    fn handle(&mut self, DeleteCron(name): DeleteCron, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let field = name.clone();
        Box::pin(
            async move { store.hdel(DEFS, &[field.as_str()]).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let existed = result? > 0;
                    let scheduled = act.unschedule(&name, ctx);
                    tracing::info!(cron = %name, existed, "cron deleted");
                    Ok(existed || scheduled)
                }),
        )
    }
}

impl Handler<ListCrons> for CronScheduler {
    type Result = ResponseFuture<Result<Vec<CronInfo>, CronError>>;

    fn handle(&mut self, _: ListCrons, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            let defs = store.hgetall(DEFS).await?;
            Ok(defs
                .into_iter()
                .filter_map(|(name, bytes)| {
                    let stored = StoredCron::decode(&bytes)?;
                    Some(CronInfo {
                        settings: stored.settings()?,
                        origin: stored.origin,
                        name,
                    })
                })
                .collect())
        })
    }
}
