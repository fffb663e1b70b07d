//! `[workflows.X]`: a workflow and its steps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest journal key of a workflow call (`step`, `step/agent`, `step/iteration/agent`,
/// `child-step/…`): the call's thread and pool item id is `wf-{run}[-r{restarts}].{key}`
/// (run ids are 20 characters, restarts at most 10 digits) and must fit in 128 characters.
/// `troupe check` refuses steps that would make longer ones.
pub const MAX_CALL_KEY: usize = 128 - "wf-".len() - 20 - "-r".len() - 10 - ".".len();

/// One workflow: steps run in order (a route may jump forward to a later step).
///
/// Serializable so that a run can keep a snapshot of the definition it started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSettings {
    /// Free text.
    pub description: String,
    /// At least one step; names unique within the workflow.
    pub steps: Vec<StepSettings>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSettings {
    /// Unique within the workflow; later steps refer to it.
    pub name: String,
    /// What the step does.
    pub kind: StepKind,
    /// Input template (`{{input}}`, `{{steps.NAME.output}}`, see [`crate::template`]); `None`
    /// passes the previous step's output (the workflow's input for the first step).
    pub input: Option<String>,
    /// Time allowed for one attempt of each agent call of the step; for `wait_event`, how long
    /// to wait for the event.
    pub timeout: Option<Duration>,
    /// Name of a `[pools.X]` the step's agent calls run in, as work items: its
    /// `max_parallelism` bounds them and its backoff retries them.
    pub pool: Option<String>,
    /// Retries of a failed agent call of the step (0 when `None`).
    pub retries: Option<u32>,
    /// Names of `[limits.X]` each agent call of the step consumes one request of.
    pub limits: Vec<String>,
}

/// Where a route sends a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteTarget {
    /// Run this agent as the route step.
    Agent(String),
    /// Jump forward to this step of the same workflow; steps in between are skipped.
    Step(String),
}

impl RouteTarget {
    /// The agent or step name.
    pub fn name(&self) -> &str {
        match self {
            RouteTarget::Agent(name) | RouteTarget::Step(name) => name,
        }
    }
}

/// The kinds of step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Route on the label an earlier step produced: run an agent, or jump to a later step.
    Route {
        /// Name of an earlier step whose output is the label.
        on: String,
        /// Label -> agent or step.
        routes: BTreeMap<String, RouteTarget>,
        /// Target for labels that match no route (and unparseable answers).
        default: Option<RouteTarget>,
    },
    /// Score the text with the scorers (in parallel) and refine it with `agent` while any
    /// score is below `until_score`, at most `max_iterations` times.
    Loop {
        /// The agent that refines the text.
        agent: String,
        /// Agents that score the text (a number in 0..=1), at least one.
        scorers: Vec<String>,
        /// Every scorer must reach this score (0..=1) for the loop to end early.
        until_score: f64,
        /// Most refinements (> 0): the loop's bound.
        max_iterations: u32,
    },
    /// Wait.
    Sleep {
        /// How long (> 0).
        duration: Duration,
    },
    /// Wait for an external event sent to the run (e.g. a human approval); the step's
    /// `timeout` bounds the wait.
    WaitEvent {
        /// The event's name.
        event: String,
    },
    /// Run another workflow as a child, inside this run's journal.
    Workflow {
        /// Name of a `[workflows.X]`.
        workflow: String,
    },
    /// Search the run's group's knowledge base with the step's input; the output is the
    /// passages found, numbered, followed by their sources.
    Knowledge {
        /// The namespace searched; the group's default namespace when `None`.
        namespace: Option<String>,
        /// Hits (> 0); `[rag] top_k` when `None`.
        top_k: Option<usize>,
    },
}

impl StepKind {
    /// The kind's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Agent { .. } => "agent",
            StepKind::Parallel { .. } => "parallel",
            StepKind::Route { .. } => "route",
            StepKind::Loop { .. } => "loop",
            StepKind::Sleep { .. } => "sleep",
            StepKind::WaitEvent { .. } => "wait_event",
            StepKind::Workflow { .. } => "workflow",
            StepKind::Knowledge { .. } => "knowledge",
        }
    }
}
