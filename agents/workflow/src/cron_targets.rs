//! What a fired `[crons.NAME]` does: the daemon's [`CronHandler`] over agents and workflows.
//!
//! An agent target answers the cron's input in the thread `cron-{name}` of the group
//! [`CRON_GROUP`] (created on the first fire), so its runs form one conversation; a workflow
//! target submits a run of that group, by the user named after the cron (the fire ends once
//! the run is durably submitted, not when it completes).

use std::sync::Arc;

use troupe_config::CronTarget;
use troupe_runtime::cron::{cron_handler_fn, CronHandler};

use crate::{Router, Submit};
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
                        workflow,
                        group: CRON_GROUP.to_owned(),
                        user: cron,
                        input,
                    };
                    return router
                        .submit(submit)
                        .await
                        .map(|_| ())
                        .map_err(|err| err.to_string());
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
                    Err(err) => return Err(err.to_string()),
                }
            }
            let ask = Ask {
                group: CRON_GROUP.to_owned(),
                user: cron,
                agent,
                thread: Some(thread),
                input,
                stream: false,
                started: None,
            };
            talk.ask(ask)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        }
    })
}
