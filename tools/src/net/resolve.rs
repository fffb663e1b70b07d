//! The DNS resolver of fetching tools: it resolves a host name, checks every address against
//! the tool's [`DestinationPolicy`], and hands the HTTP client exactly the addresses it
//! checked. The connection therefore goes to a checked address: a DNS answer that changes
//! between a check and the connect (rebinding) cannot redirect it.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::policy::DestinationPolicy;

/// A [`Resolve`] that refuses names resolving to addresses its policy does not open; the
/// refusal travels as a [`Refusal`](super::Refusal) in the request error's source chain.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl GuardedResolver {
    /// A resolver checking against `policy`.
    pub fn new(policy: Arc<DestinationPolicy>) -> Self {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's (or the scheme's) port in.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_resolved(&host, &addrs)?;
            tracing::debug!(host, ?addrs, "resolved and checked");
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
