//! A run's record (`wf:{group}:{run}:meta`): [`RunRecord`], its [`RunStatus`], and the
//! [`Reply`] of an ingress task's run.

use serde::{Deserialize, Serialize};

/// Where the result of an ingress task's run goes when the run ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The task's id.
    pub task: String,
    /// The task's `reply_to` stream.
    pub stream: String,
    /// Approximate MAXLEN of that stream.
    pub max_len: u64,
    /// The stream expires this long (ms) after the result is written (`[ingress]
    /// reply_retention` of the daemon that accepted the task). Records written before the
    /// field existed get the default.
    #[serde(default = "default_reply_retention_ms")]
    pub retention_ms: u64,
}

/// `[ingress] reply_retention`'s default, in ms, for records that carry none.
fn default_reply_retention_ms() -> u64 {
    let default = troupe_config::IngressSettings::default().reply_retention;
    u64::try_from(default.as_millis()).unwrap_or(u64::MAX)
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Submitted or running steps.
    Running,
    /// Waiting for an event (a `wait_event` step).
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Canceled.
    Canceled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled
        )
    }

    /// The status as written in the store and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }
}

/// A run's record (`wf:{group}:{run}:meta`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The tenant group.
    pub group: String,
    /// The user who submitted it.
    pub user: String,
    /// The run's input.
    pub input: String,
    /// Where it is.
    pub status: RunStatus,
    /// Hash of the definition snapshot the run uses.
    pub definition_hash: String,
    /// How many times it was restarted from a step.
    pub restarts: u32,
    /// Submission time, ms since the epoch.
    pub created_ms: u64,
    /// Last status change, ms since the epoch.
    pub updated_ms: u64,
    /// The final output, when completed.
    pub output: Option<String>,
    /// Why it failed, when failed.
    pub error: Option<String>,
    /// The ingress task whose result the run's end writes, if it was submitted for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_recorded_before_retention_existed_decodes_with_the_default() {
        let old = r#"{"task":"t1","stream":"results:acme","max_len":10}"#;
        let reply: Reply = serde_json::from_str(old).expect("an old reply decodes");
        assert_eq!(reply.retention_ms, 24 * 60 * 60 * 1000);
        let new = r#"{"task":"t1","stream":"results:acme","max_len":10,"retention_ms":5}"#;
        let reply: Reply = serde_json::from_str(new).expect("a reply decodes");
        assert_eq!(reply.retention_ms, 5);
    }
}
