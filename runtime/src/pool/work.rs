//! Work items as data: what is enqueued ([`WorkSpec`]), what is persisted ([`WorkRecord`]),
//! what a handler sees ([`Work`]) and returns ([`WorkError`]: a retry decision and a
//! [`WorkFailure`] of a [`WorkErrorKind`]), and what callers observe ([`WorkStatus`],
//! [`WorkOutcome`], [`WorkCompletedEvent`]).
//!
//! Work is data, not closures, so that it survives a daemon restart: a restarted pool reloads
//! its records and runs them with the [`WorkHandler`] registered for their `kind`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Message, Recipient};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::failure::{WorkError, WorkErrorKind, WorkFailure};

/// A work item's id, unique within its pool.
pub type WorkId = String;

/// One attempt of a work item, as its handler sees it.
#[derive(Debug, Clone)]
pub struct Work {
    /// The pool running it.
    pub pool: String,
    /// The item's id.
    pub id: WorkId,
    /// Its kind (which handler runs it).
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
}

/// Runs the work items of one kind. Registered on a pool at startup (before or after it
/// starts: items of a kind without a handler wait, pending, until one is registered).
///
/// An attempt may be abandoned at any `.await` (the item was canceled, or the pool stopped):
/// handlers must be safe to run again, since an attempt cut short by a crash is retried.
#[async_trait]
pub trait WorkHandler: Send + Sync + 'static {
    /// Runs one attempt; the `Ok` value is kept in the item's record.
    async fn run(&self, work: Work) -> Result<Value, WorkError>;
}

/// A [`WorkHandler`] made from an async function.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn WorkHandler>
where
    F: Fn(Work) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, WorkError>> + Send + 'static,
{
    struct FnHandler<F>(F);

    #[async_trait]
    impl<F, Fut> WorkHandler for FnHandler<F>
    where
        F: Fn(Work) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, WorkError>> + Send + 'static,
    {
        async fn run(&self, work: Work) -> Result<Value, WorkError> {
            (self.0)(work).await
        }
    }

    Arc::new(FnHandler(f))
}

/// A follow-up work item enqueued in the same pool when an item ends, whatever the outcome.
/// Unlike an in-process notification it is persisted with the item, so it is enqueued exactly
/// once even if the daemon crashes as the item ends.
///
/// The follow-up's payload is `{"after": <id>, "outcome": <WorkOutcome>, "payload": <payload>}`
/// and its id is `<id>:then`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    /// The follow-up's kind.
    pub kind: String,
    /// Extra input for it.
    pub payload: Value,
}

/// A request to enqueue a work item. Build with [`WorkSpec::new`] and the setters.
#[derive(Clone)]
pub struct WorkSpec {
    pub(crate) id: Option<WorkId>,
    pub(crate) kind: String,
    pub(crate) payload: Value,
    pub(crate) priority: i32,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) then: Option<FollowUp>,
    pub(crate) notify: Option<Recipient<WorkCompletedEvent>>,
}

impl std::fmt::Debug for WorkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("priority", &self.priority)
            .field("run_at", &self.run_at)
            .field("max_attempts", &self.max_attempts)
            .field("then", &self.then)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

impl WorkSpec {
    /// Work of `kind` with `payload`, priority 0, to run as soon as possible.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        WorkSpec {
            id: None,
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: None,
            then: None,
            notify: None,
        }
    }

    /// Uses this id instead of a generated one; enqueueing an id that exists is
    /// [`PoolError::Duplicate`](super::PoolError::Duplicate) (producers retrying after an unknown
    /// outcome are deduplicated).
    pub fn id(mut self, id: impl Into<WorkId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Higher runs first; equal priorities run in enqueue order. Default 0.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Not before this time.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Not before `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.run_at(SystemTime::now() + delay)
    }

    /// Attempts allowed, instead of the pool's `max_attempts` (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Enqueue `follow_up` in the same pool when this item ends.
    pub fn then(mut self, follow_up: FollowUp) -> Self {
        self.then = Some(follow_up);
        self
    }

    /// Send a [`WorkCompletedEvent`] to `recipient` when this item ends (in process: lost if
    /// the daemon stops before the item ends; use [`then`](Self::then) for a durable one).
    pub fn notify(mut self, recipient: Recipient<WorkCompletedEvent>) -> Self {
        self.notify = Some(recipient);
        self
    }
}

/// Where an item is in its life, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkState {
    /// Waiting to run (first attempt or a retry).
    Pending,
    /// An attempt is running on the pool incarnation `runner`.
    Running {
        /// The runner's id (its liveness lease is `pool:{name}:runner:{runner}`).
        runner: String,
    },
    /// Ended with success.
    Succeeded {
        /// What the handler returned.
        output: Value,
    },
    /// Ended with a failure: a non-retryable error, or attempts exhausted.
    Failed {
        /// Why (kept flat: `error`, `error_kind`, `error_causes`).
        #[serde(flatten)]
        error: WorkFailure,
    },
    /// Canceled before it ended.
    Canceled,
}

impl WorkState {
    /// Whether the item has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WorkState::Succeeded { .. } | WorkState::Failed { .. } | WorkState::Canceled
        )
    }
}

/// A work item as stored at `pool:{name}:item:{id}` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkRecord {
    /// Its id.
    pub id: WorkId,
    /// Which handler runs it.
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Earliest start (ms since the Unix epoch); retries move it forward.
    pub run_at_ms: u64,
    /// When it was enqueued (ms since the Unix epoch).
    pub enqueued_at_ms: u64,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The follow-up to enqueue when it ends.
    pub then: Option<FollowUp>,
    /// Where it is.
    #[serde(flatten)]
    pub state: WorkState,
    /// A random tag changed by every write, so that a writer can recognise its own write
    /// when the store's answer was lost (a timeout) and it reads the record back.
    #[serde(default)]
    pub rev: u64,
}

impl WorkRecord {
    /// The caller's view of the state.
    pub fn status(&self) -> WorkStatus {
        match &self.state {
            WorkState::Pending => WorkStatus::Pending,
            WorkState::Running { .. } => WorkStatus::Running {
                attempt: self.attempts,
            },
            WorkState::Succeeded { .. } => WorkStatus::Succeeded,
            WorkState::Failed { error } => WorkStatus::Failed {
                error: error.clone(),
            },
            WorkState::Canceled => WorkStatus::Canceled,
        }
    }

    /// The outcome, once ended.
    pub fn outcome(&self) -> Option<WorkOutcome> {
        match &self.state {
            WorkState::Pending | WorkState::Running { .. } => None,
            WorkState::Succeeded { output } => Some(WorkOutcome::Succeeded {
                output: output.clone(),
            }),
            WorkState::Failed { error } => Some(WorkOutcome::Failed {
                error: error.clone(),
            }),
            WorkState::Canceled => Some(WorkOutcome::Canceled),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // A record is plain data (strings, numbers, JSON values): serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A work item's status as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkStatus {
    /// Waiting to run.
    Pending,
    /// Running its `attempt`-th attempt (from 1).
    Running {
        /// The attempt number.
        attempt: u32,
    },
    /// Ended with success.
    Succeeded,
    /// Ended with a failure.
    Failed {
        /// Why.
        error: WorkFailure,
    },
    /// Canceled.
    Canceled,
}

impl WorkStatus {
    /// Whether the item has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WorkStatus::Succeeded | WorkStatus::Failed { .. } | WorkStatus::Canceled
        )
    }
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WorkOutcome {
    /// Its handler succeeded with this output.
    Succeeded {
        /// The handler's output.
        output: Value,
    },
    /// It failed for good.
    Failed {
        /// Why (kept flat: `error`, `error_kind`, `error_causes`).
        #[serde(flatten)]
        error: WorkFailure,
    },
    /// It was canceled.
    Canceled,
}

/// Sent exactly once per item when it ends (success, failure or cancel), by the daemon that
/// ended it, to the item's `notify` recipient and to the pool's subscribers.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub struct WorkCompletedEvent {
    /// The pool.
    pub pool: String,
    /// The item.
    pub id: WorkId,
    /// Its kind.
    pub kind: String,
    /// Attempts started.
    pub attempts: u32,
    /// How it ended.
    pub outcome: WorkOutcome,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) use crate::clock::now_ms;

/// Milliseconds since the Unix epoch of `at`, rounded up (so that "not before `at`" holds
/// when compared with [`now_ms`], which rounds down).
pub(crate) fn to_ms_ceil(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Transient;

    #[test]
    fn records_round_trip_with_a_flat_state() {
        let record = WorkRecord {
            id: "a".into(),
            kind: "k".into(),
            payload: serde_json::json!({"x": 1}),
            priority: 3,
            run_at_ms: 5,
            enqueued_at_ms: 4,
            attempts: 1,
            max_attempts: 3,
            last_error: None,
            then: None,
            state: WorkState::Running {
                runner: "r1".into(),
            },
            rev: 7,
        };
        let bytes = record.encode();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""state":"running","runner":"r1""#),
            "{text}"
        );
        assert_eq!(WorkRecord::decode(&bytes).ok(), Some(record.clone()));
        assert_eq!(record.status(), WorkStatus::Running { attempt: 1 });
        assert_eq!(record.outcome(), None);
    }

    #[test]
    fn the_error_is_the_retry_decision() {
        assert!(WorkError::retryable("429").is_retryable());
        assert!(WorkError::retry_after("429", Duration::from_secs(1)).is_retryable());
        assert!(!WorkError::non_retryable("bad input").is_retryable());
        assert_eq!(
            WorkError::non_retryable("bad input").to_string(),
            "bad input"
        );
    }

    #[test]
    fn the_failure_keeps_its_kind_and_message_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("limit llm: store unavailable: {source}")]
        struct Outer {
            source: Inner,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("redis down")]
        struct Inner;
        impl Transient for Outer {
            fn is_retryable(&self) -> bool {
                true
            }
            fn retry_after(&self) -> Option<Duration> {
                Some(Duration::from_secs(2))
            }
        }
        let error = WorkError::from_error(WorkErrorKind::RateLimited, &Outer { source: Inner });
        assert_eq!(
            error,
            WorkError::Retryable {
                failure: WorkFailure {
                    kind: WorkErrorKind::RateLimited,
                    message: "limit llm: store unavailable: redis down".into(),
                    causes: vec!["redis down".into()],
                },
                retry_after: Some(Duration::from_secs(2)),
            }
        );
        assert_eq!(error.kind(), WorkErrorKind::RateLimited);
        assert_eq!(error.message(), "limit llm: store unavailable: redis down");
        assert_eq!(error.to_string(), error.message());
        let plain = WorkError::non_retryable("bad input");
        assert_eq!(plain.kind(), WorkErrorKind::Other);
        assert_eq!(plain.failure(), &WorkFailure::from("bad input"));
        assert_eq!(
            plain.with_kind(WorkErrorKind::Invalid).kind(),
            WorkErrorKind::Invalid
        );
    }

    #[test]
    fn failed_records_keep_the_kind_and_read_the_old_shape() {
        let failed = |error: WorkFailure| WorkRecord {
            id: "a".into(),
            kind: "k".into(),
            payload: Value::Null,
            priority: 0,
            run_at_ms: 5,
            enqueued_at_ms: 4,
            attempts: 3,
            max_attempts: 3,
            last_error: Some("429".into()),
            then: None,
            state: WorkState::Failed { error },
            rev: 7,
        };
        let typed = failed(WorkFailure {
            kind: WorkErrorKind::RateLimited,
            message: "429".into(),
            causes: vec!["slow down".into()],
        });
        let bytes = typed.encode();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(
                r#""state":"failed","error":"429","error_kind":"rate_limited","error_causes":["slow down"]"#
            ),
            "{text}"
        );
        assert_eq!(WorkRecord::decode(&bytes).ok(), Some(typed.clone()));
        assert_eq!(
            typed.outcome(),
            Some(WorkOutcome::Failed {
                error: typed_failure()
            })
        );
        // A failure of no particular kind is written as before, and a record written before
        // kinds were kept reads as one.
        let plain = failed("bad input".into());
        let text = String::from_utf8_lossy(&plain.encode()).into_owned();
        assert!(
            text.contains(r#""state":"failed","error":"bad input","rev""#),
            "{text}"
        );
        let old = r#"{"id":"a","kind":"k","payload":null,"priority":0,"run_at_ms":5,
            "enqueued_at_ms":4,"attempts":3,"max_attempts":3,"last_error":"429","then":null,
            "state":"failed","error":"bad input"}"#;
        let decoded = WorkRecord::decode(old.as_bytes()).ok();
        assert_eq!(decoded.map(|r| r.state), Some(plain.state));
        // An outcome, as a follow-up's payload holds it.
        let outcome = serde_json::to_value(WorkOutcome::Failed {
            error: typed_failure(),
        })
        .ok();
        assert_eq!(
            outcome,
            Some(serde_json::json!({"outcome": "failed", "error": "429",
                "error_kind": "rate_limited", "error_causes": ["slow down"]}))
        );
        let old: Option<WorkOutcome> =
            serde_json::from_str(r#"{"outcome":"failed","error":"nope"}"#).ok();
        assert_eq!(
            old,
            Some(WorkOutcome::Failed {
                error: "nope".into()
            })
        );
    }

    fn typed_failure() -> WorkFailure {
        WorkFailure {
            kind: WorkErrorKind::RateLimited,
            message: "429".into(),
            causes: vec!["slow down".into()],
        }
    }

    #[test]
    fn work_errors_read_their_old_shape() {
        let old: Option<WorkError> =
            serde_json::from_str(r#"{"Retryable":{"message":"503","retry_after":null}}"#).ok();
        assert_eq!(old, Some(WorkError::retryable("503")));
        let error = WorkError::retry_after("429", Duration::from_secs(1))
            .with_kind(WorkErrorKind::RateLimited);
        let text = serde_json::to_string(&error).unwrap_or_default();
        assert_eq!(serde_json::from_str::<WorkError>(&text).ok(), Some(error));
    }
}
