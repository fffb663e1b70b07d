//! Test support: the test kit's real services (a private redis-server, the daemon binary, the
//! mock model server, the oracle), and the in-process daemon started through the builder.
pub mod agents;
pub use troupe_testkit::{daemon, llm, oracle, redis};
