//! `[crons.X]`: a recurring task: when it fires and what it runs.
//!
//! [`Schedule::parse_cron`] and [`CronSettings::parse_timezone`] are the one parser of cron
//! expressions and time zones: validation uses them, and so does the runtime for crons
//! registered while the daemon runs.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The group cron-fired agent turns and workflow runs belong to. Reserved: the ingress
/// refuses tasks for it, so no producer can act in (or read) what crons do.
pub const SYSTEM_GROUP: &str = "system";

/// One cron entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSettings {
    /// When it fires.
    pub schedule: Schedule,
    /// Time zone of the cron expression (an IANA name as written, e.g. `Europe/Paris`);
    /// UTC when absent.
    pub timezone: Option<String>,
    /// What it runs.
    pub target: CronTarget,
    /// Input handed to the target.
    pub input: String,
}

/// When a cron fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A cron expression of 5 or 6 fields (seconds first when 6).
    Cron(String),
    /// A fixed interval.
    Every(Duration),
}

/// What a cron runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronTarget {
    /// Name of an `[agents.X]`.
    Agent(String),
    /// Name of a `[workflows.X]`.
    Workflow(String),
}

impl Schedule {
    /// Parses a cron expression: 5 fields (minute granularity) or 6 (seconds first), with
    /// names (`MON`, `JAN`), ranges, steps, lists and `L`, `W`, `#`. The error says what is
    /// wrong, without repeating the expression.
    pub fn parse_cron(spec: &str) -> Result<Cron, String> {
        let fields = spec.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!("{fields} fields, expected 5 or 6"));
        }
        CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(spec)
            .map_err(|err| err.to_string())
    }
}

impl CronSettings {
    /// Parses an IANA time zone name (`UTC`, `Europe/Paris`).
    pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
        name.parse::<chrono_tz::Tz>()
            .map_err(|_| format!("unknown time zone \"{name}\": use an IANA name such as \"UTC\" or \"Europe/Paris\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, expected: Result<(), &str>) {
        let got = Schedule::parse_cron(spec).map(|_| ());
        assert_eq!(got, expected.map_err(str::to_owned), "{spec}");
    }

    #[test]
    fn cron_expressions() {
        check("0 0 3 * * *", Ok(()));
        check("*/5 * * * MON-FRI", Ok(()));
        check("* * * * * *", Ok(()));
        check("0 3 * *", Err("4 fields, expected 5 or 6"));
        check("0 0 3 * * * 2030", Err("7 fields, expected 5 or 6"));
        assert!(Schedule::parse_cron("61 * * * *").is_err());
        assert!(Schedule::parse_cron("0 3 * * % *").is_err());
        assert!(Schedule::parse_cron("0 0 32 * *").is_err());
    }

    #[test]
    fn time_zones() {
        assert_eq!(
            CronSettings::parse_timezone("Europe/Paris"),
            Ok(chrono_tz::Tz::Europe__Paris)
        );
        assert!(CronSettings::parse_timezone("UTC").is_ok());
        assert!(CronSettings::parse_timezone("Mars/Olympus")
            .is_err_and(|e| e.contains("unknown time zone \"Mars/Olympus\"")));
    }
}
