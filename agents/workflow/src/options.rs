//! How the router runs workflows: [`RouterOptions`] and the step hook tests inject faults
//! through.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::ArbiterHandle;

/// How the router runs workflows.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// This daemon's name: the owner of the leases it takes. A daemon restarted under the same
    /// name takes its runs back at once; two live daemons must have different names.
    pub owner: String,
    /// Lease of a run: another daemon adopts the run this long after its owner stopped
    /// renewing it (renewed every third of it).
    pub lease: Duration,
    /// How often the index of unfinished runs is scanned for runs to adopt: the safety net
    /// for runs no notice told of (a dead daemon's, whose lease expired; a notice missed).
    /// Runs opened by any process are adopted at their `opened` notice.
    pub scan: Duration,
    /// How long a finished run's record and journal are kept.
    pub retention: Duration,
    /// How often a run waiting for an event looks for it in the store, in case its notice
    /// was missed (an event sent through any process's `Runs` wakes it at once).
    pub event_poll: Duration,
    /// Most runs this daemon runs at once; more wait in the store.
    pub max_runs: usize,
    /// Most runs of one group this daemon runs at once; the group's others wait in the store
    /// while other groups' runs are adopted.
    pub max_runs_per_group: usize,
    /// How often a run awaiting a pool item reads the item's record, in case its end is
    /// not notified (another daemon's pool ran it, or the run took over an earlier item).
    pub pool_poll: Duration,
    /// Called when a step (or one call of it) starts; `None` in the daemon.
    pub on_step_start: Option<StepHook>,
    /// The arbiters (threads) runs are spread over, round-robin; none: the router's.
    pub arbiters: Vec<ArbiterHandle>,
}

/// How long a finished run's record and journal are kept by default (7 days); also the
/// expiry of a run record whose creation was cut short.
pub const RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A function called with a step's journal key (`step`, `step/branch`) each time the step or
/// one of its calls starts: after its `started` entry is journaled, before its work, in the
/// run's own task — so a panic in it is a panic of the run. For tests (fault injection) and
/// instrumentation.
#[derive(Clone)]
pub struct StepHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepHook")
    }
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            owner: "troupe".to_owned(),
            lease: Duration::from_secs(10),
            scan: Duration::from_secs(1),
            retention: RUN_RETENTION,
            event_poll: Duration::from_secs(1),
            max_runs: 1000,
            max_runs_per_group: 1000,
            pool_poll: Duration::from_secs(1),
            on_step_start: None,
            arbiters: Vec::new(),
        }
    }
}
