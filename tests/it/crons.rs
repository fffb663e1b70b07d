//! crons tests (in progress)
