//! tools tests (in progress)
