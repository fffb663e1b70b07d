//! Redis store (placeholder).

/// Redis connection options.
#[derive(Debug, Clone)]
pub struct RedisOptions;

/// The Redis store.
#[derive(Debug)]
pub struct RedisStore;
