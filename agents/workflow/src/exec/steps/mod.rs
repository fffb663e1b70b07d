//! The step interpreter: a workflow's steps in order, each run by its kind, replayed or run
//! and journaled. An `agent` step is one call (`calls.rs`); every other kind has its file:
//! `parallel.rs`, `route.rs`, `refine.rs` (the `loop` step), `sleep.rs`, `wait_event.rs`,
//! `knowledge.rs` and `child.rs` (a child `workflow`). The prompts the `loop` step sends are
//! data, in `prompts.rs`.

mod child;
mod knowledge;
mod parallel;
mod prompts;
mod refine;
mod route;
mod sleep;
mod wait_event;

// The imports of `Exec` (the parent module), shared by its method files.
use super::*;

impl Exec {
    /// Runs workflow `name` (the run's, or a child's with journal keys under `prefix`).
    pub(crate) fn workflow<'a>(
        &'a self,
        name: &'a str,
        prefix: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, WorkflowError>> {
        async move {
            let def: &WorkflowSettings =
                self.snapshot
                    .definitions
                    .get(name)
                    .ok_or_else(|| WorkflowError::NotFound {
                        what: "workflow",
                        id: name.to_owned(),
                    })?;
            let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
            let mut previous = input.to_owned();
            let mut index = 0;
            while let Some(step) = def.steps.get(index) {
                let key = format!("{prefix}{}", step.name);
                let span = tracing::info_span!(
                    troupe_runtime::trace::span::WORKFLOW_STEP,
                    workflow = name,
                    run = %self.record().id,
                    step = %key,
                    group = %self.record().group,
                );
                let text = match &step.input {
                    Some(template) => render(template, input, &outputs).map_err(|source| {
                        WorkflowError::Template {
                            step: key.clone(),
                            source,
                        }
                    })?,
                    None => previous.clone(),
                };
                let (output, jump) = self
                    .step(step, &key, &text, &outputs)
                    .instrument(span)
                    .await?;
                previous = output.output.clone();
                outputs.insert(step.name.clone(), output);
                index = match jump {
                    Some(target) => def.steps.iter().position(|s| s.name == target).ok_or(
                        WorkflowError::NotFound {
                            what: "step",
                            id: target,
                        },
                    )?,
                    None => index + 1,
                };
            }
            Ok(previous)
        }
        .boxed()
    }

    /// Runs one step; returns its output and the step to jump to, if it routes to one.
    pub(super) fn step<'a>(
        &'a self,
        step: &'a StepSettings,
        key: &'a str,
        text: &'a str,
        outputs: &'a BTreeMap<String, StepOutput>,
    ) -> BoxFuture<'a, Result<(StepOutput, Option<String>), WorkflowError>> {
        async move {
            match &step.kind {
                StepKind::Agent { agent } => {
                    let output = self.call(step, key, agent, text).await?;
                    Ok((plain(output), None))
                }
                StepKind::Parallel {
                    agents,
                    max_concurrency,
                } => {
                    self.parallel(step, key, text, agents, *max_concurrency)
                        .await
                }
                StepKind::Route {
                    on,
                    routes,
                    default,
                } => {
                    self.route(step, key, text, outputs, (on, routes, default.as_ref()))
                        .await
                }
                StepKind::Loop {
                    agent,
                    scorers,
                    until_score,
                    max_iterations,
                } => {
                    self.refine(
                        step,
                        key,
                        text,
                        (agent, scorers, *until_score, *max_iterations),
                    )
                    .await
                }
                StepKind::Sleep { duration } => self.sleep(key, text, *duration).await,
                StepKind::WaitEvent { event } => self.wait_event(step, key, event).await,
                StepKind::Knowledge { namespace, top_k } => {
                    self.knowledge_step(key, text, namespace.as_deref(), *top_k)
                        .await
                }
                StepKind::Workflow { workflow } => self.child(key, text, workflow).await,
            }
        }
        .boxed()
    }
}

/// A step's output without branches.
fn plain(output: String) -> StepOutput {
    StepOutput {
        output,
        branches: BTreeMap::new(),
    }
}
