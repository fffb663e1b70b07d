//! Test support: real services (a private redis-server, the daemon binary) for the integration tests.
pub mod agents;
pub mod daemon;
pub mod llm;
pub mod oracle;
pub mod redis;
