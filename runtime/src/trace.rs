//! Tracing conventions: the fixed span field names every component uses, the span names, and
//! [`Traced`], the envelope that carries the sender's span across an actor mailbox.
//!
//! # Field names
//!
//! A field means the same thing in every span, so a log search or a trace backend query on
//! one name finds a task wherever it went. The names are the
//! constants of this module; spans write them as plain identifiers (`task = %id`), and the
//! span test (`tests/spans.rs`) checks every span a task opens against them.
//!
//! | field      | meaning                                                        |
//! |------------|----------------------------------------------------------------|
//! | `task`     | the ingress task id (the publisher's `id`)                     |
//! | `group`    | the tenant group the work runs for                             |
//! | `agent`    | the `[agents.NAME]` that answers                               |
//! | `workflow` | the `[workflows.NAME]` of a run                                |
//! | `run`      | a workflow run id                                              |
//! | `step`     | a workflow step key (`name`, or `parent/child` inside a step)  |
//! | `thread`   | the conversation thread id                                     |
//! | `model`    | the `[models.NAME]` called                                     |
//! | `attempt`  | the 1-based attempt of a retried operation (model call, work)  |
//! | `tool`     | the `[tools.NAME]` called                                      |
//!
//! Other fields are local to one span and named for what they hold ([`LOCAL`]): `entry`
//! (stream entry id), `call` (the 1-based model call of an agent run), `pool`, `work`, `kind`,
//! `cron`, `tick`, `namespace`, `key`, `limit`, `count`, `retry_after`. A new span uses these
//! names or adds its own to [`LOCAL`].
//!
//! # Span names
//!
//! `component.action`, lower case. Spans that follow a task are at `INFO` (created once per
//! hop, never formatted unless a subscriber records them); events inside a task are at
//! `DEBUG` or below, except warnings and errors. The tree a task makes:
//!
//! ```text
//! task                 task, group, agent | workflow, entry; thread | run once known
//! └ thread.turn        group, thread, agent          (ThreadActor, across the mailbox)
//!   └ agent.run        agent, group, thread          (AgentActor, across the mailbox)
//!     ├ model.call     model, call
//!     │ └ model.attempt  model, attempt            (openai models: one per retry)
//!     └ tool           tool, group, agent, thread
//! ```
//!
//! Elsewhere: `pool.work` (pool, work, kind, attempt), `pool.enqueue` (debug), `cron.tick`
//! (cron, tick), `rag.ingest` and `rag.search` (group, namespace), `limit.*` (debug; limit,
//! key, count). Workflows: `workflow.run` (run, group), `workflow.step` (workflow, run, step,
//! group) and `workflow.call` (the pooled call: workflow, run, step, group, agent, attempt).
//! A step's agent call is a one-shot turn in the run's own task, so its `thread.turn` is a
//! child of the step's span (or of `workflow.call`). A run submitted by this daemon (for an
//! ingress task, say) links to the submitter's span with `follows_from`; the task span also
//! records the `run` id.
//!
//! # Following a task across actors
//!
//! An actix message does not carry the sender's span: the handler runs later, on the
//! receiver's arbiter, where the current span is none. So a message that continues a task
//! carries the span itself, as tower's `Buffer` does with its requests:
//!
//! 1. The sender captures `tracing::Span::current()` when it builds the message: a message
//!    type gets a `span: tracing::Span` field, or is wrapped in [`Traced`] (the
//!    [`Registry`](crate::Registry) wraps every message it delivers, so entity actors get
//!    their caller's span without any change to the message types).
//! 2. The handler creates its own span with `parent: &msg.span` (the hop is part of the
//!    sender's work) and instruments the future it returns with it, so everything awaited
//!    inside (stores, models, tools, further messages) is in the tree. Work that outlives the
//!    sender (a run started by a submit) uses `follows_from` instead of `parent`.
//! 3. A message handled synchronously may just enter the carried span around the handler
//!    ([`forward_traced!`](crate::forward_traced)).
//!
//! Capturing and carrying a span costs a thread-local read and a reference count; nothing is
//! formatted unless a subscriber is interested in the span.

use actix::Message;
use tracing::Span;

/// Field: the ingress task id.
pub const TASK: &str = "task";
/// Field: the tenant group.
pub const GROUP: &str = "group";
/// Field: the agent's name.
pub const AGENT: &str = "agent";
/// Field: the workflow's name.
pub const WORKFLOW: &str = "workflow";
/// Field: a workflow run id.
pub const RUN: &str = "run";
/// Field: a workflow step key.
pub const STEP: &str = "step";
/// Field: a conversation thread id.
pub const THREAD: &str = "thread";
/// Field: the model's name.
pub const MODEL: &str = "model";
/// Field: the 1-based attempt of a retried operation.
pub const ATTEMPT: &str = "attempt";
/// Field: the tool's name.
pub const TOOL: &str = "tool";

/// Every fixed field name, in the order of the table above.
pub const FIELDS: &[&str] = &[
    TASK, GROUP, AGENT, WORKFLOW, RUN, STEP, THREAD, MODEL, ATTEMPT, TOOL,
];

/// Field names local to one kind of span (see the module documentation).
pub const LOCAL: &[&str] = &[
    "entry",
    "call",
    "pool",
    "work",
    "kind",
    "cron",
    "tick",
    "namespace",
    "key",
    "limit",
    "count",
    "retry_after",
];

/// The span names of a task's tree (see the module documentation).
pub mod span {
    /// An ingress task, from its entry read to its result written.
    pub const TASK: &str = "task";
    /// A turn (or a resumed turn) of a thread.
    pub const THREAD_TURN: &str = "thread.turn";
    /// An agent's loop for one turn.
    pub const AGENT_RUN: &str = "agent.run";
    /// One model call of an agent run, retries included.
    pub const MODEL_CALL: &str = "model.call";
    /// One attempt of a model call.
    pub const MODEL_ATTEMPT: &str = "model.attempt";
    /// One tool call.
    pub const TOOL: &str = "tool";
    /// A workflow run (kept by the workflow engine).
    pub const WORKFLOW_RUN: &str = "workflow.run";
    /// A workflow step (kept by the workflow engine).
    pub const WORKFLOW_STEP: &str = "workflow.step";
    /// One attempt of a pool work item.
    pub const POOL_WORK: &str = "pool.work";
    /// One cron tick.
    pub const CRON_TICK: &str = "cron.tick";
}

/// A message together with the span of the code that sent it.
///
/// The receiving handler continues the sender's work under `span` (see the module
/// documentation). `Traced<M>` answers what `M` answers.
#[derive(Debug)]
pub struct Traced<M> {
    /// The message.
    pub msg: M,
    /// The sender's span when the message was built.
    pub span: Span,
}

impl<M> Traced<M> {
    /// `msg` with the current span.
    pub fn new(msg: M) -> Self {
        Traced {
            msg,
            span: Span::current(),
        }
    }
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

/// Implements `Handler<Traced<M>>` for an actor that handles `M`, for each `M` listed: the
/// handler runs inside the sender's span and answers what the `M` handler answers.
///
/// ```ignore
/// troupe_runtime::forward_traced!(MyEntity => Get, Put);
/// ```
///
/// The calling crate must depend on `actix` (the impls name `::actix`). Only the synchronous
/// part of the handler runs in the span; a handler returning a future that should stay in
/// the sender's tree implements `Handler<Traced<M>>` itself and instruments its future (see
/// the module documentation).
#[macro_export]
macro_rules! forward_traced {
    ($actor:ty => $($msg:ty),+ $(,)?) => {$(
        impl ::actix::Handler<$crate::trace::Traced<$msg>> for $actor {
            type Result = <$actor as ::actix::Handler<$msg>>::Result;

            fn handle(
                &mut self,
                traced: $crate::trace::Traced<$msg>,
                ctx: &mut <$actor as ::actix::Actor>::Context,
            ) -> Self::Result {
                let _entered = traced.span.enter();
                <$actor as ::actix::Handler<$msg>>::handle(self, traced.msg, ctx)
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_distinct_identifiers() {
        let mut seen = std::collections::BTreeSet::new();
        for name in FIELDS.iter().chain(LOCAL) {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not a plain identifier"
            );
            assert!(seen.insert(*name), "{name} twice");
        }
    }
}
