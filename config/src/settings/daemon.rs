//! `[daemon]`: settings of the daemon process and its actor system.

use std::net::SocketAddr;
use std::time::Duration;

use crate::defaults;

/// Settings of the daemon process and its actor system.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Consumer name of this daemon (unique per process); `<hostname>-<pid>` when not given.
    pub name: String,
    /// Time given to actors to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Idle per-entity actors are passivated after this long.
    pub passivate_after: Duration,
    /// A thread no turn touched for this long is gone: its keys expire, and it leaves the
    /// thread indexes. Every turn starts the period again.
    pub thread_retention: Duration,
    /// An ended workflow run's record, journal and outputs, and the threads of its calls,
    /// expire this long after its end.
    pub run_retention: Duration,
    /// Bounded mailbox size of every actor (> 0).
    pub mailbox_capacity: usize,
    /// Restart intensity: at most this many restarts ...
    pub max_restarts: u32,
    /// ... within this window, then the supervisor escalates.
    pub restart_window: Duration,
    /// Actor threads (arbiters); 0 means one per CPU.
    pub workers: usize,
    /// Workflow runs this daemon executes at once (> 0); more wait for a slot.
    pub max_runs: usize,
    /// Workflow runs of one group this daemon executes at once (> 0); the group's others wait
    /// in the store while other groups' runs are adopted. `max_runs` unless set.
    pub max_runs_per_group: usize,
    /// Where to serve metrics, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for DaemonSettings {
    /// The defaults, with the name computed from this host and process.
    fn default() -> Self {
        Self {
            name: default_name(&[]),
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            passivate_after: defaults::PASSIVATE_AFTER,
            thread_retention: defaults::THREAD_RETENTION,
            run_retention: defaults::RUN_RETENTION,
            mailbox_capacity: defaults::MAILBOX_CAPACITY,
            max_restarts: defaults::MAX_RESTARTS,
            restart_window: defaults::RESTART_WINDOW,
            workers: defaults::WORKERS,
            max_runs: defaults::MAX_RUNS,
            max_runs_per_group: defaults::MAX_RUNS,
            metrics_addr: None,
        }
    }
}

/// `<hostname>-<pid>`: the host name from `HOSTNAME` in `env`, else `/etc/hostname`, else
/// `troupe`.
pub(crate) fn default_name(env: &[(String, String)]) -> String {
    let from_env = env
        .iter()
        .find(|(key, _)| key == "HOSTNAME")
        .map(|(_, value)| value.trim().to_owned());
    let host = from_env
        .filter(|host| !host.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| defaults::HOSTNAME_FALLBACK.to_owned());
    format!("{host}-{}", std::process::id())
}
