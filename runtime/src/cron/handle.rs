//! [`Crons`]: the scheduler's handle (register, delete, list) and the reading of a cron's
//! history ([`history`]), which needs only the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use troupe_config::CronSettings;

use super::{
    key, CronError, CronHandler, CronInfo, CronOptions, CronScheduler, DeleteCron, HistoryEntry,
    ListCrons, RegisterCron, TickOutcome,
};
use crate::actor_ref::ActorRef;
use crate::store::Store;
use crate::supervisor::{ChildOptions, SupervisorSpec};

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
