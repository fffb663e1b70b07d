//! troupe's integration tests: one binary, real services started by `support`.

mod support;

mod actors;
mod config;
mod daemon;
mod store;
mod threads;
