//! Errors of rate limiting: what a caller learns when a limit cannot answer or will not admit
//! within the time it was allowed to wait. A plain refusal is not an error: it is
//! [`super::Admission::Limited`].

use std::time::Duration;

use crate::retry::Transient;
use crate::store::StoreError;

/// A failed rate-limit operation. [`LimitError::is_retryable`] says whether trying again later
/// may succeed, and [`LimitError::retry_after`] when, where that is known.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// No limit of that name is configured.
    #[error("no limit named {name:?}")]
    UnknownLimit {
        /// The name asked for.
        name: String,
    },
    /// More units were asked for in one call than the limit ever holds: no wait would help.
    #[error("limit {limit}: {requested} units asked for at once, but it holds at most {capacity}")]
    ExceedsCapacity {
        /// The limit.
        limit: String,
        /// Units asked for.
        requested: u64,
        /// The most it can admit at once (per shard).
        capacity: u64,
    },
    /// The units would not be available within the time the caller allowed to wait.
    #[error("limit {limit}: rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// The limit.
        limit: String,
        /// When the units could be admitted at once (if nobody else takes them first).
        retry_after: Duration,
    },
    /// A reservation was refused: the limit already promised as many units ahead as
    /// `max_reserved` allows.
    #[error(
        "limit {limit}: too many units reserved ahead (at most {max_reserved}), retry after {retry_after:?}"
    )]
    TooManyReserved {
        /// The limit.
        limit: String,
        /// Units that may be reserved ahead (per shard).
        max_reserved: u64,
        /// When the reservation would fit.
        retry_after: Duration,
    },
    /// The store holding a distributed limit could not be reached (and the limit fails
    /// closed, or the operation was not an admission).
    #[error("limit {limit}: store unavailable: {source}")]
    StoreUnavailable {
        /// The limit.
        limit: String,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// The store refused the operation for a reason retrying will not fix (for example the
    /// limit's key holds another kind of value).
    #[error("limit {limit}: store error: {source}")]
    Store {
        /// The limit.
        limit: String,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// The limit's settings cannot be enforced as given.
    #[error("limit {limit}: {message}")]
    Settings {
        /// The limit.
        limit: String,
        /// What is wrong.
        message: String,
    },
}

impl LimitError {
    /// How long to wait before retrying, when the limit knows (as [`Transient::retry_after`]).
    pub fn retry_after(&self) -> Option<Duration> {
        Transient::retry_after(self)
    }

    /// A store failure of `limit`, classified by whether retrying may help.
    pub(crate) fn store(limit: &str, source: StoreError) -> Self {
        let limit = limit.to_owned();
        if source.is_retryable() {
            Self::StoreUnavailable { limit, source }
        } else {
            Self::Store { limit, source }
        }
    }
}

impl Transient for LimitError {
    /// The limit was busy or its store unreachable.
    fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::TooManyReserved { .. }
            | Self::StoreUnavailable { .. } => true,
            Self::UnknownLimit { .. }
            | Self::ExceedsCapacity { .. }
            | Self::Store { .. }
            | Self::Settings { .. } => false,
        }
    }

    /// When the units would be available, for a busy limit.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::TooManyReserved { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::UnknownLimit { .. }
            | Self::ExceedsCapacity { .. }
            | Self::StoreUnavailable { .. }
            | Self::Store { .. }
            | Self::Settings { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        let limit = || "llm".to_owned();
        let after = Duration::from_secs(1);
        let unavailable = StoreError::Unavailable {
            backend: "redis",
            op: "rate_limit",
            message: "refused".into(),
        };
        let wrong_type = StoreError::WrongType {
            op: "rate_limit",
            key: "k".into(),
        };
        let retryable = [
            LimitError::RateLimited {
                limit: limit(),
                retry_after: after,
            },
            LimitError::TooManyReserved {
                limit: limit(),
                max_reserved: 3,
                retry_after: after,
            },
            LimitError::store("llm", unavailable),
        ];
        assert!(retryable.iter().all(LimitError::is_retryable));
        let permanent = [
            LimitError::UnknownLimit { name: limit() },
            LimitError::ExceedsCapacity {
                limit: limit(),
                requested: 10,
                capacity: 5,
            },
            LimitError::store("llm", wrong_type),
            LimitError::Settings {
                limit: limit(),
                message: "?".into(),
            },
        ];
        assert!(!permanent.iter().any(LimitError::is_retryable));
        assert_eq!(retryable[0].retry_after(), Some(after));
        assert_eq!(permanent[0].retry_after(), None);
        assert_eq!(
            permanent[1].to_string(),
            "limit llm: 10 units asked for at once, but it holds at most 5"
        );
    }
}
