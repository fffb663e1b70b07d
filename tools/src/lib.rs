//! troupe-tools: the `Tool` trait, the tool registry with per-agent allowlists, and the
//! built-in tools. They arrive with the agents capability; the crate exists now so the
//! dependency direction (config <- runtime <- tools <- agents <- binary) is fixed from the start.
