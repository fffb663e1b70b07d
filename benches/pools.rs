//! pools benchmarks (in progress)
fn main() {}
