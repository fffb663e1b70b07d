//! `[workflows.X]`: a workflow and its steps.

use std::collections::BTreeMap;
use std::time::Duration;

/// One workflow: steps run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSettings {
    /// Free text.
    pub description: String,
    /// At least one step; names unique within the workflow.
    pub steps: Vec<StepSettings>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSettings {
    /// Unique within the workflow; later steps refer to it.
    pub name: String,
    /// What the step does.
    pub kind: StepKind,
    /// Input template (`{{input}}`, `{{steps.NAME}}`); `None` passes the previous output.
    pub input: Option<String>,
    /// Time allowed for the step.
    pub timeout: Option<Duration>,
    /// Name of a `[pools.X]` the step's jobs run in.
    pub pool: Option<String>,
    /// Retries of the step.
    pub retries: Option<u32>,
}

/// The kinds of step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Run one agent.
    Agent {
        /// Name of an `[agents.X]`.
        agent: String,
    },
    /// Run several agents on the same input at once.
    Parallel {
        /// Names of `[agents.X]`, at least one.
        agents: Vec<String>,
        /// How many run at once (> 0); all when `None`.
        max_concurrency: Option<usize>,
    },
    /// Run the agent chosen by the label an earlier step produced.
    Route {
        /// Name of an earlier step whose output is the label.
        on: String,
        /// Label -> agent name.
        routes: BTreeMap<String, String>,
        /// Agent for labels not in `routes`.
        default: Option<String>,
    },
}

impl StepKind {
    /// The kind's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Agent { .. } => "agent",
            StepKind::Parallel { .. } => "parallel",
            StepKind::Route { .. } => "route",
        }
    }
}
