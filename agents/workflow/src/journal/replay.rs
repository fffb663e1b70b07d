//! [`Replay`]: a journal folded into the results a run reuses, the deadlines it keeps and the
//! steps in flight; restarts void what follows their step.

use std::collections::{BTreeMap, BTreeSet};

use super::entry::{Entry, EntryKind, OutputRef};

/// What a journal says, folded: the results to reuse, the deadlines to keep.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Journal key -> output of completed steps and calls.
    pub completed: BTreeMap<String, OutputRef>,
    /// Journal key -> deadline of sleeps and event waits.
    pub deadlines: BTreeMap<String, u64>,
    /// Journal keys started and not completed (in flight at a crash, or failed).
    pub started: BTreeSet<String>,
}

impl Replay {
    /// Folds `entries`; a restart voids the results of the steps named in `order` from the
    /// restart's step on (`order`: the run workflow's top-level step names in order).
    pub fn fold(entries: &[Entry], order: &[String]) -> Replay {
        let mut replay = Replay::default();
        for entry in entries {
            match entry.kind {
                EntryKind::Started => {
                    replay.started.insert(entry.step.clone());
                }
                EntryKind::Completed => {
                    replay.started.remove(&entry.step);
                    if let Some(output) = &entry.output {
                        replay.completed.insert(entry.step.clone(), output.clone());
                    }
                }
                EntryKind::Waiting => {
                    if let Some(until) = entry.until {
                        replay.deadlines.insert(entry.step.clone(), until);
                    }
                }
                EntryKind::Restarted => {
                    let from = order.iter().position(|s| *s == entry.step).unwrap_or(0);
                    let void: BTreeSet<&str> = order[from..].iter().map(String::as_str).collect();
                    let voided = |key: &String| void.contains(top_step(key));
                    replay.completed.retain(|k, _| !voided(k));
                    replay.deadlines.retain(|k, _| !voided(k));
                    replay.started.retain(|k| !voided(k));
                }
                EntryKind::AttemptFailed
                | EntryKind::Note
                | EntryKind::Adopted
                | EntryKind::Finished => {}
            }
        }
        replay
    }
}

/// The top-level step of a journal key (`research` of `research/web`).
pub fn top_step(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}
