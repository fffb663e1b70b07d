//! Validation of `[workflows.X]` (steps and their references) and `[crons.X]`.

use std::collections::BTreeMap;

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawCron, RawStep, RawWorkflow};
use crate::settings::{
    CronSettings, CronTarget, RouteTarget, Schedule, StepKind, StepSettings, WorkflowSettings,
    MAX_CALL_KEY,
};
use crate::suggest::closest;
use crate::template;

const KINDS: &[&str] = &[
    "agent",
    "parallel",
    "route",
    "loop",
    "sleep",
    "wait_event",
    "workflow",
    "knowledge",
];

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
        steps.push(self::step(
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

fn step(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawStep,
    earlier: &[RawStep],
    all: &[RawStep],
    config: &RawConfig,
) -> StepSettings {
    let earlier_names: Vec<&str> = earlier.iter().filter_map(|s| s.name.as_deref()).collect();
    let name = ctx
        .required(&at.key("name"), raw.name.clone())
        .unwrap_or_default();
    if raw.name.is_some() {
        ctx.check_name(&at.key("name"), &name);
        if earlier_names.contains(&name.as_str()) {
            ctx.error(
                &at.key("name"),
                format!("step name \"{name}\" is already used by an earlier step"),
            );
        }
    }
    let kind_name = ctx.choice(&at.key("kind"), raw.kind.as_deref(), KINDS, None);
    if let Some(kind) = kind_name {
        only_keys(ctx, at, raw, kind);
    }
    let kind = match kind_name {
        Some("agent") => {
            let agent = ctx
                .required(&at.key("agent"), raw.agent.clone())
                .unwrap_or_default();
            if raw.agent.is_some() {
                ctx.reference(&at.key("agent"), "agent", &agent, &config.agents);
            }
            StepKind::Agent { agent }
        }
        Some("parallel") => {
            let agents = agent_list(ctx, &at.key("agents"), raw.agents.as_ref(), config);
            let max_concurrency = raw
                .max_concurrency
                .map(|n| ctx.positive(&at.key("max_concurrency"), Some(n), n));
            StepKind::Parallel {
                agents,
                max_concurrency,
            }
        }
        Some("route") => route(ctx, at, raw, &name, &earlier_names, all, config),
        Some("loop") => {
            let agent = ctx
                .required(&at.key("agent"), raw.agent.clone())
                .unwrap_or_default();
            if raw.agent.is_some() {
                ctx.reference(&at.key("agent"), "agent", &agent, &config.agents);
            }
            let scorers = agent_list(ctx, &at.key("scorers"), raw.scorers.as_ref(), config);
            let until_at = at.key("until_score");
            let until_score = ctx.required(&until_at, raw.until_score).unwrap_or(1.0);
            if !(0.0..=1.0).contains(&until_score) {
                ctx.error(&until_at, "must be between 0 and 1");
            }
            let bound_at = at.key("max_iterations");
            if raw.max_iterations.is_none() {
                ctx.error(
                    &bound_at,
                    "required key is missing: a loop needs max_iterations, its bound",
                );
            }
            let max_iterations = raw
                .max_iterations
                .map_or(0, |n| ctx.positive(&bound_at, Some(n), n));
            StepKind::Loop {
                agent,
                scorers,
                until_score,
                max_iterations,
            }
        }
        Some("sleep") => StepKind::Sleep {
            duration: ctx.required_duration(&at.key("duration"), raw.duration.as_deref()),
        },
        Some("wait_event") => {
            let event = ctx
                .required(&at.key("event"), raw.event.clone())
                .unwrap_or_default();
            if raw.event.is_some() {
                ctx.check_name(&at.key("event"), &event);
            }
            StepKind::WaitEvent { event }
        }
        Some("knowledge") => {
            let namespace = raw.namespace.clone();
            if let Some(namespace) = &namespace {
                ctx.check_name(&at.key("namespace"), namespace);
            }
            let top_k = raw.top_k.map(|n| {
                ctx.positive_at_most(&at.key("top_k"), Some(n), n, defaults::RAG_MAX_TOP_K)
            });
            StepKind::Knowledge { namespace, top_k }
        }
        Some(_workflow) => {
            let workflow = ctx
                .required(&at.key("workflow"), raw.workflow.clone())
                .unwrap_or_default();
            if raw.workflow.is_some() {
                ctx.reference(
                    &at.key("workflow"),
                    "workflow",
                    &workflow,
                    &config.workflows,
                );
            }
            StepKind::Workflow { workflow }
        }
        None => StepKind::Agent {
            agent: String::new(),
        },
    };
    if let Some(pool) = &raw.pool {
        ctx.reference(&at.key("pool"), "pool", pool, &config.pools);
    }
    let limits = raw.limits.clone().unwrap_or_default();
    ctx.references(&at.key("limits"), "limit", &limits, &config.limits);
    if let Some(input) = &raw.input {
        check_template(ctx, &at.key("input"), input, &earlier_names, all);
    }
    StepSettings {
        name,
        kind,
        input: raw.input.clone(),
        timeout: ctx.optional_positive_duration(&at.key("timeout"), raw.timeout.as_deref()),
        pool: raw.pool.clone(),
        retries: raw.retries,
        limits,
    }
}

/// A required, non-empty list of agents without repeats.
fn agent_list(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: Option<&Vec<String>>,
    config: &RawConfig,
) -> Vec<String> {
    let agents = ctx.required(at, raw.cloned()).unwrap_or_default();
    if raw.is_some() && agents.is_empty() {
        ctx.error(at, "needs at least one agent");
    }
    ctx.references(at, "agent", &agents, &config.agents);
    agents
}

fn route(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawStep,
    name: &str,
    earlier_names: &[&str],
    all: &[RawStep],
    config: &RawConfig,
) -> StepKind {
    let on = ctx
        .required(&at.key("on"), raw.on.clone())
        .unwrap_or_default();
    if raw.on.is_some() && !earlier_names.contains(&on.as_str()) {
        if all.iter().any(|s| s.name.as_deref() == Some(on.as_str())) {
            ctx.error(
                &at.key("on"),
                format!(
                    "step \"{on}\" does not come before this step; `on` must name an earlier step"
                ),
            );
        } else {
            ctx.report(
                &at.key("on"),
                format!("no earlier step named \"{on}\""),
                closest(&on, earlier_names.iter().copied()),
            );
        }
    }
    let raw_routes = ctx
        .required(&at.key("routes"), raw.routes.clone())
        .unwrap_or_default();
    if raw.routes.is_some() && raw_routes.is_empty() {
        ctx.error(
            &at.key("routes"),
            "needs at least one route (label = \"agent\" or label = \"step\")",
        );
    }
    let mut routes = BTreeMap::new();
    for (label, target) in &raw_routes {
        let resolved = route_target(ctx, &at.key("routes").key(label), target, name, all, config);
        routes.insert(label.clone(), resolved);
    }
    let default = raw
        .default
        .as_ref()
        .map(|target| route_target(ctx, &at.key("default"), target, name, all, config));
    StepKind::Route {
        on,
        routes,
        default,
    }
}

/// Resolves a route target: a later step of this workflow, or an agent.
fn route_target(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    target: &str,
    route: &str,
    all: &[RawStep],
    config: &RawConfig,
) -> RouteTarget {
    let step_index = all.iter().position(|s| s.name.as_deref() == Some(target));
    let route_index = all.iter().position(|s| s.name.as_deref() == Some(route));
    match (step_index, config.agents.contains_key(target)) {
        (Some(_), true) => {
            ctx.error(
                at,
                format!("\"{target}\" names both a step and an agent; rename the step"),
            );
            RouteTarget::Agent(target.to_owned())
        }
        (Some(step), false) => {
            if route_index.is_some_and(|r| step <= r) {
                ctx.error(
                    at,
                    format!(
                        "step \"{target}\" does not come after this step; a route only jumps forward (use kind = \"loop\" to repeat)"
                    ),
                );
            }
            RouteTarget::Step(target.to_owned())
        }
        (None, true) => RouteTarget::Agent(target.to_owned()),
        (None, false) => {
            let steps = all.iter().filter_map(|s| s.name.as_deref());
            let candidates = config.agents.keys().map(String::as_str).chain(steps);
            ctx.report(
                at,
                format!("no agent or step named \"{target}\""),
                closest(target, candidates),
            );
            RouteTarget::Agent(target.to_owned())
        }
    }
}

/// Parses an input template and checks that the steps it names come earlier.
fn check_template(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    input: &str,
    earlier_names: &[&str],
    all: &[RawStep],
) {
    let parts = match template::parse(input) {
        Ok(parts) => parts,
        Err(err) => {
            ctx.error(at, format!("invalid template: {err}"));
            return;
        }
    };
    for step in template::steps(&parts) {
        if earlier_names.contains(&step) {
            continue;
        }
        if all.iter().any(|s| s.name.as_deref() == Some(step)) {
            ctx.error(
                at,
                format!("template uses step \"{step}\", which does not come before this step"),
            );
        } else {
            ctx.report(
                at,
                format!("template uses no earlier step named \"{step}\""),
                closest(step, earlier_names.iter().copied()),
            );
        }
    }
}

/// Reports the keys that the step kind `kind` does not use.
fn only_keys(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawStep, kind: &str) {
    let keys: [(&str, bool, &[&str]); 15] = [
        ("agent", raw.agent.is_some(), &["agent", "loop"]),
        ("agents", raw.agents.is_some(), &["parallel"]),
        (
            "max_concurrency",
            raw.max_concurrency.is_some(),
            &["parallel"],
        ),
        ("on", raw.on.is_some(), &["route"]),
        ("routes", raw.routes.is_some(), &["route"]),
        ("default", raw.default.is_some(), &["route"]),
        ("scorers", raw.scorers.is_some(), &["loop"]),
        ("until_score", raw.until_score.is_some(), &["loop"]),
        ("max_iterations", raw.max_iterations.is_some(), &["loop"]),
        ("duration", raw.duration.is_some(), &["sleep"]),
        ("event", raw.event.is_some(), &["wait_event"]),
        ("workflow", raw.workflow.is_some(), &["workflow"]),
        ("namespace", raw.namespace.is_some(), &["knowledge"]),
        ("top_k", raw.top_k.is_some(), &["knowledge"]),
        (
            "retries",
            raw.retries.is_some(),
            &["agent", "parallel", "route", "loop", "workflow"],
        ),
    ];
    for (key, present, kinds) in keys {
        if !kinds.contains(&kind) {
            let with = kinds
                .iter()
                .map(|k| format!("kind = \"{k}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            ctx.only_with(&at.key(key), present, &with);
        }
    }
}

pub(super) fn cron(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawCron,
    config: &RawConfig,
) -> CronSettings {
    let schedule = match (&raw.schedule, &raw.every) {
        (Some(spec), None) => {
            if let Err(why) = Schedule::parse_cron(spec) {
                ctx.error(
                    &at.key("schedule"),
                    format!("invalid cron expression \"{spec}\": {why}"),
                );
            }
            Schedule::Cron(spec.clone())
        }
        (None, Some(every)) => {
            Schedule::Every(ctx.required_duration(&at.key("every"), Some(every)))
        }
        (Some(spec), Some(_)) => {
            ctx.error(&at.key("every"), "give either schedule or every, not both");
            Schedule::Cron(spec.clone())
        }
        (None, None) => {
            ctx.error(
                &at.key("schedule"),
                "required key is missing: give schedule (a cron expression) or every (an interval)",
            );
            Schedule::Every(std::time::Duration::ZERO)
        }
    };
    let target = match (&raw.agent, &raw.workflow) {
        (Some(agent), None) => {
            ctx.reference(&at.key("agent"), "agent", agent, &config.agents);
            CronTarget::Agent(agent.clone())
        }
        (None, Some(workflow)) => {
            ctx.reference(&at.key("workflow"), "workflow", workflow, &config.workflows);
            CronTarget::Workflow(workflow.clone())
        }
        (Some(agent), Some(_)) => {
            ctx.error(
                &at.key("workflow"),
                "give either agent or workflow, not both",
            );
            CronTarget::Agent(agent.clone())
        }
        (None, None) => {
            ctx.error(
                &at.key("agent"),
                "required key is missing: give agent or workflow",
            );
            CronTarget::Agent(String::new())
        }
    };
    let timezone = raw.timezone.as_deref().map(|tz| {
        let path = at.key("timezone");
        ctx.only_with(&path, raw.every.is_some(), "schedule (a cron expression)");
        if let Err(why) = CronSettings::parse_timezone(tz) {
            ctx.error(&path, why);
        }
        tz.to_owned()
    });
    CronSettings {
        schedule,
        timezone,
        target,
        input: raw
            .input
            .clone()
            .unwrap_or_else(|| defaults::CRON_INPUT.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    /// The diagnostics of `[crons.c]` with `body`, one per line.
    fn cron_diagnostics(body: &str) -> Vec<String> {
        let text = format!(
            "[models.m]\nprovider = \"scripted\"\n[agents.a]\nmodel = \"m\"\n[crons.c]\nagent = \"a\"\n{body}"
        );
        match load_str(&text, "bad.toml", &[]) {
            Ok(_) => Vec::new(),
            Err(err) => err.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn cron_schedules_and_time_zones_use_the_real_parser() {
        let ok: &[&str] = &[];
        assert_eq!(
            cron_diagnostics("schedule = \"*/10 * * * * *\"\ntimezone = \"Europe/Paris\""),
            ok
        );
        assert_eq!(
            cron_diagnostics("schedule = \"0 25 * * *\""),
            [
                r#"bad.toml:7:12: crons.c.schedule: invalid cron expression "0 25 * * *": Component error: Number out of bounds."#
            ]
        );
        assert_eq!(
            cron_diagnostics("schedule = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\""),
            [
                r#"bad.toml:8:12: crons.c.timezone: unknown time zone "Mars/Olympus": use an IANA name such as "UTC" or "Europe/Paris""#
            ]
        );
        assert_eq!(
            cron_diagnostics("every = \"1s\"\ntimezone = \"UTC\""),
            ["bad.toml:8:12: crons.c.timezone: only used with schedule (a cron expression)"]
        );
        assert_eq!(
            cron_diagnostics("every = \"0s\""),
            ["bad.toml:7:9: crons.c.every: must be greater than 0"]
        );
    }
}
