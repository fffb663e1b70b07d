//! [`MockConfig`]: how the mock server answers (rules, latency, faults, quirks), loadable from
//! TOML. A rules file of the scripted model is also a valid mock config.
//!
//! ```toml
//! model = "mock-model"        # reported when a request names no model
//! dimensions = 384            # embedding size unless the request asks for `dimensions`
//! latency = "0ms"             # before each response
//! token_latency = "0ms"       # between streamed chunks
//! retry_after = "1s"          # of 429 answers (whole seconds: `Retry-After`; else also `retry-after-ms`)
//! retry_after_values = ["1e30", "-1", "NaN", "Fri, 31 Dec 9999 23:59:59 GMT"]  # raw, in turn
//! retry_after_ms_values = []  # raw `retry-after-ms` values of 429 answers, in turn
//! huge_bytes = 104857600      # size of `huge_body` answers
//! fault = "503"               # every request fails so (optional)
//! faults = ["429", "pass", "500"]  # the first requests fail so, in order ("pass": no fault)
//! quirks = ["empty_finish_reason", "late_tool_ids", "no_usage"]
//! default_reply = "You said: {input}"
//!
//! [[rules]]
//! contains = "weather"
//! reply = "It is sunny."
//! ```

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::MockError;
use crate::script::{Rule, Script, DEFAULT_DIMENSIONS};

/// `huge_bytes` unless configured: 100 MiB.
pub const DEFAULT_HUGE_BYTES: u64 = 100 * 1024 * 1024;
/// Bytes of the header value of a `huge_header` answer: past any client's header limit.
pub const HUGE_HEADER_BYTES: usize = 1024 * 1024;

/// Configuration of the mock server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Model name reported when the request names none.
    pub model: String,
    /// Embedding dimension unless the request sets `dimensions`.
    pub dimensions: usize,
    /// Delay before each response.
    #[serde(deserialize_with = "duration")]
    pub latency: Duration,
    /// Delay between streamed chunks.
    #[serde(deserialize_with = "duration")]
    pub token_latency: Duration,
    /// Retry-After of `429` faults.
    #[serde(deserialize_with = "duration")]
    pub retry_after: Duration,
    /// Raw `Retry-After` header values of `429` faults, one per fault served, in turn (and
    /// again from the first); empty: derived from `retry_after`. Anything a hostile server
    /// might send: `"1e30"`, `"-1"`, `"NaN"`, an HTTP date.
    pub retry_after_values: Vec<String>,
    /// Raw `retry-after-ms` header values of `429` faults, likewise (sent only when given).
    pub retry_after_ms_values: Vec<String>,
    /// Bytes of filler in a `huge_body` answer (a body, or one SSE event).
    pub huge_bytes: u64,
    /// A fault served on every request (after the queue is empty).
    pub fault: Option<Fault>,
    /// Faults served to the first requests, in order.
    pub faults: Vec<Fault>,
    /// Quirks of every response.
    pub quirks: Vec<Quirk>,
    /// Reply rules (see [`crate::script`]).
    pub rules: Vec<Rule>,
    /// Template of the answer when no rule matches.
    pub default_reply: Option<String>,
    /// Template of the answer after tool results.
    pub follow_up: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            model: "mock-model".to_owned(),
            dimensions: DEFAULT_DIMENSIONS,
            latency: Duration::ZERO,
            token_latency: Duration::ZERO,
            retry_after: Duration::from_secs(1),
            retry_after_values: Vec::new(),
            retry_after_ms_values: Vec::new(),
            huge_bytes: DEFAULT_HUGE_BYTES,
            fault: None,
            faults: Vec::new(),
            quirks: Vec::new(),
            rules: Vec::new(),
            default_reply: None,
            follow_up: None,
        }
    }
}

impl MockConfig {
    /// Parses a TOML config; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<MockConfig, MockError> {
        let config: MockConfig = toml::from_str(text).map_err(|err| MockError::Parse {
            origin: origin.to_owned(),
            message: err.to_string(),
        })?;
        if config.dimensions == 0 {
            return Err(MockError::Parse {
                origin: origin.to_owned(),
                message: "dimensions must be greater than 0".to_owned(),
            });
        }
        Ok(config)
    }

    /// Reads and parses a TOML config file.
    pub fn from_file(path: &Path) -> Result<MockConfig, MockError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockError::Io {
            path: path.display().to_string(),
            source,
        })?;
        MockConfig::from_toml(&text, &path.display().to_string())
    }

    /// The reply rules as a [`Script`].
    pub fn script(&self) -> Script {
        Script {
            rules: self.rules.clone(),
            default_reply: self.default_reply.clone(),
            follow_up: self.follow_up.clone(),
        }
    }
}

/// A failure the mock serves instead of (or in the middle of) a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fault {
    /// No fault: a queue slot that lets one request through.
    #[serde(rename = "pass")]
    Pass,
    /// `429` with `Retry-After`.
    #[serde(rename = "429")]
    RateLimited,
    /// `500` with an OpenAI-style JSON error.
    #[serde(rename = "500")]
    ServerError,
    /// `503` with an OpenAI-style JSON error.
    #[serde(rename = "503")]
    Unavailable,
    /// `429` with code `insufficient_quota` (permanent).
    #[serde(rename = "insufficient_quota")]
    InsufficientQuota,
    /// Never answers.
    #[serde(rename = "hang")]
    Hang,
    /// Sends the first chunk (or half a body), then nothing more.
    #[serde(rename = "stall")]
    Stall,
    /// Ends the stream (or body) early, without a finish or `[DONE]`.
    #[serde(rename = "truncate")]
    Truncate,
    /// A chunk of invalid JSON mid-stream (or an invalid JSON body).
    #[serde(rename = "malformed")]
    Malformed,
    /// `500` with an HTML body, as from a proxy.
    #[serde(rename = "html_error")]
    HtmlError,
    /// A `200` whose answer text is `huge_bytes` long (100 MiB by default): one body, or one
    /// SSE event, made as it is sent.
    #[serde(rename = "huge_body")]
    HugeBody,
    /// A `200` that never ends: a body of endless answer text, or endless valid stream
    /// chunks, until the client goes away.
    #[serde(rename = "endless")]
    Endless,
    /// A `200` with one header value of [`HUGE_HEADER_BYTES`].
    #[serde(rename = "huge_header")]
    HugeHeader,
    /// `400` whose error message echoes the request (its URL and `Authorization` header), as
    /// some proxies do.
    #[serde(rename = "echo")]
    Echo,
}

impl Fault {
    /// The name used in config, headers and stats.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::RateLimited => "429",
            Fault::ServerError => "500",
            Fault::Unavailable => "503",
            Fault::InsufficientQuota => "insufficient_quota",
            Fault::Hang => "hang",
            Fault::Stall => "stall",
            Fault::Truncate => "truncate",
            Fault::Malformed => "malformed",
            Fault::HtmlError => "html_error",
            Fault::HugeBody => "huge_body",
            Fault::Endless => "endless",
            Fault::HugeHeader => "huge_header",
            Fault::Echo => "echo",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(name.trim().to_owned()))
            .map_err(|_| format!("unknown fault {name:?}"))
    }
}

/// A deviation from OpenAI's wire format seen in other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// `finish_reason: ""` instead of `"stop"`/`"tool_calls"`.
    EmptyFinishReason,
    /// A streamed tool call's id and name arrive only in its second chunk.
    LateToolIds,
    /// No `usage`, even when asked for.
    NoUsage,
}

impl FromStr for Quirk {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(name.trim().to_owned()))
            .map_err(|_| format!("unknown quirk {name:?}"))
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let config = MockConfig::from_toml(
            r#"
latency = "20ms"
retry_after = "250ms"
retry_after_values = ["1e30", "Wed, 21 Oct 2015 07:28:00 GMT"]
huge_bytes = 1000
fault = "503"
faults = ["429", "pass", "insufficient_quota"]
quirks = ["no_usage"]
default_reply = "echo {input}"

[[rules]]
contains = "hi"
reply = "hello"
"#,
            "mock.toml",
        );
        let config = match config {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(config.latency, Duration::from_millis(20));
        assert_eq!(config.retry_after_values.len(), 2);
        assert_eq!(config.huge_bytes, 1000);
        assert_eq!(config.fault, Some(Fault::Unavailable));
        assert_eq!(
            config.faults,
            [Fault::RateLimited, Fault::Pass, Fault::InsufficientQuota]
        );
        assert_eq!(config.quirks, [Quirk::NoUsage]);
        assert_eq!(config.script().rules.len(), 1);
        assert_eq!(config.dimensions, DEFAULT_DIMENSIONS);
    }

    #[test]
    fn rejects_unknown_keys_and_faults() {
        assert!(MockConfig::from_toml("latncy = \"1s\"", "m").is_err());
        assert!(MockConfig::from_toml("fault = \"404\"", "m").is_err());
        assert!(MockConfig::from_toml("dimensions = 0", "m").is_err());
        assert_eq!("stall".parse(), Ok(Fault::Stall));
        assert_eq!("huge_body".parse(), Ok(Fault::HugeBody));
        assert_eq!("endless".parse(), Ok(Fault::Endless));
        assert_eq!(Fault::HugeHeader.name(), "huge_header");
        assert!("nope".parse::<Fault>().is_err());
        assert_eq!(" late_tool_ids".parse(), Ok(Quirk::LateToolIds));
    }
}
