//! Validation of `[workflows.X]`: the workflow as a whole — its steps (each validated in
//! `steps.rs`), steps no path reaches, child-workflow cycles, and the length of the call keys
//! its steps make.

mod steps;

use std::collections::BTreeMap;

use super::Ctx;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawStep, RawWorkflow};
use crate::settings::{RouteTarget, StepKind, StepSettings, WorkflowSettings, MAX_CALL_KEY};

pub(super) fn workflow(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    raw: &RawWorkflow,
    config: &RawConfig,
) -> WorkflowSettings {
    let steps_at = at.key("steps");
    let raw_steps = raw.steps.as_deref().unwrap_or_default();
    if raw_steps.is_empty() {
        ctx.error(&steps_at, "a workflow needs at least one step");
    }
    let errors_before = ctx.diagnostics.len();
    let mut steps = Vec::with_capacity(raw_steps.len());
    for (index, step) in raw_steps.iter().enumerate() {
        steps.push(steps::step(
            ctx,
            &steps_at.index(index),
            step,
            &raw_steps[..index],
            raw_steps,
            config,
        ));
    }
    // Reachability only means something once the steps themselves are valid.
    if ctx.diagnostics.len() == errors_before {
        unreachable_steps(ctx, &steps_at, &steps);
    }
    child_cycles(ctx, &steps_at, name, raw_steps, config);
    WorkflowSettings {
        description: raw.description.clone().unwrap_or_default(),
        steps,
    }
}

/// Reports steps whose calls would have journal keys longer than [`MAX_CALL_KEY`]: a call's
/// key is part of the id of its thread and pool item (`wf-{run}[-r{n}].{key}`), which must
/// fit in 128 characters. Keys: `step`, `step/agent` (parallel), `step/iteration/agent`
/// (loop), and a child workflow's keys under `step/`.
pub(super) fn call_keys(ctx: &mut Ctx<'_>, workflows: &BTreeMap<String, WorkflowSettings>) {
    for (name, workflow) in workflows {
        let at = KeyPath::top("workflows").key(name).key("steps");
        for (index, step) in workflow.steps.iter().enumerate() {
            let longest = step_key_len(step, workflows, &mut vec![name.as_str()]);
            if longest > MAX_CALL_KEY {
                ctx.error(
                    &at.index(index).key("name"),
                    format!(
                        "step \"{}\" makes call keys of {longest} characters, more than \
                         {MAX_CALL_KEY} (a call's key is part of its thread id); shorten the \
                         names of the step, its agents or its child workflow's steps",
                        step.name
                    ),
                );
            }
        }
    }
}

/// The longest journal key of a call of `step` (0 if it makes none); `path`: the workflows
/// being walked (a cycle, reported elsewhere, is not followed).
fn step_key_len<'w>(
    step: &'w StepSettings,
    workflows: &'w BTreeMap<String, WorkflowSettings>,
    path: &mut Vec<&'w str>,
) -> usize {
    let name = step.name.len();
    let longest_name =
        |names: &mut dyn Iterator<Item = &String>| names.map(String::len).max().unwrap_or(0);
    match &step.kind {
        StepKind::Agent { .. } | StepKind::Route { .. } => name,
        StepKind::Parallel { agents, .. } => name + 1 + longest_name(&mut agents.iter()),
        StepKind::Loop {
            agent,
            scorers,
            max_iterations,
            ..
        } => {
            let agents = longest_name(&mut scorers.iter().chain(std::iter::once(agent)));
            name + 1 + max_iterations.to_string().len() + 1 + agents
        }
        StepKind::Sleep { .. } | StepKind::WaitEvent { .. } | StepKind::Knowledge { .. } => 0,
        StepKind::Workflow { workflow } => {
            let Some(child) = workflows.get(workflow) else {
                return 0;
            };
            if path.contains(&workflow.as_str()) {
                return 0;
            }
            path.push(workflow);
            let inner = child
                .steps
                .iter()
                .map(|s| step_key_len(s, workflows, path))
                .max()
                .unwrap_or(0);
            path.pop();
            if inner == 0 {
                0
            } else {
                name + 1 + inner
            }
        }
    }
}

/// Reports steps no path reaches: a route whose every target is a jump never falls through to
/// the next step, and only its targets are reached.
fn unreachable_steps(ctx: &mut Ctx<'_>, at: &KeyPath, steps: &[StepSettings]) {
    let index_of = |name: &str| steps.iter().position(|s| s.name == name);
    let mut reachable = vec![false; steps.len()];
    for i in 0..steps.len() {
        if i == 0 {
            reachable[0] = true;
        }
        if !reachable[i] {
            continue;
        }
        let mut falls_through = true;
        if let StepKind::Route {
            routes, default, ..
        } = &steps[i].kind
        {
            let targets: Vec<&RouteTarget> = routes.values().chain(default.as_ref()).collect();
            falls_through = targets.iter().any(|t| matches!(t, RouteTarget::Agent(_)));
            for target in targets {
                if let RouteTarget::Step(step) = target {
                    if let Some(j) = index_of(step).filter(|j| *j > i) {
                        reachable[j] = true;
                    }
                }
            }
        }
        if falls_through && i + 1 < steps.len() {
            reachable[i + 1] = true;
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if !reachable[i] {
            ctx.error(
                &at.index(i).key("name"),
                format!(
                    "step \"{}\" is unreachable: no step falls through or routes to it",
                    step.name
                ),
            );
        }
    }
}

/// Reports a child-workflow cycle that passes through the workflow `name`.
fn child_cycles(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    steps: &[RawStep],
    config: &RawConfig,
) {
    fn children<'c>(config: &'c RawConfig, workflow: &str) -> Vec<&'c str> {
        config
            .workflows
            .get(workflow)
            .and_then(|w| w.steps.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|s| s.kind.as_deref() == Some("workflow"))
            .filter_map(|s| s.workflow.as_deref())
            .collect()
    }
    /// A path from `from` back to `target`, depth first.
    fn path_to<'c>(
        config: &'c RawConfig,
        from: &'c str,
        target: &str,
        seen: &mut Vec<&'c str>,
    ) -> Option<Vec<&'c str>> {
        if from == target {
            return Some(vec![from]);
        }
        if seen.contains(&from) {
            return None;
        }
        seen.push(from);
        for child in children(config, from) {
            if let Some(mut path) = path_to(config, child, target, seen) {
                path.insert(0, from);
                return Some(path);
            }
        }
        None
    }
    for (index, step) in steps.iter().enumerate() {
        if step.kind.as_deref() != Some("workflow") {
            continue;
        }
        let Some(child) = step.workflow.as_deref() else {
            continue;
        };
        if !config.workflows.contains_key(child) {
            continue;
        }
        if let Some(path) = path_to(config, child, name, &mut Vec::new()) {
            ctx.error(
                &at.index(index).key("workflow"),
                format!(
                    "workflows call each other in a cycle: {name} -> {}",
                    path.join(" -> ")
                ),
            );
        }
    }
}
