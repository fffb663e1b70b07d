//! daemon tests
