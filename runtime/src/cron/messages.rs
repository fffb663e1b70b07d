//! The messages the [`CronScheduler`](super::CronScheduler) takes, and what it records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Message;
use serde::{Deserialize, Serialize};
use troupe_config::{CronSettings, CronTarget, Schedule};

use super::CronError;

/// Registers (or replaces) a cron at run time; it is persisted and every daemon sharing the
/// store picks it up.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CronError>")]
pub struct RegisterCron {
    /// Its name.
    pub name: String,
    /// Its schedule, target and input.
    pub settings: CronSettings,
}

/// Deletes a cron (from the store too); replies whether it existed.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, CronError>")]
pub struct DeleteCron(pub String);

/// Lists the crons in the store, by name.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<CronInfo>, CronError>")]
pub struct ListCrons;

/// Where a cron definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CronOrigin {
    /// The config file (rewritten from it at every start; removed when it leaves the file).
    Config,
    /// Registered at run time.
    Runtime,
}

/// One cron, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronInfo {
    /// Its name.
    pub name: String,
    /// Its schedule, target and input.
    pub settings: CronSettings,
    /// Where it came from.
    pub origin: CronOrigin,
}

/// What happened at one tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// The target was invoked.
    Fired,
    /// Not invoked: the previous run was still going.
    Skipped,
    /// The target was invoked and failed (recorded after the `Fired` entry of its tick).
    Failed,
}

/// One entry of a cron's history (`cron:{name}:history`, a capped stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The tick (its scheduled time).
    pub tick: SystemTime,
    /// What happened.
    pub outcome: TickOutcome,
    /// The daemon that decided it.
    pub daemon: String,
    /// The error (failed) or reason (skipped).
    pub detail: String,
}

impl HistoryEntry {
    /// The tick in ms since the Unix epoch.
    pub fn tick_ms(&self) -> u64 {
        self.tick
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// The persisted form of a cron definition (`cron:defs`, one JSON value per name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCron {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workflow: Option<String>,
    input: String,
    pub(crate) origin: CronOrigin,
}

impl StoredCron {
    pub(crate) fn new(settings: &CronSettings, origin: CronOrigin) -> Self {
        let (schedule, every_ms) = match &settings.schedule {
            Schedule::Cron(spec) => (Some(spec.clone()), None),
            Schedule::Every(every) => (
                None,
                Some(u64::try_from(every.as_millis()).unwrap_or(u64::MAX)),
            ),
        };
        let (agent, workflow) = match &settings.target {
            CronTarget::Agent(agent) => (Some(agent.clone()), None),
            CronTarget::Workflow(workflow) => (None, Some(workflow.clone())),
        };
        StoredCron {
            schedule,
            every_ms,
            timezone: settings.timezone.clone(),
            agent,
            workflow,
            input: settings.input.clone(),
            origin,
        }
    }

    /// The settings, or `None` if the stored value is incomplete.
    pub(crate) fn settings(&self) -> Option<CronSettings> {
        let schedule = match (&self.schedule, self.every_ms) {
            (Some(spec), None) => Schedule::Cron(spec.clone()),
            (None, Some(ms)) => Schedule::Every(Duration::from_millis(ms)),
            _ => return None,
        };
        let target = match (&self.agent, &self.workflow) {
            (Some(agent), None) => CronTarget::Agent(agent.clone()),
            (None, Some(workflow)) => CronTarget::Workflow(workflow.clone()),
            _ => return None,
        };
        Some(CronSettings {
            schedule,
            timezone: self.timezone.clone(),
            target,
            input: self.input.clone(),
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_crons_round_trip() {
        for settings in [
            CronSettings {
                schedule: Schedule::Cron("0 3 * * *".into()),
                timezone: Some("Europe/Paris".into()),
                target: CronTarget::Workflow("w".into()),
                input: "report".into(),
            },
            CronSettings {
                schedule: Schedule::Every(Duration::from_millis(1500)),
                timezone: None,
                target: CronTarget::Agent("a".into()),
                input: String::new(),
            },
        ] {
            let stored = StoredCron::new(&settings, CronOrigin::Runtime);
            let back = StoredCron::decode(&stored.encode());
            assert_eq!(back.as_ref(), Some(&stored));
            assert_eq!(back.and_then(|s| s.settings()), Some(settings));
        }
        assert_eq!(
            StoredCron::decode(b"{\"input\":\"\",\"origin\":\"config\"}")
                .and_then(|s| s.settings()),
            None
        );
    }
}
