//! pools tests (in progress)
