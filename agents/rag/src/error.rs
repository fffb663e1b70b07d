//! `RagError`: what can go wrong when adding to or searching a knowledge base.

use troupe_runtime::error_kind::ErrorKind;
use troupe_runtime::retry::Transient;
use troupe_runtime::store::StoreError;

use troupe_model::ModelError;

/// A failed RAG operation. An empty search is not an error: it is an empty list of hits.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The store failed; `is_retryable` says whether to try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedding model failed (after its own bounded retries).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Invalid input from a caller (a name, an empty document, a bad filter).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The caller may not use this namespace (another group's, or a reserved one).
    #[error("group {group:?} may not access namespace {namespace:?}")]
    Forbidden {
        /// The caller's group.
        group: String,
        /// The namespace asked for.
        namespace: String,
    },
    /// Vectors of another dimension than the namespace holds.
    #[error("namespace {namespace:?} holds vectors of dimension {expected}, got {actual}")]
    DimensionMismatch {
        /// The namespace.
        namespace: String,
        /// Its dimension, fixed by its first document.
        expected: usize,
        /// The dimension offered.
        actual: usize,
    },
    /// A persisted record could not be decoded.
    #[error("corrupt record at {key}: {message}")]
    Corrupt {
        /// The store key.
        key: String,
        /// What was wrong.
        message: String,
    },
}

impl RagError {
    /// A short stable name of the error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RagError::Store(_) => ErrorKind::Store,
            RagError::Model(_) => ErrorKind::Model,
            RagError::Invalid { .. } => ErrorKind::Invalid,
            RagError::Forbidden { .. } => ErrorKind::Forbidden,
            RagError::DimensionMismatch { .. } => ErrorKind::DimensionMismatch,
            RagError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }
}

impl Transient for RagError {
    /// The store's and the embedding model's own decisions; the caller's mistakes and corrupt
    /// records do not pass.
    fn is_retryable(&self) -> bool {
        match self {
            RagError::Store(err) => err.is_retryable(),
            RagError::Model(err) => err.is_retryable(),
            RagError::Invalid { .. }
            | RagError::Forbidden { .. }
            | RagError::DimensionMismatch { .. }
            | RagError::Corrupt { .. } => false,
        }
    }
}

impl From<troupe_runtime::key_name::InvalidKeyName> for RagError {
    fn from(err: troupe_runtime::key_name::InvalidKeyName) -> Self {
        RagError::Invalid {
            what: err.what,
            message: err.detail(),
        }
    }
}
