//! Crons: targets (agents, workflows) invoked on a schedule — a cron expression with optional
//! seconds and a time zone, or a fixed interval — from the config or registered at run time.
//!
//! ```text
//! cron:defs                  hash    name -> JSON definition (config and run-time crons)
//! cron:{name}:last           string  the last tick claimed, by whom, and whether it was decided
//!                                    (`claim.rs`); expires a week after the tick that follows
//! cron:{name}:running        lease   held while a fire of this cron runs
//! cron:{name}:history        stream  one entry per tick: fired / skipped / failed (+ failed
//!                                    after fired); capped, expires a week after its last entry
//! ```
//!
//! Exactly once per tick with several daemons: every daemon computes the same tick times
//! ([`CronSchedule`]); to fire tick `T` a daemon must claim it in `cron:{name}:last` by
//! compare-and-set, which one daemon does, then decide it (same key, from its own claim)
//! before invoking the target. A claimed tick is fired, skipped or recorded as failed: a claim
//! left undecided (its daemon died, or lost the store) is taken over after `claim_timeout` or
//! recorded as failed by the claim of the next tick; store failures on the way are retried
//! within the claim's time and logged. A tick is **skipped** (and recorded so) when the
//! previous fire still holds the running lease. Ticks that pass while no daemon runs are not
//! caught up.
//!
//! The [`CronScheduler`] actor takes [`RegisterCron`], [`DeleteCron`] and [`ListCrons`]
//! (handlers in `handlers.rs`); it is supervised by the daemon's root supervisor. The target
//! is invoked through a [`CronHandler`] the daemon provides.
//!
//! Files: the actor is `scheduler.rs`; one tick, from its claim to its record, `fire.rs`
//! (the claim's rules `claim.rs`); the [`Crons`] handle and the history reader `handle.rs`;
//! the target interface `target.rs`; schedules `schedule.rs`; messages and stored records
//! `messages.rs`.

mod claim;
mod error;
mod fire;
mod handle;
mod handlers;
mod messages;
mod schedule;
mod scheduler;
mod target;

use std::time::Duration;

pub use self::error::{CronError, CronFireError};
pub use self::handle::{history, Crons};
pub use self::messages::{
    CronInfo, CronOrigin, DeleteCron, HistoryEntry, ListCrons, RegisterCron, TickOutcome,
};
pub use self::schedule::CronSchedule;
pub use self::scheduler::CronScheduler;
pub use self::target::{cron_handler_fn, CronHandler};

/// The hash of cron definitions.
const DEFS: &str = "cron:defs";

/// The key `what` (`last`, `running`, `history`) of the cron `cron`.
fn key(cron: &str, what: &str) -> String {
    format!("cron:{cron}:{what}")
}

/// Runtime knobs of the scheduler.
#[derive(Debug, Clone)]
pub struct CronOptions {
    /// This daemon's name in histories and lease owners (made unique per incarnation).
    pub daemon: String,
    /// How often the definitions are reloaded (to see crons other daemons registered or
    /// deleted).
    pub refresh: Duration,
    /// TTL of the running lease, renewed every third of it while a fire runs; a daemon that
    /// dies mid-fire blocks the cron's ticks at most this long.
    pub run_lease: Duration,
    /// How long a daemon that claimed a tick has to decide it (take the running lease, mark
    /// it fired or skipped); after that another daemon may take the tick over.
    pub claim_timeout: Duration,
    /// Entries kept per cron history.
    pub history_len: u64,
}

impl Default for CronOptions {
    fn default() -> Self {
        CronOptions {
            daemon: "troupe".to_owned(),
            refresh: Duration::from_secs(5),
            run_lease: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(10),
            history_len: 1000,
        }
    }
}
