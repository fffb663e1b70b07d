//! limits benchmarks (in progress)
fn main() {}
