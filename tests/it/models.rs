//! models tests (in progress)
