//! Test support: real services (a private redis-server, the daemon binary) for the integration tests.
pub mod daemon;
pub mod llm;
pub mod redis;
