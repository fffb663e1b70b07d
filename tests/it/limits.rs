//! limits tests (in progress)
