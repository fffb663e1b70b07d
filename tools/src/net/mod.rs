//! Outbound network policy for tools that fetch: address classification, the destination
//! policy (host allowlist, opened networks) and the resolver that enforces it at connect time.

mod address;
mod policy;
mod resolve;

pub use address::{canonical, classify, AddressClass};
pub use policy::{DestinationPolicy, HostPattern, Refusal};
pub use resolve::GuardedResolver;
