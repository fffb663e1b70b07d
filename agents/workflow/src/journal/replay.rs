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

#[cfg(test)]
mod tests {
    use super::*;

    fn started(step: &str) -> Entry {
        Entry::new(step, EntryKind::Started)
    }

    fn completed(step: &str, output: &str) -> Entry {
        let mut entry = Entry::new(step, EntryKind::Completed);
        entry.output = Some(OutputRef::Inline(output.to_owned()));
        entry
    }

    fn waiting(step: &str, until: u64) -> Entry {
        let mut entry = Entry::new(step, EntryKind::Waiting);
        entry.until = Some(until);
        entry
    }

    fn order() -> Vec<String> {
        ["classify", "research", "wait", "synthesis"]
            .map(str::to_owned)
            .to_vec()
    }

    fn outputs(replay: &Replay) -> Vec<(&str, &str)> {
        replay
            .completed
            .iter()
            .map(|(key, output)| match output {
                OutputRef::Inline(text) => (key.as_str(), text.as_str()),
                OutputRef::Stored { hash, .. } => (key.as_str(), hash.as_str()),
            })
            .collect()
    }

    #[test]
    fn a_crashed_runs_journal_reuses_its_completed_calls_and_reruns_the_ones_in_flight() {
        let journal = [
            started("classify"),
            completed("classify", "technical"),
            started("research"),
            started("research/web"),
            completed("research/web", "web notes"),
            started("research/news"),
            Entry::new("research/news", EntryKind::AttemptFailed).detail("attempt 1: 503"),
            Entry::new("", EntryKind::Adopted).detail("d2"),
        ];
        let replay = Replay::fold(&journal, &order());
        assert_eq!(
            outputs(&replay),
            [("classify", "technical"), ("research/web", "web notes")]
        );
        // In flight at the crash: made again (the parallel step itself, and its news call).
        assert_eq!(
            replay
                .started
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["research", "research/news"]
        );
        assert!(replay.deadlines.is_empty());
    }

    #[test]
    fn a_wait_keeps_its_journaled_deadline_and_a_restart_voids_its_step_and_the_later_ones() {
        let journal = [
            completed("classify", "technical"),
            completed("research", "notes"),
            completed("research/web", "web"),
            started("wait"),
            waiting("wait", 5_000),
            completed("wait", "approved"),
            completed("synthesis", "report"),
            Entry::new("", EntryKind::Finished).detail("completed"),
        ];
        let before = Replay::fold(&journal, &order());
        assert_eq!(before.deadlines.get("wait"), Some(&5_000));
        assert_eq!(before.completed.len(), 5);

        // Restarted from `research`: it, its calls and everything after are void; the
        // earlier step is kept. What the restarted run journals afterwards counts again.
        let mut restarted = journal.to_vec();
        restarted.push(Entry::new("research", EntryKind::Restarted));
        let replay = Replay::fold(&restarted, &order());
        assert_eq!(outputs(&replay), [("classify", "technical")]);
        assert!(replay.deadlines.is_empty(), "{:?}", replay.deadlines);
        restarted.push(completed("research/web", "fresh web"));
        let replay = Replay::fold(&restarted, &order());
        assert_eq!(
            outputs(&replay),
            [("classify", "technical"), ("research/web", "fresh web")]
        );
        // A restart from a step the definition no longer has voids everything.
        let mut unknown = journal.to_vec();
        unknown.push(Entry::new("gone", EntryKind::Restarted));
        assert!(Replay::fold(&unknown, &order()).completed.is_empty());
    }

    #[test]
    fn top_step_is_the_key_before_its_first_slash() {
        assert_eq!(top_step("research/web"), "research");
        assert_eq!(top_step("loop/2/judge"), "loop");
        assert_eq!(top_step("classify"), "classify");
    }
}
