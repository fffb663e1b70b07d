//! Parsed schedules and their ticks. Ticks are deterministic, so every daemon computes the
//! same tick times and they can agree on who fires each one: an interval ticks at the
//! multiples of its length since the Unix epoch; a cron expression at its occurrences in its
//! time zone (UTC by default).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use troupe_config::{CronSettings, Schedule};

use super::CronError;

/// A schedule ready to compute ticks.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<Cron>, Tz),
    Every(u64),
}

impl CronSchedule {
    /// Parses the schedule of the cron `name` (expression, interval, time zone).
    pub fn parse(name: &str, settings: &CronSettings) -> Result<Self, CronError> {
        let invalid = |message: String| CronError::InvalidSchedule {
            cron: name.to_owned(),
            message,
        };
        let kind = match &settings.schedule {
            Schedule::Cron(spec) => {
                let cron = Schedule::parse_cron(spec)
                    .map_err(|why| invalid(format!("invalid cron expression \"{spec}\": {why}")))?;
                let tz = match settings.timezone.as_deref() {
                    Some(name) => CronSettings::parse_timezone(name).map_err(invalid)?,
                    None => Tz::UTC,
                };
                Kind::Cron(Box::new(cron), tz)
            }
            Schedule::Every(every) => {
                let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                if ms == 0 {
                    return Err(invalid("the interval must be at least 1ms".to_owned()));
                }
                if settings.timezone.is_some() {
                    return Err(invalid(
                        "a time zone is only used with a cron expression".to_owned(),
                    ));
                }
                Kind::Every(ms)
            }
        };
        Ok(CronSchedule { kind })
    }

    /// The first tick strictly after `after_ms` (ms since the Unix epoch); `None` if the
    /// expression never matches again.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every(every) => (after_ms / every).checked_add(1)?.checked_mul(*every),
            Kind::Cron(cron, tz) => {
                let after = i64::try_from(after_ms).ok()?;
                let start: DateTime<Tz> =
                    Utc.timestamp_millis_opt(after).single()?.with_timezone(tz);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// The shortest gap between two ticks, roughly (for the claim keys' lifetime).
    pub fn period_hint(&self) -> Duration {
        match &self.kind {
            Kind::Every(every) => Duration::from_millis(*every),
            Kind::Cron(..) => Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_config::CronTarget;

    fn schedule(schedule: Schedule, timezone: Option<&str>) -> Result<CronSchedule, CronError> {
        let settings = CronSettings {
            schedule,
            timezone: timezone.map(str::to_owned),
            target: CronTarget::Agent("a".into()),
            input: String::new(),
        };
        CronSchedule::parse("c", &settings)
    }

    fn ms(rfc3339: &str) -> u64 {
        let t = DateTime::parse_from_rfc3339(rfc3339).map(|t| t.timestamp_millis());
        u64::try_from(t.unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn intervals_tick_on_multiples_since_the_epoch() {
        let every = schedule(Schedule::Every(Duration::from_millis(250)), None);
        let every = every.map_err(|e| e.to_string());
        let every = every.as_ref().map_err(String::as_str);
        assert_eq!(every.map(|s| s.next_after(1_000)), Ok(Some(1_250)));
        assert_eq!(every.map(|s| s.next_after(1_249)), Ok(Some(1_250)));
        assert_eq!(every.map(|s| s.next_after(1_250)), Ok(Some(1_500)));
    }

    #[test]
    fn cron_expressions_tick_in_their_time_zone() {
        let check = |spec: &str, tz: Option<&str>, after: &str, expected: &str| {
            let parsed = schedule(Schedule::Cron(spec.into()), tz);
            let next = parsed.map(|s| s.next_after(ms(after))).ok().flatten();
            assert_eq!(next, Some(ms(expected)), "{spec} {tz:?} after {after}");
        };
        check(
            "* * * * * *",
            None,
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:00:01Z",
        );
        check(
            "0 3 * * *",
            None,
            "2025-01-01T03:00:00Z",
            "2025-01-02T03:00:00Z",
        );
        check(
            "0 0 3 * * *",
            Some("Europe/Paris"),
            "2025-01-01T00:00:00Z",
            "2025-01-01T02:00:00Z",
        );
        check(
            "*/15 * * * MON",
            Some("UTC"),
            "2025-01-01T00:00:00Z",
            "2025-01-06T00:00:00Z",
        );
    }

    #[test]
    fn invalid_schedules_are_refused() {
        let err = |s: Result<CronSchedule, CronError>| s.err().map(|e| e.to_string());
        assert_eq!(
            err(schedule(Schedule::Cron("0 3 * *".into()), None)),
            Some("cron c: invalid cron expression \"0 3 * *\": 4 fields, expected 5 or 6".into())
        );
        assert!(err(schedule(
            Schedule::Cron("0 3 * * *".into()),
            Some("Mars/Olympus")
        ))
        .is_some_and(|e| e.contains("unknown time zone")));
        assert!(err(schedule(Schedule::Every(Duration::ZERO), None)).is_some());
    }
}
