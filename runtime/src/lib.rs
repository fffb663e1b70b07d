//! troupe-runtime: the supervised actor tree, entity registries and the store.

pub mod store;
