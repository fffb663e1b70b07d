//! What every run of a daemon shares ([`Env`]): the store, the conversations its calls go
//! through, limits, pools, knowledge bases, the definition snapshots of the current config
//! ([`Snapshots`]), who waits in this daemon for which run to end ([`Endings`]) and for
//! which run's events ([`Arrivals`]), both in [`Waiters`]; and a run this daemon has just
//! submitted ([`Fresh`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{oneshot, Notify};
use troupe_config::WorkflowSettings;
use troupe_runtime::limit::Limiters;
use troupe_runtime::pool::Pool;
use troupe_runtime::store::Store;

use super::error::WorkflowError;
use super::journal::{RunRecord, Snapshot};
use super::options::RouterOptions;
use troupe_agents::conversations::Conversations;

/// Who waits for the end of which run this daemon runs: run id -> senders told when it ends.
#[derive(Clone, Default)]
pub(crate) struct Endings(Arc<DashMap<String, Vec<oneshot::Sender<()>>>>);

impl Endings {
    /// A receiver told when `run` ends here (or dropped when it stops without ending).
    pub(crate) fn listen(&self, run: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0.entry(run.to_owned()).or_default().push(tx);
        rx
    }

    /// Forgets the listeners of `run` that stopped listening.
    pub(crate) fn prune(&self, run: &str) {
        self.0.remove_if_mut(run, |_, senders| {
            senders.retain(|tx| !tx.is_closed());
            senders.is_empty()
        });
    }

    /// Tells the listeners of `run` that it ended (or stopped here).
    pub(crate) fn ended(&self, run: &str) {
        if let Some((_, senders)) = self.0.remove(run) {
            for tx in senders {
                let _ = tx.send(());
            }
        }
    }
}

/// Who waits for events sent to which run, by the run's events key: a `wait_event` step is
/// woken at once by an event sent through this daemon's [`Runs`](crate::Runs); one sent by
/// another process is seen at the step's next poll.
#[derive(Clone, Default)]
pub(crate) struct Arrivals(Arc<DashMap<String, Arc<Notify>>>);

impl Arrivals {
    /// What a waiter for the events at `key` waits on (create its `notified()` future before
    /// reading the events, so that an event sent in between is not missed).
    pub(crate) fn listen(&self, key: &str) -> Arc<Notify> {
        self.0.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets `key` once no waiter holds it.
    pub(crate) fn forget(&self, key: &str) {
        self.0
            .remove_if(key, |_, notify| Arc::strong_count(notify) == 1);
    }

    /// Wakes the waiters for the events at `key`.
    pub(crate) fn sent(&self, key: &str) {
        if let Some(notify) = self.0.get(key) {
            notify.notify_waiters();
        }
    }
}

/// Who waits in one daemon: for the end of the runs it runs, for the events sent to them.
/// Shared by its runs (which tell) and its [`Runs`](crate::Runs) (which wait and send).
#[derive(Clone, Default)]
pub(crate) struct Waiters {
    pub(crate) endings: Endings,
    pub(crate) arrivals: Arrivals,
}

/// What runs need from the daemon.
pub(crate) struct Env {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) talk: Conversations,
    pub(crate) limiters: Option<Limiters>,
    /// The daemon's work pools, by name: steps that name one run their calls there.
    pub(crate) pools: BTreeMap<String, Pool>,
    /// The definitions of the current config (runs use their own snapshots).
    pub(crate) snapshots: Arc<Snapshots>,
    pub(crate) options: RouterOptions,
    /// Knowledge bases, for `knowledge` steps.
    pub(crate) rag: troupe_agents::rag::Rag,
    /// Waiters for the end of runs and for their events.
    pub(crate) waiters: Waiters,
}

/// The definition snapshots of a config's workflows, made once: what runs submitted with it
/// start with, and what runs compare their own snapshot to.
pub(crate) struct Snapshots {
    workflows: Arc<BTreeMap<String, WorkflowSettings>>,
    /// Workflow -> its snapshot and the snapshot encoded (as stored).
    made: BTreeMap<String, (Arc<Snapshot>, Vec<u8>)>,
}

impl Snapshots {
    pub(crate) fn new(workflows: Arc<BTreeMap<String, WorkflowSettings>>) -> Snapshots {
        let made = workflows
            .keys()
            .filter_map(|name| {
                let snapshot = Snapshot::of(name, &workflows).ok()?;
                let bytes = super::journal::encode(&snapshot).ok()?;
                Some((name.clone(), (Arc::new(snapshot), bytes)))
            })
            .collect();
        Snapshots { workflows, made }
    }

    /// The snapshot of `workflow` and its encoding.
    pub(crate) fn get(&self, workflow: &str) -> Result<(Arc<Snapshot>, &[u8]), WorkflowError> {
        match self.made.get(workflow) {
            Some((snapshot, bytes)) => Ok((snapshot.clone(), bytes)),
            // Not made: say why.
            None => Snapshot::of(workflow, &self.workflows).and_then(|_| {
                Err(WorkflowError::Invalid {
                    what: "workflow",
                    message: format!("the definition of {workflow:?} cannot be encoded"),
                })
            }),
        }
    }

    /// The hash of `workflow`'s current definition.
    pub(crate) fn hash(&self, workflow: &str) -> Option<&str> {
        self.made.get(workflow).map(|(s, _)| s.hash.as_str())
    }
}

/// A run this daemon just submitted, handed to its actor so it need not read it back.
pub(crate) struct Fresh {
    pub(crate) record: RunRecord,
    pub(crate) snapshot: Arc<Snapshot>,
    /// The submitter's span, which the run's span follows from.
    pub(crate) span: tracing::Span,
}
