//! `kind = "current_time"`: the current date and time as RFC 3339 text, in UTC, a UTC offset
//! (`+02:00`) or an IANA time zone (`Europe/Paris`). It takes no options.

use std::str::FromStr;
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;

use super::arguments;
use crate::error::ToolError;
use crate::tool::{Tool, ToolContext, ToolOutput};

/// The `current_time` tool.
#[derive(Debug, Clone)]
pub struct CurrentTime {
    name: String,
    clock: fn() -> SystemTime,
}

/// Its arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    timezone: Option<String>,
}

/// Where to show the time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Zone {
    Utc,
    Offset(FixedOffset),
    Named(chrono_tz::Tz),
}

impl CurrentTime {
    /// `[tools.name] kind = "current_time"`, reading the system clock.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_clock(name, SystemTime::now)
    }

    /// The same tool reading `clock` (tests and recorded transcripts use a fixed one).
    pub fn with_clock(name: impl Into<String>, clock: fn() -> SystemTime) -> Self {
        CurrentTime {
            name: name.into(),
            clock,
        }
    }

    fn invalid(&self, message: impl Into<String>) -> ToolError {
        arguments::invalid(&self.name, message)
    }
}

#[async_trait]
impl Tool for CurrentTime {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        "Get the current date and time (RFC 3339), in UTC or in a given time zone."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "An IANA time zone such as \"Europe/Paris\", a UTC offset such as \"+02:00\", or \"UTC\" (the default)."
                }
            },
            "additionalProperties": false
        })
    }

    async fn call(
        &self,
        _ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let Args { timezone } = arguments::parse(&self.name, args)?;
        let zone = match timezone.as_deref() {
            None => Zone::Utc,
            Some(text) => parse_zone(text).ok_or_else(|| {
                self.invalid(format!(
                    "unknown time zone \"{text}\": give an IANA name such as \"Europe/Paris\", a UTC offset such as \"+02:00\", or \"UTC\""
                ))
            })?,
        };
        let now: DateTime<Utc> = (self.clock)().into();
        let (text, label) = match zone {
            Zone::Utc => (rfc3339(&now), "UTC".to_owned()),
            Zone::Offset(offset) => {
                let local = now.with_timezone(&offset);
                (rfc3339(&local), offset.to_string())
            }
            Zone::Named(tz) => (rfc3339(&now.with_timezone(&tz)), tz.name().to_owned()),
        };
        Ok(ToolOutput {
            content: text.clone(),
            data: serde_json::json!({
                "time": text,
                "timezone": label,
                "unix": now.timestamp(),
            }),
        })
    }
}

fn rfc3339<Tz: TimeZone>(time: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `UTC`, `Z`, `GMT`; `+02:00`, `-0530`, `+2`, optionally after `UTC`/`GMT`; an IANA name.
fn parse_zone(text: &str) -> Option<Zone> {
    let text = text.trim();
    if ["utc", "z", "gmt"]
        .iter()
        .any(|name| text.eq_ignore_ascii_case(name))
    {
        return Some(Zone::Utc);
    }
    let offset = ["UTC", "utc", "GMT", "gmt"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text);
    if offset.starts_with(['+', '-']) {
        return parse_offset(offset).map(Zone::Offset);
    }
    chrono_tz::Tz::from_str(text).ok().map(Zone::Named)
}

/// `+02:00`, `-05:30`, `+0530`, `+2` (at most ±23:59).
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let (sign, rest) = match text.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some((hours, minutes)) => (hours, minutes),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let digits = |part: &str| {
        (!part.is_empty() && part.len() <= 2 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<i32>().ok())
            .flatten()
    };
    let (hours, minutes) = (digits(hours)?, digits(minutes)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// 2025-03-30T00:30:00Z, half an hour before Europe's switch to summer time.
    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_743_294_600)
    }

    fn ctx() -> ToolContext {
        ToolContext {
            group: "g".into(),
            user: "u".into(),
            agent: "a".into(),
            thread: "t".into(),
            message_id: "m".into(),
        }
    }

    async fn check(args: serde_json::Value, expected: Result<&str, &str>) {
        let tool = CurrentTime::with_clock("clock", fixed);
        let got = tool
            .call(&ctx(), args.clone())
            .await
            .map(|output| output.content)
            .map_err(|err| err.to_string());
        assert_eq!(
            got,
            expected.map(str::to_owned).map_err(str::to_owned),
            "{args}"
        );
    }

    #[tokio::test]
    async fn formats_in_utc_offsets_and_named_zones() {
        use serde_json::json;
        for (args, expected) in [
            (json!({}), "2025-03-30T00:30:00Z"),
            (json!({ "timezone": null }), "2025-03-30T00:30:00Z"),
            (json!({ "timezone": "UTC" }), "2025-03-30T00:30:00Z"),
            (json!({ "timezone": "z" }), "2025-03-30T00:30:00Z"),
            (json!({ "timezone": "+02:00" }), "2025-03-30T02:30:00+02:00"),
            (json!({ "timezone": "-05:30" }), "2025-03-29T19:00:00-05:30"),
            (json!({ "timezone": "+0545" }), "2025-03-30T06:15:00+05:45"),
            (json!({ "timezone": "UTC+2" }), "2025-03-30T02:30:00+02:00"),
            (json!({ "timezone": "GMT-3" }), "2025-03-29T21:30:00-03:00"),
            (
                json!({ "timezone": "Europe/Paris" }),
                "2025-03-30T01:30:00+01:00",
            ),
            (
                json!({ "timezone": "Asia/Tokyo" }),
                "2025-03-30T09:30:00+09:00",
            ),
            (
                json!({ "timezone": "America/New_York" }),
                "2025-03-29T20:30:00-04:00",
            ),
        ] {
            check(args, Ok(expected)).await;
        }
    }

    #[tokio::test]
    async fn bad_arguments_say_what_to_send() {
        use serde_json::json;
        let unknown = |zone: &str| {
            format!("invalid arguments for clock: unknown time zone \"{zone}\": give an IANA name such as \"Europe/Paris\", a UTC offset such as \"+02:00\", or \"UTC\"")
        };
        for zone in [
            "Mars/Olympus",
            "+24:00",
            "+02:60",
            "+2:3:4",
            "+",
            "02:00",
            "",
            "UTC+x",
        ] {
            check(json!({ "timezone": zone }), Err(&unknown(zone))).await;
        }
        check(
            json!({ "timezone": 2 }),
            Err("invalid arguments for clock: invalid type: integer `2`, expected a string"),
        )
        .await;
        check(
            json!({ "tz": "UTC" }),
            Err("invalid arguments for clock: unknown field `tz`, expected `timezone`"),
        )
        .await;
    }

    #[tokio::test]
    async fn reports_the_zone_and_unix_time() {
        let tool = CurrentTime::with_clock("clock", fixed);
        let output = tool
            .call(&ctx(), serde_json::json!({ "timezone": "Europe/Paris" }))
            .await;
        let data = output.map(|output| output.data).unwrap_or_default();
        assert_eq!(
            data,
            serde_json::json!({
                "time": "2025-03-30T01:30:00+01:00",
                "timezone": "Europe/Paris",
                "unix": 1_743_294_600,
            })
        );
    }
}
