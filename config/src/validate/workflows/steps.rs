//! Validation of one step of a workflow: its kind and the keys that kind takes, its
//! references (agents, pools, limits, child workflow), route targets and input template.

use std::collections::BTreeMap;

use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawStep};
use crate::settings::{RouteTarget, StepKind, StepSettings};
use crate::suggest::closest;
use crate::template;
use crate::validate::Ctx;

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

/// Validates one step; `earlier`: the steps before it, `all`: every step of its workflow.
pub(super) fn step(
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
