//! In-memory store (placeholder).

/// The embedded in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore;
