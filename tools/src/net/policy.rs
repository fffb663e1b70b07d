//! Where an outbound request may go: the [`DestinationPolicy`] of a fetching tool checks a URL
//! (scheme, credentials, host allowlist, literal IP hosts) before anything is sent, and every
//! address a host name resolves to before a connection is opened.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Url};

use super::address::{canonical, classify, AddressClass};

/// One entry of a tool's host allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this domain (`example.com`; not its subdomains).
    Domain(String),
    /// Any subdomain of this domain (`*.example.org`: `a.example.org`, `a.b.example.org`, not
    /// `example.org` itself).
    Subdomains(String),
    /// This IP address, however the URL writes it. Naming an address also lets the tool
    /// connect to it when it is not public.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses `example.com`, `*.example.org`, `10.1.2.3`, `::1` or `[::1]`. Domains are
    /// normalised like URL hosts (lower case, punycode).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid host \"{entry}\": {why}");
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        let (wildcard, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if rest.contains('*') {
            return Err(invalid(
                "\"*\" is only allowed as a leading \"*.\" (e.g. \"*.example.org\")",
            ));
        }
        if rest.contains("://") || rest.contains('/') {
            return Err(invalid(
                "give a host name, not a URL (e.g. \"example.com\")",
            ));
        }
        match Host::parse(rest) {
            Ok(Host::Domain(domain)) => {
                let domain = domain.trim_end_matches('.').to_owned();
                if domain.is_empty() {
                    Err(invalid("empty host"))
                } else if wildcard {
                    Ok(HostPattern::Subdomains(domain))
                } else {
                    Ok(HostPattern::Domain(domain))
                }
            }
            Ok(Host::Ipv4(ip)) if !wildcard => Ok(HostPattern::Ip(IpAddr::V4(ip))),
            Ok(Host::Ipv6(ip)) if !wildcard => Ok(HostPattern::Ip(IpAddr::V6(ip))),
            Ok(_) => Err(invalid("\"*.\" needs a domain after it")),
            Err(err) => Err(invalid(&err.to_string())),
        }
    }

    /// Whether a URL's host matches.
    pub fn matches(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (HostPattern::Domain(pattern), Host::Domain(domain)) => {
                domain.trim_end_matches('.').eq_ignore_ascii_case(pattern)
            }
            (HostPattern::Subdomains(pattern), Host::Domain(domain)) => {
                let domain = domain.trim_end_matches('.');
                domain.len() > pattern.len() + 1
                    && domain.as_bytes()[domain.len() - pattern.len() - 1] == b'.'
                    && domain[domain.len() - pattern.len()..].eq_ignore_ascii_case(pattern)
            }
            (HostPattern::Ip(pattern), Host::Ipv4(ip)) => *pattern == IpAddr::V4(*ip),
            (HostPattern::Ip(pattern), Host::Ipv6(ip)) => *pattern == IpAddr::V6(*ip),
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Domain(domain) => f.write_str(domain),
            HostPattern::Subdomains(domain) => write!(f, "*.{domain}"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a destination was refused. Said to the model, so it names the URL's parts, never the
/// policy's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not `http` or `https`.
    Scheme(String),
    /// The URL carries `user:password@`.
    Credentials,
    /// The URL has no host.
    NoHost,
    /// The host is not in the allowlist.
    HostNotAllowed(String),
    /// The host is a number that is not a well-formed IP address (`1.2.3.0x1g`).
    NumericHost(String),
    /// The host is, or resolves to, an address the policy does not open.
    Address {
        /// The host name that resolved to it; `None` when the URL names the address itself.
        host: Option<String>,
        /// The refused address.
        addr: IpAddr,
        /// Its class.
        class: AddressClass,
    },
    /// The host name resolves to no address.
    NoAddress(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Scheme(scheme) => {
                write!(f, "scheme \"{scheme}\" is not allowed: only http and https")
            }
            Refusal::Credentials => {
                f.write_str("URLs with credentials (user:password@) are not allowed")
            }
            Refusal::NoHost => f.write_str("the URL has no host"),
            Refusal::HostNotAllowed(host) => write!(f, "host {host} is not allowed for this tool"),
            Refusal::NumericHost(host) => write!(f, "host {host} is not a valid address"),
            Refusal::Address { host, addr, class } => {
                let article = if *class == AddressClass::Unspecified {
                    "an"
                } else {
                    "a"
                };
                match host {
                    None => write!(f, "{addr} is {article} {class} address"),
                    Some(host) => write!(f, "{host} resolves to {addr}, {article} {class} address"),
                }?;
                f.write_str(", which this tool may not reach")
            }
            Refusal::NoAddress(host) => write!(f, "{host} resolves to no address"),
        }
    }
}

impl std::error::Error for Refusal {}

/// The destinations a fetching tool may reach.
///
/// Public addresses are allowed; private, loopback, unique-local and shared-NAT ones only with
/// `allow_private`; any non-public one when it lies in `networks` (or is named in `hosts`);
/// unspecified, broadcast and multicast addresses never. IPv6 forms embedding an IPv4 address
/// are judged by that address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    hosts: Vec<HostPattern>,
    networks: Vec<IpNet>,
    allow_private: bool,
}

impl DestinationPolicy {
    /// A policy: `hosts` empty allows any host (whose addresses pass), `networks` are opened
    /// explicitly, `allow_private` opens private-like addresses.
    pub fn new(hosts: Vec<HostPattern>, networks: Vec<IpNet>, allow_private: bool) -> Self {
        let mut networks = networks;
        for host in &hosts {
            if let HostPattern::Ip(ip) = host {
                networks.push(IpNet::from(*ip));
            }
        }
        DestinationPolicy {
            hosts,
            networks,
            allow_private,
        }
    }

    /// The host allowlist (empty: any host).
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// Checks a URL before a request is sent: an `http`/`https` scheme, no credentials, a
    /// host in the allowlist, and, when the host is an IP address (in any encoding the URL
    /// parser accepts: `2852039166`, `0xA9FEA9FE`, `0251.0376.0251.0376`, `[::ffff:…]`), that
    /// address. Host names are checked when they resolve ([`check_resolved`](Self::check_resolved)).
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = url.host().ok_or(Refusal::NoHost)?;
        let name = url.host_str().unwrap_or_default();
        if !self.hosts.is_empty() && !self.hosts.iter().any(|pattern| pattern.matches(&host)) {
            return Err(Refusal::HostNotAllowed(name.to_owned()));
        }
        match host {
            Host::Ipv4(ip) => self.check_addr(IpAddr::V4(ip)),
            Host::Ipv6(ip) => self.check_addr(IpAddr::V6(ip)),
            Host::Domain(domain) => {
                // The URL parser turns numeric hosts into addresses; a domain that still
                // looks numeric is refused rather than handed to a resolver that may read it
                // differently.
                if let Ok(ip) = domain.parse::<IpAddr>() {
                    return self.check_addr(ip);
                }
                if looks_numeric(domain) {
                    return Err(Refusal::NumericHost(name.to_owned()));
                }
                Ok(())
            }
        }
    }

    /// Checks an address a URL names.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), Refusal> {
        self.check(None, addr)
    }

    /// Checks an address, which `host` resolved to when given.
    fn check(&self, host: Option<&str>, addr: IpAddr) -> Result<(), Refusal> {
        let class = classify(addr);
        let refuse = || {
            Err(Refusal::Address {
                host: host.map(str::to_owned),
                addr,
                class,
            })
        };
        if class.is_never_allowed() {
            return refuse();
        }
        if class == AddressClass::Public {
            return Ok(());
        }
        let inner = canonical(addr);
        if self
            .networks
            .iter()
            .any(|net| net.contains(&addr) || net.contains(&inner))
        {
            return Ok(());
        }
        if self.allow_private && class.is_private_like() {
            return Ok(());
        }
        refuse()
    }

    /// Checks every address `host` resolved to: all must pass (a name resolving to a public
    /// and a private address is refused), and there must be one.
    pub fn check_resolved(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::NoAddress(host.to_owned()));
        }
        addrs
            .iter()
            .try_for_each(|addr| self.check(Some(host), addr.ip()))
    }
}

/// Whether the last label of a domain is a number (decimal, `0x` hex): such a host is an
/// IPv4 address in some notation.
fn looks_numeric(domain: &str) -> bool {
    let last = domain
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let digits = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .unwrap_or(last);
    !last.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit()) && {
        last.chars().all(|c| c.is_ascii_digit()) || digits.len() < last.len()
    }
}

#[cfg(test)]
mod tests;
