//! `[models.X]`: a model service (OpenAI-compatible or scripted) and its client settings.

use std::path::PathBuf;
use std::time::Duration;

/// One model service. Holds the *name* of the variable with the API key, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Which provider, with its own settings.
    pub provider: Provider,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for a response or between two stream chunks (not
    /// a total timeout: a long healthy stream is never cut).
    pub idle_timeout: Duration,
    /// Retries of one request (attempts after the first).
    pub max_retries: u32,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_retry_time: Duration,
    /// First backoff between attempts; doubled per retry, with jitter.
    pub initial_backoff: Duration,
    /// Backoff cap (a server's Retry-After takes precedence).
    pub max_backoff: Duration,
    /// Cost per million input tokens (>= 0).
    pub input_cost_per_million: f64,
    /// Cost per million output tokens (>= 0).
    pub output_cost_per_million: f64,
    /// Largest response read, in bytes: a non-streamed body, one SSE event, a streamed
    /// answer's assembled text and tool calls (> 0, at most 1 GiB).
    pub max_response_bytes: usize,
}

/// The provider of a model and its provider-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// An OpenAI-compatible HTTP API.
    Openai {
        /// API root, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// The provider's model name, e.g. `gpt-4o-mini`.
        model: String,
        /// Name of the environment variable holding the API key.
        api_key_env: Option<String>,
        /// Cassette file every exchange is appended to (JSON lines), resolved against the
        /// config file's directory; replay it with a scripted model's `cassette`.
        record: Option<PathBuf>,
    },
    /// A deterministic in-process model for demos and tests.
    Scripted {
        /// Rules file, relative paths resolved against the config file's directory.
        script: Option<PathBuf>,
        /// Cassette recorded by an `openai` model's `record`, replayed instead of the rules.
        cassette: Option<PathBuf>,
        /// Artificial latency per reply.
        latency: Duration,
    },
}

impl ModelSettings {
    /// The API key, read from the named environment variable now; `None` when no variable is
    /// named, it is unset or empty, or the provider takes no key.
    pub fn api_key(&self) -> Option<String> {
        match &self.provider {
            Provider::Openai {
                api_key_env: Some(var),
                ..
            } => std::env::var(var).ok().filter(|key| !key.is_empty()),
            _ => None,
        }
    }
}
