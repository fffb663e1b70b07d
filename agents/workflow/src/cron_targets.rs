//! What a fired `[crons.NAME]` does: the daemon's [`CronHandler`] over agents and workflows.
//!
//! An agent target answers the cron's input in the thread `cron-{name}` of the group
//! [`CRON_GROUP`] (created on the first fire), so its runs form one conversation; a workflow
//! target submits a run of that group, by the user named after the cron (the fire ends once
//! the run is durably submitted, not when it completes).

use std::sync::Arc;
use troupe_runtime::retry::Transient as _;

use troupe_config::CronTarget;
use troupe_runtime::cron::{cron_handler_fn, CronFireError, CronHandler};

use crate::{Router, Submit, WorkflowError};
use troupe_agents::conversations::{Ask, Conversations};
use troupe_agents::error::AgentError;
use troupe_agents::thread_store::NewThread;

/// The group cron-fired agent turns and workflow runs belong to (reserved: see
/// [`troupe_config::SYSTEM_GROUP`]).
pub const CRON_GROUP: &str = troupe_config::SYSTEM_GROUP;

/// The handler of cron fires (see the module documentation).
pub fn cron_targets(talk: Conversations, router: Router) -> Arc<dyn CronHandler> {
    cron_handler_fn(move |cron: String, target: CronTarget, input: String| {
        let talk = talk.clone();
        let router = router.clone();
        async move {
            let agent = match target {
                CronTarget::Agent(agent) => agent,
                CronTarget::Workflow(workflow) => {
                    let submit = Submit {
                        workflow: workflow.clone(),
                        group: CRON_GROUP.to_owned(),
                        user: cron,
                        input,
                    };
                    return router
                        .submit(submit)
                        .await
                        .map(|_| ())
                        .map_err(|err| workflow_failure(&workflow, err));
                }
            };
            let thread = format!("cron-{cron}");
            if let Err(AgentError::NotFound { .. }) = talk.thread(CRON_GROUP, &thread).await {
                let new = NewThread {
                    group: CRON_GROUP.to_owned(),
                    user: cron.clone(),
                    id: Some(thread.clone()),
                    title: format!("cron {cron}"),
                    metadata: serde_json::Value::Null,
                };
                match talk.create_thread(new).await {
                    Ok(_) | Err(AgentError::Conflict { .. }) => {}
                    Err(err) => return Err(agent_failure(&agent, err)),
                }
            }
            let ask = Ask {
                group: CRON_GROUP.to_owned(),
                user: cron,
                agent: agent.clone(),
                thread: Some(thread),
                input,
                stream: false,
                started: None,
            };
            talk.ask(ask)
                .await
                .map(|_| ())
                .map_err(|err| agent_failure(&agent, err))
        }
    })
}

/// An agent target's failure, typed: the agent does not exist, the store failed, or the
/// agent's own error (kept as the source, with its retry decision).
fn agent_failure(agent: &str, err: AgentError) -> CronFireError {
    match err {
        AgentError::NotFound { what: "agent", id } if id == agent => CronFireError::UnknownTarget {
            target: CronTarget::Agent(id),
        },
        AgentError::Store(err) => CronFireError::Store(err),
        err => CronFireError::Target {
            retryable: err.is_retryable(),
            source: Box::new(err),
        },
    }
}

/// A workflow target's failure, typed: the workflow does not exist, the store failed, or the
/// submission's own error (kept as the source, with its retry decision).
fn workflow_failure(workflow: &str, err: WorkflowError) -> CronFireError {
    match err {
        WorkflowError::NotFound {
            what: "workflow",
            id,
        } if id == workflow => CronFireError::UnknownTarget {
            target: CronTarget::Workflow(id),
        },
        WorkflowError::Store(err) => CronFireError::Store(err),
        err => CronFireError::Target {
            retryable: err.is_retryable(),
            source: Box::new(err),
        },
    }
}
