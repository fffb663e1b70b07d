//! One journal entry ([`Entry`]): what it records ([`EntryKind`]) and the output it carries
//! ([`OutputRef`]).

use serde::{Deserialize, Serialize};
use troupe_runtime::clock::now_ms;

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A step (or one call of it) started; an attempt number in `detail`.
    Started,
    /// A step (or call) finished with `output`.
    Completed,
    /// An attempt failed (`detail`); it may be retried.
    AttemptFailed,
    /// A decision worth knowing (a route's fallback, a loop's scores), in `detail`.
    Note,
    /// The run waits until `until` (a sleep, or an event's deadline).
    Waiting,
    /// The run was restarted from the step `step`; results of it and later steps are void.
    Restarted,
    /// A daemon (`detail`) adopted the run.
    Adopted,
    /// The run ended with status `detail`.
    Finished,
}

/// An output in the journal: inline, or stored once under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputRef {
    /// The text itself.
    Inline(String),
    /// `wf:{group}:{run}:out:{hash}`, of `len` bytes.
    Stored {
        /// Its hash.
        hash: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When, ms since the epoch.
    pub at: u64,
    /// The journal key: a step name, `step/branch`, `step/iteration/agent`, `child/step`…
    pub step: String,
    /// What happened.
    pub kind: EntryKind,
    /// The output, for `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputRef>,
    /// Details (attempt, error, note, owner, status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A deadline, ms since the epoch, for `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl Entry {
    /// An entry of `kind` for `step`, now.
    pub fn new(step: &str, kind: EntryKind) -> Entry {
        Entry {
            at: now_ms(),
            step: step.to_owned(),
            kind,
            output: None,
            detail: None,
            until: None,
        }
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = Some(detail.into());
        self
    }
}
