//! Address classification for outbound requests: which IP addresses are public, and what every
//! other one is (private, loopback, link-local, …), seeing through IPv6 forms that embed an
//! IPv4 address (mapped, compatible, NAT64, 6to4).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an IP address is, for deciding whether a tool may connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `127/8`, `::1`.
    Loopback,
    /// `169.254/16` (cloud metadata services live at `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// IPv6 unique-local `fc00::/7` and the deprecated site-local `fec0::/10`.
    UniqueLocal,
    /// Carrier-grade NAT shared space `100.64/10`.
    SharedNat,
    /// `0.0.0.0/8` ("this network"; `0.0.0.0` reaches the local host) and `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// Documentation, benchmarking, protocol-assignment, discard and future-use ranges, and
    /// IPv6 outside global unicast `2000::/3`.
    Reserved,
}

impl AddressClass {
    /// Whether `allow_private = true` opens this class: private, loopback, unique-local and
    /// shared-NAT space. Link-local (cloud metadata) is never opened by it.
    pub fn is_private_like(self) -> bool {
        matches!(
            self,
            AddressClass::Private
                | AddressClass::Loopback
                | AddressClass::UniqueLocal
                | AddressClass::SharedNat
        )
    }

    /// Classes no configuration opens: nothing legitimate is fetched from them.
    pub fn is_never_allowed(self) -> bool {
        matches!(
            self,
            AddressClass::Unspecified | AddressClass::Broadcast | AddressClass::Multicast
        )
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::SharedNat => "shared (carrier-grade NAT)",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// The class of `ip`. IPv6 addresses embedding an IPv4 address are classified by it.
pub fn classify(ip: IpAddr) -> AddressClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `ip`, or the IPv4 address it embeds when it is IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) or 6to4
/// (`2002::/16`): connecting to those reaches (or is routed by) the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let o = v6.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    // IPv4-compatible, but not `::` and `::1`, which are IPv6's own.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return IpAddr::V4(low32);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return IpAddr::V4(low32);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (10, _, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedNat,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 168, _) => AddressClass::Private,
        // IETF protocol assignments, TEST-NET-1, the old 6to4 relay anycast.
        (192, 0, 0) | (192, 0, 2) | (192, 88, 99) => AddressClass::Reserved,
        // Benchmarking, TEST-NET-2, TEST-NET-3.
        (198, 18..=19, _) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved,
        (224..=239, _, _) => AddressClass::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        AddressClass::UniqueLocal
    } else if s[0] & 0xe000 != 0x2000
        // Documentation, Teredo (it tunnels to an obfuscated IPv4 address).
        || (s[0] == 0x2001 && (s[1] == 0x0db8 || s[1] == 0))
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str, expected: AddressClass) {
        let parsed: IpAddr = ip.parse().unwrap_or_else(|err| panic!("{ip}: {err}"));
        assert_eq!(classify(parsed), expected, "{ip}");
    }

    #[test]
    fn ipv4_ranges() {
        use AddressClass::*;
        for (ip, class) in [
            ("8.8.8.8", Public),
            ("93.184.216.34", Public),
            ("1.1.1.1", Public),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.15.255.255", Public),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.0", Public),
            ("192.168.1.1", Private),
            ("192.169.0.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("100.64.0.1", SharedNat),
            ("100.127.255.255", SharedNat),
            ("100.63.255.255", Public),
            ("100.128.0.0", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            ("198.18.0.1", Reserved),
            ("192.0.0.8", Reserved),
        ] {
            check(ip, class);
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        use AddressClass::*;
        for (ip, class) in [
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001:81c::200e", Public),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2001:0:4136:e378::1", Reserved),
            ("100::1", Reserved),
            ("4000::1", Reserved),
            // IPv4-mapped.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:a9fe:a9fe", LinkLocal),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:8.8.8.8", Public),
            // IPv4-compatible (deprecated).
            ("::127.0.0.1", Loopback),
            ("::169.254.169.254", LinkLocal),
            // NAT64.
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b:1::a00:1", Private),
            ("64:ff9b::808:808", Public),
            // 6to4.
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("2002:7f00:1::", Loopback),
            ("2002:808:808::1", Public),
        ] {
            check(ip, class);
        }
    }

    #[test]
    fn only_private_like_classes_are_opened_by_allow_private() {
        use AddressClass::*;
        for class in [Private, Loopback, UniqueLocal, SharedNat] {
            assert!(class.is_private_like(), "{class}");
        }
        for class in [
            Public,
            LinkLocal,
            Unspecified,
            Broadcast,
            Multicast,
            Reserved,
        ] {
            assert!(!class.is_private_like(), "{class}");
        }
        for class in [Unspecified, Broadcast, Multicast] {
            assert!(class.is_never_allowed(), "{class}");
        }
    }
}
