//! Unit tests of the destination policy: every encoding of the metadata address, private and
//! special hosts, allowlists of hosts and networks, host patterns, resolved addresses.

use std::net::Ipv4Addr;

use super::*;

fn policy(hosts: &[&str], networks: &[&str], allow_private: bool) -> DestinationPolicy {
    DestinationPolicy::new(
        hosts
            .iter()
            .map(|host| HostPattern::parse(host).unwrap_or_else(|err| panic!("{err}")))
            .collect(),
        networks
            .iter()
            .map(|net| net.parse().unwrap_or_else(|err| panic!("{net}: {err}")))
            .collect(),
        allow_private,
    )
}

/// `url` against `policy`: `Ok` or the refusal's text.
fn check(policy: &DestinationPolicy, url: &str, expected: Result<(), &str>) {
    let parsed = Url::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
    let got = policy
        .check_url(&parsed)
        .map_err(|refusal| refusal.to_string());
    assert_eq!(got, expected.map_err(str::to_owned), "{url}");
}

#[test]
fn metadata_address_in_every_encoding_is_refused() {
    let default = DestinationPolicy::default();
    let refused = Err("169.254.169.254 is a link-local address, which this tool may not reach");
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xA9FEA9FE/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://0251.254.169.254/",
        "http://169.254.43518/",
        "http://169.16689662/",
        "http://0xA9.0xFE.0xA9.0xFE/",
        "http://169.254.169.254./",
        "http://%31%36%39.254.169.254/",
        "https://169.254.169.254:8443/",
    ] {
        check(&default, url, refused);
    }
    // Even with private ranges opened: link-local stays closed.
    check(&policy(&[], &[], true), "http://0xA9FEA9FE/", refused);
    for url in [
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
    ] {
        let parsed = Url::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
        match default.check_url(&parsed) {
            Err(Refusal::Address { class, .. }) => {
                assert_eq!(class, AddressClass::LinkLocal, "{url}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn loopback_private_and_special_hosts_are_refused_by_default() {
    let default = DestinationPolicy::default();
    for (url, refusal) in [
        (
            "http://127.0.0.1:8080/",
            "127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://2130706433/",
            "127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://0x7f.1/",
            "127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://017700000001/",
            "127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://127.1/",
            "127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://[::1]/",
            "::1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://[::ffff:127.0.0.1]/",
            "::ffff:127.0.0.1 is a loopback address, which this tool may not reach",
        ),
        (
            "http://10.1.2.3/",
            "10.1.2.3 is a private address, which this tool may not reach",
        ),
        (
            "http://172.16.0.1/",
            "172.16.0.1 is a private address, which this tool may not reach",
        ),
        (
            "http://192.168.0.1/",
            "192.168.0.1 is a private address, which this tool may not reach",
        ),
        (
            "http://100.64.0.1/",
            "100.64.0.1 is a shared (carrier-grade NAT) address, which this tool may not reach",
        ),
        (
            "http://[fd00::1]/",
            "fd00::1 is a unique-local address, which this tool may not reach",
        ),
        (
            "http://[fe80::1]/",
            "fe80::1 is a link-local address, which this tool may not reach",
        ),
        (
            "http://0.0.0.0/",
            "0.0.0.0 is an unspecified address, which this tool may not reach",
        ),
        (
            "http://0/",
            "0.0.0.0 is an unspecified address, which this tool may not reach",
        ),
        (
            "http://[::]/",
            ":: is an unspecified address, which this tool may not reach",
        ),
        (
            "http://255.255.255.255/",
            "255.255.255.255 is a broadcast address, which this tool may not reach",
        ),
        (
            "http://224.0.0.1/",
            "224.0.0.1 is a multicast address, which this tool may not reach",
        ),
        (
            "file:///etc/passwd",
            "scheme \"file\" is not allowed: only http and https",
        ),
        (
            "ftp://example.com/",
            "scheme \"ftp\" is not allowed: only http and https",
        ),
        (
            "gopher://example.com/",
            "scheme \"gopher\" is not allowed: only http and https",
        ),
        (
            "http://user:pw@example.com/",
            "URLs with credentials (user:password@) are not allowed",
        ),
    ] {
        check(&default, url, Err(refusal));
    }
    check(&default, "http://8.8.8.8/", Ok(()));
    check(&default, "https://example.com/a?b=c", Ok(()));
    check(&default, "http://[2606:4700:4700::1111]/", Ok(()));
}

#[test]
fn allow_private_and_networks_open_only_what_they_name() {
    let private = policy(&[], &[], true);
    for url in [
        "http://127.0.0.1:1/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
    ] {
        check(&private, url, Ok(()));
    }
    for url in [
        "http://169.254.169.254/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ] {
        assert!(
            private
                .check_url(&Url::parse(url).unwrap_or_else(|e| panic!("{e}")))
                .is_err(),
            "{url}"
        );
    }

    let loopback = policy(&[], &["127.0.0.0/8"], false);
    check(&loopback, "http://127.0.0.1:8080/", Ok(()));
    check(&loopback, "http://127.9.9.9/", Ok(()));
    check(&loopback, "http://[::ffff:127.0.0.1]/", Ok(()));
    check(
        &loopback,
        "http://10.0.0.1/",
        Err("10.0.0.1 is a private address, which this tool may not reach"),
    );
    check(
        &loopback,
        "http://[::1]/",
        Err("::1 is a loopback address, which this tool may not reach"),
    );

    // An explicitly named network may even be link-local; "everything" never opens 0.0.0.0.
    check(
        &policy(&[], &["169.254.0.0/16"], false),
        "http://169.254.1.1/",
        Ok(()),
    );
    let everything = policy(&[], &["0.0.0.0/0", "::/0"], false);
    check(&everything, "http://10.0.0.1/", Ok(()));
    check(
        &everything,
        "http://0.0.0.0/",
        Err("0.0.0.0 is an unspecified address, which this tool may not reach"),
    );
}

#[test]
fn host_allowlist() {
    let allow = policy(
        &["example.com", "*.example.org", "10.1.2.3", "Bücher.example"],
        &[],
        false,
    );
    for url in [
        "https://example.com/",
        "https://EXAMPLE.com./x",
        "https://a.example.org/",
        "https://a.b.example.org/",
        "http://10.1.2.3/",
        "http://167838211/",
        "http://0x0a010203/",
        "https://bücher.example/",
        "https://xn--bcher-kva.example/",
    ] {
        check(&allow, url, Ok(()));
    }
    for (url, host) in [
        ("https://www.example.com/", "www.example.com"),
        ("https://example.org/", "example.org"),
        ("https://badexample.org/", "badexample.org"),
        ("https://example.org.evil.com/", "example.org.evil.com"),
        ("https://example.com.evil.com/", "example.com.evil.com"),
        ("http://10.1.2.4/", "10.1.2.4"),
        ("https://8.8.8.8/", "8.8.8.8"),
    ] {
        check(
            &allow,
            url,
            Err(&format!("host {host} is not allowed for this tool")),
        );
    }
}

#[test]
fn host_patterns_parse_or_explain() {
    for (entry, expected) in [
        ("example.com", Ok(HostPattern::Domain("example.com".into()))),
        (
            "Example.COM.",
            Ok(HostPattern::Domain("example.com".into())),
        ),
        (
            "*.example.org",
            Ok(HostPattern::Subdomains("example.org".into())),
        ),
        (
            "10.1.2.3",
            Ok(HostPattern::Ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))),
        ),
        (
            "[::1]",
            Ok(HostPattern::Ip(
                "::1".parse().unwrap_or_else(|e| panic!("{e}")),
            )),
        ),
        (
            "::1",
            Ok(HostPattern::Ip(
                "::1".parse().unwrap_or_else(|e| panic!("{e}")),
            )),
        ),
    ] {
        assert_eq!(HostPattern::parse(entry), expected, "{entry}");
    }
    for (entry, why) in [
        ("", "empty host"),
        ("*", "\"*\" is only allowed as a leading \"*.\""),
        ("a*.example.org", "\"*\" is only allowed"),
        ("*.*.example.org", "\"*\" is only allowed"),
        ("https://example.com", "give a host name, not a URL"),
        ("example.com/path", "give a host name, not a URL"),
        ("example.com:8080", "invalid host \"example.com:8080\""),
        ("*.10.1.2.3", "\"*.\" needs a domain after it"),
    ] {
        match HostPattern::parse(entry) {
            Err(err) => assert!(err.contains(why), "{entry}: {err}"),
            Ok(pattern) => panic!("{entry} parsed as {pattern:?}"),
        }
    }
}

#[test]
fn resolved_addresses_must_all_pass() {
    let default = DestinationPolicy::default();
    let addr = |s: &str| -> SocketAddr { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    assert_eq!(
        default.check_resolved("example.com", &[addr("93.184.216.34:0")]),
        Ok(())
    );
    // A rebinding-style answer mixing a public and an internal address is refused whole.
    assert_eq!(
        default
            .check_resolved(
                "rebind.example",
                &[addr("93.184.216.34:0"), addr("169.254.169.254:0")]
            )
            .map_err(|r| r.to_string()),
        Err("rebind.example resolves to 169.254.169.254, a link-local address, which this tool may not reach".to_owned())
    );
    assert_eq!(
        default
            .check_resolved("localhost", &[addr("127.0.0.1:0"), addr("[::1]:0")])
            .map_err(|r| r.to_string()),
        Err(
            "localhost resolves to 127.0.0.1, a loopback address, which this tool may not reach"
                .to_owned()
        )
    );
    assert_eq!(
        default.check_resolved("nowhere.example", &[]),
        Err(Refusal::NoAddress("nowhere.example".into()))
    );
    let loopback_v4 = policy(&[], &["127.0.0.0/8"], false);
    assert!(loopback_v4
        .check_resolved("localhost", &[addr("127.0.0.1:0")])
        .is_ok());
    assert!(loopback_v4
        .check_resolved("localhost", &[addr("127.0.0.1:0"), addr("[::1]:0")])
        .is_err());
}

#[test]
fn numeric_looking_domains() {
    for (domain, numeric) in [
        ("1", true),
        ("a.123", true),
        ("a.0x1f", true),
        ("example.com", false),
        ("cafe", false),
        ("a.b1", false),
        ("deadbeef.com", false),
    ] {
        assert_eq!(looks_numeric(domain), numeric, "{domain}");
    }
}
