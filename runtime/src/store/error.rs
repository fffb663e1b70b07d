//! Errors of store operations, classified by what the caller can do about them.

use std::time::Duration;

use crate::retry::Transient;

/// A failed store operation.
///
/// Expected outcomes (a missing key, a lease held by someone else, a refused compare-and-set)
/// are values, not errors. What remains is either transient — [`StoreError::is_retryable`]
/// says so — or a mistake in how the store is used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached: not connected, connection refused or dropped, or the
    /// server is still loading its data. The store keeps reconnecting in the background.
    #[error("{backend} store unavailable during {op}: {message}")]
    Unavailable {
        /// The backend (`"redis"`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// What the client library or the server said.
        message: String,
    },
    /// The backend did not answer in time. The operation may or may not have taken effect.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The stream or its consumer group does not exist (Redis `NOGROUP`). A consumer recreates
    /// its group when it sees this — after a Redis restart without persistence, for example.
    #[error("no consumer group {group:?} on stream {stream:?} (or no such stream)")]
    NoGroup {
        /// The stream, without the key prefix.
        stream: String,
        /// The group.
        group: String,
    },
    /// The key holds another kind of value than the operation works on (Redis `WRONGTYPE`).
    #[error("{op}: key {key:?} holds the wrong kind of value")]
    WrongType {
        /// The operation.
        op: &'static str,
        /// The key, without the key prefix.
        key: String,
    },
    /// An increment met a value that is not an integer, or the result would overflow.
    #[error("{op}: value at {key:?} is not an integer or the result would overflow")]
    NotInteger {
        /// The operation.
        op: &'static str,
        /// The key, without the key prefix.
        key: String,
    },
    /// A stream entry id that is not `<ms>-<seq>` (or one of the special ids the operation
    /// accepts).
    #[error("{op}: invalid stream id {id:?}")]
    InvalidId {
        /// The operation.
        op: &'static str,
        /// The offending id (or ids).
        id: String,
    },
    /// An argument the backend refuses before doing anything (an entry without fields, a bad
    /// connection URL).
    #[error("{op}: invalid argument: {message}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The server is out of memory (`maxmemory` with `noeviction`): writes are refused until
    /// memory is freed. Producers should back off.
    #[error("{op}: store out of memory: {message}")]
    OutOfMemory {
        /// The operation.
        op: &'static str,
        /// What the server said.
        message: String,
    },
    /// The backend answered something this client does not understand.
    #[error("{op}: unexpected reply: {message}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was unexpected.
        message: String,
    },
    /// Any other error reported by the backend.
    #[error("{op}: {message}")]
    Other {
        /// The operation.
        op: &'static str,
        /// What the backend said.
        message: String,
    },
}

impl Transient for StoreError {
    /// The backend was unreachable, slow or full (see [`StoreError::is_retryable`]).
    fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::OutOfMemory { .. } => true,
            Self::NoGroup { .. }
            | Self::WrongType { .. }
            | Self::NotInteger { .. }
            | Self::InvalidId { .. }
            | Self::InvalidArgument { .. }
            | Self::Protocol { .. }
            | Self::Other { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retryable() {
        let op = "get";
        let transient = [
            StoreError::Unavailable {
                backend: "redis",
                op,
                message: "refused".into(),
            },
            StoreError::Timeout {
                op,
                after: Duration::from_secs(1),
            },
            StoreError::OutOfMemory {
                op,
                message: "OOM".into(),
            },
        ];
        assert!(transient.iter().all(StoreError::is_retryable));
        let permanent = [
            StoreError::NoGroup {
                stream: "s".into(),
                group: "g".into(),
            },
            StoreError::WrongType {
                op,
                key: "k".into(),
            },
            StoreError::Protocol {
                op,
                message: "?".into(),
            },
        ];
        assert!(!permanent.iter().any(StoreError::is_retryable));
    }

    #[test]
    fn messages_name_operation_and_key() {
        let e = StoreError::WrongType {
            op: "hget",
            key: "task:1".into(),
        };
        assert_eq!(
            e.to_string(),
            "hget: key \"task:1\" holds the wrong kind of value"
        );
    }
}
