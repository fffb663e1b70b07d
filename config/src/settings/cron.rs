//! `[crons.X]`: a recurring task: when it fires and what it runs.

use std::time::Duration;

/// One cron entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSettings {
    /// When it fires.
    pub schedule: Schedule,
    /// Time zone of the cron expression (as written, e.g. `UTC`).
    pub timezone: Option<String>,
    /// What it runs.
    pub target: CronTarget,
    /// Input handed to the target.
    pub input: String,
}

/// When a cron fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A cron expression of 5 or 6 fields (seconds first when 6).
    Cron(String),
    /// A fixed interval.
    Every(Duration),
}

/// What a cron runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronTarget {
    /// Name of an `[agents.X]`.
    Agent(String),
    /// Name of a `[workflows.X]`.
    Workflow(String),
}
