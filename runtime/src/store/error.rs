//! Errors of store operations (placeholder; replaced by the store implementation).

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}
