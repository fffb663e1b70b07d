//! Fuzz target `task`: arbitrary bytes as the `task` field of an ingress entry, through
//! `troupe_agents::ingress::wire::parse` with small fixed limits. Property: a `Rejection` or a
//! task that satisfies the limits, never a panic.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use troupe_agents::ingress::wire::{self, Limits, Target, TaskResult};

/// The limits' results stream and the store's key prefix.
const RESULTS: &str = "results";
const PREFIX: &str = "tp:";
const MAX_INPUT_BYTES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let agents = BTreeSet::from(["assistant".to_owned(), "researcher".to_owned()]);
    let workflows = BTreeSet::from(["triage".to_owned()]);
    let limits = Limits {
        agents: &agents,
        workflows: &workflows,
        max_input_bytes: MAX_INPUT_BYTES,
        results: RESULTS,
        prefix: PREFIX,
    };
    let task = match wire::parse("1-0", Some(data), &limits) {
        Ok(task) => task,
        Err(rejection) => {
            let _ = (rejection.kind(), rejection.to_string());
            return;
        }
    };
    assert!(!task.id.is_empty());
    assert!(!task.group.trim().is_empty() && !task.user.trim().is_empty());
    assert!(task.input.len() <= MAX_INPUT_BYTES);
    match &task.target {
        Target::Agent(agent) => assert!(agents.contains(agent)),
        Target::Workflow(workflow) => assert!(workflows.contains(workflow)),
    }
    let suffix = task.reply_to.strip_prefix(RESULTS);
    assert!(
        suffix.is_some_and(|rest| rest.is_empty() || rest.len() > 1 && rest.starts_with(':')),
        "reply_to {:?}",
        task.reply_to
    );
    // The notice written back for it reads back as written.
    let notice = TaskResult::accepted(&task.id, task.thread.clone(), None, None);
    let json = serde_json::to_string(&notice).unwrap_or_default();
    assert_eq!(serde_json::from_str::<TaskResult>(&json).ok(), Some(notice));
});
