//! The definition snapshot of a run (`wf:{group}:{run}:def`): the definitions it started with,
//! and their hash.

use std::collections::BTreeMap;
use std::hash::Hasher as _;

use fnv::FnvHasher;

use serde::{Deserialize, Serialize};
use troupe_config::{StepKind, WorkflowSettings};

use crate::error::WorkflowError;

/// The definitions a run started with: its workflow and every workflow it runs as a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The run's workflow.
    pub workflow: String,
    /// Name -> definition.
    pub definitions: BTreeMap<String, WorkflowSettings>,
    /// Hash of `definitions` (see [`definition_hash`]).
    pub hash: String,
}

impl Snapshot {
    /// The snapshot of `workflow` (and its children) from `all`.
    pub fn of(
        workflow: &str,
        all: &BTreeMap<String, WorkflowSettings>,
    ) -> Result<Snapshot, WorkflowError> {
        let mut definitions = BTreeMap::new();
        let mut todo = vec![workflow.to_owned()];
        while let Some(name) = todo.pop() {
            if definitions.contains_key(&name) {
                continue;
            }
            let def = all.get(&name).ok_or_else(|| WorkflowError::NotFound {
                what: "workflow",
                id: name.clone(),
            })?;
            for step in &def.steps {
                if let troupe_config::StepKind::Workflow { workflow } = &step.kind {
                    todo.push(workflow.clone());
                }
            }
            definitions.insert(name, def.clone());
        }
        let hash = definition_hash(&definitions);
        Ok(Snapshot {
            workflow: workflow.to_owned(),
            definitions,
            hash,
        })
    }

    /// The names of `workflow`'s top-level steps, in order (none if the snapshot has no such
    /// workflow): what a run's status lists, and what a restart voids results along.
    pub fn top_steps(&self, workflow: &str) -> Vec<String> {
        self.definitions
            .get(workflow)
            .map(|d| d.steps.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// `workflow`'s last step, if it is one call (an `agent` step).
    pub fn last_call(&self, workflow: &str) -> Option<&str> {
        self.definitions
            .get(workflow)
            .and_then(|d| d.steps.last())
            .filter(|step| matches!(step.kind, StepKind::Agent { .. }))
            .map(|step| step.name.as_str())
    }

    /// Whether any of the definitions has a `wait_event` step.
    pub fn waits_for_events(&self) -> bool {
        self.definitions.values().any(|d| {
            d.steps
                .iter()
                .any(|s| matches!(s.kind, StepKind::WaitEvent { .. }))
        })
    }
}

/// A stable hash of definitions (FNV-1a over their JSON), hex.
pub fn definition_hash(definitions: &BTreeMap<String, WorkflowSettings>) -> String {
    let bytes = serde_json::to_vec(definitions).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

/// FNV-1a, 64 bits.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hasher = FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a() {
        // Stored in every run's snapshot and output references: it must not change.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
