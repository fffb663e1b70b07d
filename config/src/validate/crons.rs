//! Validation of `[crons.X]`: the schedule (a cron expression or an interval), its time
//! zone, and the target (an agent or a workflow).

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawCron};
use crate::settings::{CronSettings, CronTarget, Schedule};

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
