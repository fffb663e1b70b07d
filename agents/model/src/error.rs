//! Errors of model services, each knowing whether a retry may help.

use std::time::Duration;

use troupe_runtime::retry::Transient;

/// A failed model call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// 429: slow down; retry after the given time if the server said.
    #[error("model {model}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// The configured model.
        model: String,
        /// The server's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// The account is out of quota (`insufficient_quota`): permanent.
    #[error("model {model}: quota exhausted: {message}")]
    QuotaExceeded {
        /// The configured model.
        model: String,
        /// The provider's message.
        message: String,
    },
    /// Connecting, waiting for the first byte, or waiting between stream chunks took too long.
    #[error("model {model}: timed out {phase} after {after:?}")]
    Timeout {
        /// The configured model.
        model: String,
        /// `"connecting"`, `"waiting for a response"` or `"between stream chunks"`.
        phase: &'static str,
        /// The limit that fired.
        after: Duration,
    },
    /// The connection failed or was reset.
    #[error("model {model}: connection failed: {message}")]
    Connection {
        /// The configured model.
        model: String,
        /// What failed.
        message: String,
    },
    /// The provider answered with an error status.
    #[error("model {model}: provider returned {status}: {body}")]
    Provider {
        /// The configured model.
        model: String,
        /// HTTP status.
        status: u16,
        /// The start of the response body (never the request, which may hold secrets).
        body: String,
    },
    /// The response could not be understood (bad JSON, a malformed chunk mid-stream, a
    /// stream that ended without completing).
    #[error("model {model}: malformed response: {message}")]
    MalformedResponse {
        /// The configured model.
        model: String,
        /// What was wrong.
        message: String,
    },
    /// The response (a whole body, one stream event, or a streamed answer's text or tool
    /// calls) went past the model's `max_response_bytes`: reading stopped there. Not retried.
    #[error("model {model}: the response is larger than {limit} bytes (max_response_bytes)")]
    ResponseTooLarge {
        /// The configured model.
        model: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// A usage budget is spent; the call was not made.
    #[error("budget exceeded for {scope}: {message}")]
    BudgetExceeded {
        /// The budget's scope (e.g. a group).
        scope: String,
        /// Details.
        message: String,
    },
    /// The request was rejected as invalid (a 4xx other than 429), or the service is
    /// misconfigured (e.g. its API key variable is unset).
    #[error("model {model}: invalid request: {message}")]
    InvalidRequest {
        /// The configured model.
        model: String,
        /// Details.
        message: String,
    },
    /// A scripted model has no rule or cassette entry for this request.
    #[error("model {model}: no scripted reply: {message}")]
    NoScriptedReply {
        /// The configured model.
        model: String,
        /// Details.
        message: String,
    },
}

impl ModelError {
    /// [`ModelError::InvalidRequest`] of the model `model` saying `message`.
    pub(crate) fn invalid_request(model: &str, message: impl Into<String>) -> ModelError {
        ModelError::InvalidRequest {
            model: model.to_owned(),
            message: message.into(),
        }
    }

    /// How long the server asked to wait, if it did (as [`Transient::retry_after`]).
    pub fn retry_after(&self) -> Option<Duration> {
        Transient::retry_after(self)
    }

    /// The same error with every free-text part (messages, bodies) passed through `clean`:
    /// how secrets and URLs are kept out of what tenants see.
    pub(super) fn map_text(self, clean: impl Fn(&str) -> String) -> ModelError {
        match self {
            ModelError::QuotaExceeded { model, message } => ModelError::QuotaExceeded {
                model,
                message: clean(&message),
            },
            ModelError::Connection { model, message } => ModelError::Connection {
                model,
                message: clean(&message),
            },
            ModelError::Provider {
                model,
                status,
                body,
            } => ModelError::Provider {
                model,
                status,
                body: clean(&body),
            },
            ModelError::MalformedResponse { model, message } => ModelError::MalformedResponse {
                model,
                message: clean(&message),
            },
            ModelError::InvalidRequest { model, message } => ModelError::InvalidRequest {
                model,
                message: clean(&message),
            },
            other @ (ModelError::RateLimited { .. }
            | ModelError::Timeout { .. }
            | ModelError::ResponseTooLarge { .. }
            | ModelError::BudgetExceeded { .. }
            | ModelError::NoScriptedReply { .. }) => other,
        }
    }
}

impl Transient for ModelError {
    /// Rate limits, timeouts, connection errors and 5xx; never a quota, a budget, a bad
    /// request or response, or a missing scripted reply.
    fn is_retryable(&self) -> bool {
        match self {
            ModelError::RateLimited { .. }
            | ModelError::Timeout { .. }
            | ModelError::Connection { .. } => true,
            ModelError::Provider { status, .. } => *status >= 500,
            ModelError::QuotaExceeded { .. }
            | ModelError::MalformedResponse { .. }
            | ModelError::ResponseTooLarge { .. }
            | ModelError::BudgetExceeded { .. }
            | ModelError::InvalidRequest { .. }
            | ModelError::NoScriptedReply { .. } => false,
        }
    }

    /// A 429's Retry-After, when the server gave one.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::RateLimited { retry_after, .. } => *retry_after,
            ModelError::QuotaExceeded { .. }
            | ModelError::Timeout { .. }
            | ModelError::Connection { .. }
            | ModelError::Provider { .. }
            | ModelError::MalformedResponse { .. }
            | ModelError::ResponseTooLarge { .. }
            | ModelError::BudgetExceeded { .. }
            | ModelError::InvalidRequest { .. }
            | ModelError::NoScriptedReply { .. } => None,
        }
    }
}
