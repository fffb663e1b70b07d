//! agents tests (in progress)
