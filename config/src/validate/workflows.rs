//! Validation of `[workflows.X]` (steps and their references) and `[crons.X]`.

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawCron, RawStep, RawWorkflow};
use crate::settings::{
    CronSettings, CronTarget, Schedule, StepKind, StepSettings, WorkflowSettings,
};
use crate::suggest::closest;

const AGENT: &str = "kind = \"agent\"";
const PARALLEL: &str = "kind = \"parallel\"";
const ROUTE: &str = "kind = \"route\"";

pub(super) fn workflow(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawWorkflow,
    config: &RawConfig,
) -> WorkflowSettings {
    let steps_at = at.key("steps");
    let raw_steps = raw.steps.as_deref().unwrap_or_default();
    if raw_steps.is_empty() {
        ctx.error(&steps_at, "a workflow needs at least one step");
    }
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
    WorkflowSettings {
        description: raw.description.clone().unwrap_or_default(),
        steps,
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
    let kind = match ctx.choice(
        &at.key("kind"),
        raw.kind.as_deref(),
        &["agent", "parallel", "route"],
        None,
    ) {
        Some("agent") => {
            only_keys(ctx, at, raw, AGENT);
            let agent = ctx
                .required(&at.key("agent"), raw.agent.clone())
                .unwrap_or_default();
            if raw.agent.is_some() {
                ctx.reference(&at.key("agent"), "agent", &agent, &config.agents);
            }
            StepKind::Agent { agent }
        }
        Some("parallel") => {
            only_keys(ctx, at, raw, PARALLEL);
            let agents = ctx
                .required(&at.key("agents"), raw.agents.clone())
                .unwrap_or_default();
            if raw.agents.is_some() && agents.is_empty() {
                ctx.error(&at.key("agents"), "needs at least one agent");
            }
            ctx.references(&at.key("agents"), "agent", &agents, &config.agents);
            let max_concurrency = raw
                .max_concurrency
                .map(|n| ctx.positive(&at.key("max_concurrency"), Some(n), n));
            StepKind::Parallel {
                agents,
                max_concurrency,
            }
        }
        Some(_route) => {
            only_keys(ctx, at, raw, ROUTE);
            let on = ctx
                .required(&at.key("on"), raw.on.clone())
                .unwrap_or_default();
            if raw.on.is_some() && !earlier_names.contains(&on.as_str()) {
                if all.iter().any(|s| s.name.as_deref() == Some(on.as_str())) {
                    ctx.error(
                        &at.key("on"),
                        format!("step \"{on}\" does not come before this step; `on` must name an earlier step"),
                    );
                } else {
                    ctx.report(
                        &at.key("on"),
                        format!("no earlier step named \"{on}\""),
                        closest(&on, earlier_names.iter().copied()),
                    );
                }
            }
            let routes = ctx
                .required(&at.key("routes"), raw.routes.clone())
                .unwrap_or_default();
            if raw.routes.is_some() && routes.is_empty() {
                ctx.error(
                    &at.key("routes"),
                    "needs at least one route (label = \"agent\")",
                );
            }
            for (label, agent) in &routes {
                ctx.reference(&at.key("routes").key(label), "agent", agent, &config.agents);
            }
            if let Some(default) = &raw.default {
                ctx.reference(&at.key("default"), "agent", default, &config.agents);
            }
            StepKind::Route {
                on,
                routes,
                default: raw.default.clone(),
            }
        }
        None => StepKind::Agent {
            agent: String::new(),
        },
    };
    if let Some(pool) = &raw.pool {
        ctx.reference(&at.key("pool"), "pool", pool, &config.pools);
    }
    StepSettings {
        name,
        kind,
        input: raw.input.clone(),
        timeout: ctx.optional_positive_duration(&at.key("timeout"), raw.timeout.as_deref()),
        pool: raw.pool.clone(),
        retries: raw.retries,
    }
}

/// Reports the keys of other step kinds than `kind`.
fn only_keys(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawStep, kind: &str) {
    let keys = [
        ("agent", raw.agent.is_some(), AGENT),
        ("agents", raw.agents.is_some(), PARALLEL),
        ("max_concurrency", raw.max_concurrency.is_some(), PARALLEL),
        ("on", raw.on.is_some(), ROUTE),
        ("routes", raw.routes.is_some(), ROUTE),
        ("default", raw.default.is_some(), ROUTE),
    ];
    for (key, present, used_with) in keys {
        if used_with != kind {
            ctx.only_with(&at.key(key), present, used_with);
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
