//! How a work item's attempt fails: [`WorkError`] (the handler's answer: retry or not, and
//! why) and the [`WorkFailure`] it records, whose [`WorkErrorKind`] crosses the pool boundary
//! with the failure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::Transient;

/// What kind of failure ended an attempt or an item: a stable, serialisable name that
/// crosses the pool boundary with the failure, so that whoever awaits the item can tell a
/// rate limit from bad input without parsing the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkErrorKind {
    /// Not classified by its handler (and every failure recorded before kinds were kept).
    #[default]
    Other,
    /// The input is invalid (a payload, a request, an argument).
    Invalid,
    /// Something the work needs does not exist.
    NotFound,
    /// The work may not use something it needs.
    Forbidden,
    /// The work conflicts with the state it meets (an id taken, a thread archived or
    /// waiting for an approval).
    Conflict,
    /// A rate limit (a limiter's or a provider's 429) refused it.
    RateLimited,
    /// A usage budget is spent.
    Budget,
    /// It ran longer than it was allowed.
    Timeout,
    /// What it needs is busy elsewhere (a thread's turn on another daemon, a lapsed lease).
    Busy,
    /// The agent ended its turn without an answer (awaiting an approval, a step limit).
    NoAnswer,
    /// The model call failed (other than a rate limit or a budget).
    Model,
    /// A tool failed or could not be set up.
    Tool,
    /// The store failed.
    Store,
    /// The handler panicked.
    Panicked,
    /// The attempt stopped with its runner (a daemon that died mid-attempt).
    Interrupted,
    /// The item was canceled.
    Canceled,
    /// A fault inside troupe (an actor that failed, a corrupt record, an unusable output).
    Internal,
}

impl WorkErrorKind {
    /// Whether this is [`WorkErrorKind::Other`], the default (not written to records).
    pub fn is_other(&self) -> bool {
        *self == WorkErrorKind::Other
    }
}

/// A failure as it is kept and observed: its kind, its message and the messages of its
/// sources (outermost first). Displays as the message.
///
/// Serialised flat into the record or outcome that holds it, as `error` (the message, the
/// field every record has always had), `error_kind` and `error_causes`; the last two are
/// left out when they are the default ([`WorkErrorKind::Other`], no causes), so records
/// without them (older ones) read as exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WorkFailure {
    /// What went wrong.
    #[serde(rename = "error", alias = "message")]
    pub message: String,
    /// What kind of failure it is.
    #[serde(
        rename = "error_kind",
        default,
        skip_serializing_if = "WorkErrorKind::is_other"
    )]
    pub kind: WorkErrorKind,
    /// The messages of the failure's sources, outermost first (its `source()` chain).
    #[serde(
        rename = "error_causes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub causes: Vec<String>,
}

impl WorkFailure {
    /// A failure of `kind` with `message` and no causes.
    pub fn new(kind: WorkErrorKind, message: impl Into<String>) -> Self {
        WorkFailure {
            kind,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// `error` as a failure of `kind`: its message and the messages of its sources.
    pub fn of(kind: WorkErrorKind, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        WorkFailure {
            kind,
            message: error.to_string(),
            causes,
        }
    }
}

/// A failure of kind [`WorkErrorKind::Other`] with this message (how handlers that do not
/// classify their failures, and tests, name one).
impl From<&str> for WorkFailure {
    fn from(message: &str) -> Self {
        WorkFailure::new(WorkErrorKind::Other, message)
    }
}

impl From<String> for WorkFailure {
    fn from(message: String) -> Self {
        WorkFailure::new(WorkErrorKind::Other, message)
    }
}

/// Why an attempt failed. The error *is* the retry decision: a [`Retryable`] error is tried
/// again (after `retry_after` if given, else after the pool's backoff) while attempts remain;
/// a [`NonRetryable`] one fails the item at once. Either way its [`WorkFailure`] (kind,
/// message, causes) is what the item's record and outcome keep.
///
/// [`Retryable`]: WorkError::Retryable
/// [`NonRetryable`]: WorkError::NonRetryable
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WorkError {
    /// A transient failure (a timeout, a 429, a 503): try again.
    #[error("{failure}")]
    Retryable {
        /// What went wrong.
        #[serde(flatten)]
        failure: WorkFailure,
        /// When the next attempt may start at the earliest (a server's `Retry-After`);
        /// the pool's backoff when `None`.
        retry_after: Option<Duration>,
    },
    /// A permanent failure (bad input, no quota): trying again cannot help.
    #[error("{failure}")]
    NonRetryable {
        /// What went wrong.
        #[serde(flatten)]
        failure: WorkFailure,
    },
}

impl WorkError {
    /// A retryable error, retried after the pool's backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        WorkError::Retryable {
            failure: WorkFailure::from(message.into()),
            retry_after: None,
        }
    }

    /// A retryable error, retried no sooner than `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        WorkError::Retryable {
            failure: WorkFailure::from(message.into()),
            retry_after: Some(after),
        }
    }

    /// A permanent error: the item fails at once.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        WorkError::NonRetryable {
            failure: WorkFailure::from(message.into()),
        }
    }

    /// `error` as an attempt's error of `kind`, keeping its message chain and its own retry
    /// decision ([`Transient::is_retryable`] and [`Transient::retry_after`]).
    pub fn from_error<E>(kind: WorkErrorKind, error: &E) -> Self
    where
        E: Transient + std::error::Error + 'static,
    {
        let failure = WorkFailure::of(kind, error);
        if error.is_retryable() {
            WorkError::Retryable {
                failure,
                retry_after: error.retry_after(),
            }
        } else {
            WorkError::NonRetryable { failure }
        }
    }

    /// The same error, of `kind`.
    pub fn with_kind(mut self, kind: WorkErrorKind) -> Self {
        match &mut self {
            WorkError::Retryable { failure, .. } | WorkError::NonRetryable { failure } => {
                failure.kind = kind;
            }
        }
        self
    }

    /// What failed: kind, message and causes, without the retry decision.
    pub fn failure(&self) -> &WorkFailure {
        match self {
            WorkError::Retryable { failure, .. } | WorkError::NonRetryable { failure } => failure,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> WorkErrorKind {
        self.failure().kind
    }

    /// The message, without the retry decision.
    pub fn message(&self) -> &str {
        &self.failure().message
    }
}

impl Transient for WorkError {
    fn is_retryable(&self) -> bool {
        match self {
            WorkError::Retryable { .. } => true,
            WorkError::NonRetryable { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            WorkError::Retryable { retry_after, .. } => *retry_after,
            WorkError::NonRetryable { .. } => None,
        }
    }
}
