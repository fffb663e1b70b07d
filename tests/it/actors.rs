//! actors tests
