//! Unit tests of the HTTP transport: statuses mapped to errors, hostile Retry-After values, SSE
//! events and bodies counted against the byte bound, redaction of URLs and keys.

use super::*;

fn failure(status: u16, body: &str) -> ModelError {
    from_status(
        "m".to_owned(),
        HttpFailure {
            status,
            retry_after: Some(Duration::from_secs(2)),
            body: body.to_owned(),
        },
    )
}

#[test]
fn statuses_map_to_errors() {
    assert!(matches!(
        failure(429, "{}"),
        ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)
    ));
    assert!(matches!(
        failure(429, r#"{"error":{"code":"insufficient_quota","message":"pay"}}"#),
        ModelError::QuotaExceeded { message, .. } if message == "pay"
    ));
    assert!(matches!(
        failure(502, "<html><h1>Bad gateway</h1></html>"),
        ModelError::Provider { status: 502, body, .. } if body.contains("Bad gateway")
    ));
    assert!(matches!(
        failure(401, "nope"),
        ModelError::InvalidRequest { .. }
    ));
}

/// `Retry-After` (and `retry-after-ms`) values a server may send, and the wait each
/// means with `max_retry_time` = 60 s, at the time `NOW`.
#[test]
fn hostile_retry_after_values_are_parsed_and_clamped() {
    const NOW: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let max = Duration::from_secs(60);
    let secs = |s: u64| Some(Duration::from_secs(s));
    let check = |retry_after: Option<&str>, ms: Option<&str>, expected: Option<Duration>| {
        let mut headers = HeaderMap::new();
        for (name, value) in [("retry-after", retry_after), ("retry-after-ms", ms)] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("?"));
                headers.insert(name, value);
            }
        }
        assert_eq!(
            super::retry_after(&headers, max, now),
            expected,
            "Retry-After {retry_after:?}, retry-after-ms {ms:?}"
        );
    };
    for (value, expected) in [
        ("3", secs(3)),
        (" 2.5 ", Some(Duration::from_millis(2500))),
        ("0", secs(0)),
        ("60", secs(60)),
        // Huge, infinite, past what a Duration holds: the most we wait.
        ("61", secs(60)),
        ("86400000", secs(60)),
        ("1e30", secs(60)),
        ("1000000000000000000000000000000", secs(60)),
        ("18446744073709551616", secs(60)),
        ("inf", secs(60)),
        ("+Infinity", secs(60)),
        // Negative, NaN, garbage: ignored.
        ("-1", None),
        ("-0.5", None),
        ("-1e30", None),
        ("-inf", None),
        ("NaN", None),
        ("nan", None),
        ("", None),
        ("soon", None),
        ("0x10", None),
        ("3 seconds", None),
        ("\u{1}", None),
        // HTTP dates: the delay from now, clamped; the past is zero.
        ("Tue, 14 Nov 2023 22:13:50 GMT", secs(30)),
        ("Tuesday, 14-Nov-23 22:13:50 GMT", secs(30)),
        ("Tue Nov 14 22:13:50 2023", secs(30)),
        ("Tue, 14 Nov 2023 23:13:20 GMT", secs(60)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", secs(60)),
        ("Wed, 21 Oct 2015 07:28:00 GMT", secs(0)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
        ("Tue, 32 Nov 2023 22:13:50 GMT", None),
    ] {
        check(Some(value), None, expected);
    }
    let long = "9".repeat(8192);
    check(Some(&long), None, secs(60));
    check(Some(&format!("-{long}")), None, None);
    // retry-after-ms first, in milliseconds; an unusable one falls back to Retry-After.
    check(Some("3"), Some("150"), Some(Duration::from_millis(150)));
    check(None, Some("1e30"), secs(60));
    check(None, Some("1e300"), secs(60));
    check(Some("3"), Some("NaN"), secs(3));
    check(Some("3"), Some("-5"), secs(3));
    check(None, Some("junk"), None);
    check(None, None, None);
}

#[test]
fn sse_events_and_bodies_are_counted_against_the_bound() {
    let body = |chunks: &[&[u8]], max: usize| {
        let mut scan = Scan::Body { seen: 0 };
        chunks.iter().all(|chunk| scan.feed(chunk, max))
    };
    assert!(body(&[b"0123", b"4567"], 8));
    assert!(!body(&[b"0123", b"45678"], 8));
    let events = |chunks: &[&[u8]], max: usize| {
        let mut scan = Scan::Events {
            event: 0,
            line: 0,
            after_cr: false,
        };
        chunks.iter().all(|chunk| scan.feed(chunk, max))
    };
    // Many events of at most 10 bytes each, whatever the line endings.
    let many = "data: 1234\n\n".repeat(1000);
    assert!(events(&[many.as_bytes()], 10));
    let crlf = "data: 1234\r\n\r\n".repeat(1000);
    assert!(events(&[crlf.as_bytes()], 10));
    let cr = "data: 1234\r\r".repeat(1000);
    assert!(events(&[cr.as_bytes()], 10));
    // An endless line, or an event of many lines, is cut at the bound, split or not.
    assert!(!events(&[b"data: 12345"], 10));
    assert!(!events(&[b"data: 12", b"345"], 10));
    assert!(!events(&[b"data: 1\ndata: 2\n"], 10));
    assert!(!events(&[b"data: 1\r\n", b"data: 2\r\n"], 10));
    // A CRLF split across chunks is one line end, not an empty line.
    assert!(!events(&[b"data: 1\r", b"\ndata: 2\n"], 10));
    assert!(events(&[b"data: 1\r", b"\n\r", b"\ndata: 2\n\n"], 10));
}

#[test]
fn redaction_removes_urls_hosts_paths_and_keys() {
    let redact = Redact::new(
        "http://user:pw@10.1.2.3:9/secret-path/v1/",
        Some("sk-test-SECRET"),
    );
    let text =
        "error sending request for url (http://10.1.2.3:9/secret-path/v1/chat/completions): \
                tcp connect error 10.1.2.3:9 on /secret-path/v1, got Bearer sk-test-SECRET \
                from HTTPS://proxy.internal/x?token=abc; user pw";
    let clean = redact.apply(text);
    for leak in [
        "10.1.2.3",
        "secret-path",
        "sk-test-SECRET",
        "proxy.internal",
        "token=abc",
        "http",
        "pw",
    ] {
        assert!(!clean.contains(leak), "{leak} in {clean}");
    }
    assert!(
        clean.contains("error sending request for url ([url])"),
        "{clean}"
    );
    assert!(clean.contains("Bearer [redacted]"), "{clean}");
    assert_eq!(Redact::default().apply("plain text"), "plain text");
    assert_eq!(without_urls("a http://x b https://y"), "a [url] b [url]");
}

/// The errors reqwest gives for a failed connection to `http://10.1.2.3:9/secret-path/v1`
/// (through a proxy on a closed loopback port, so nothing leaves the machine), mapped as
/// a model call maps them: no URL, host, path or key in the text.
#[tokio::test]
async fn a_failed_connection_error_names_no_url_and_no_key() {
    let proxy = match reqwest::Proxy::all("http://127.0.0.1:9") {
        Ok(proxy) => proxy,
        Err(err) => panic!("{err}"),
    };
    let client = match reqwest::Client::builder().proxy(proxy).build() {
        Ok(client) => client,
        Err(err) => panic!("{err}"),
    };
    let base = "http://10.1.2.3:9/secret-path/v1";
    let redact = Redact::new(base, Some("sk-test-SECRET"));
    let sent = client
        .post(format!("{base}/chat/completions"))
        .bearer_auth("sk-test-SECRET")
        .send()
        .await;
    let Err(err) = sent else {
        panic!("a request through a closed proxy succeeded");
    };
    assert!(
        err.to_string().contains("secret-path"),
        "reqwest names the URL: {err}"
    );
    let error = classify("m", Duration::from_secs(1), OpenAIError::Reqwest(err));
    // Without the URL already; redaction takes the rest.
    assert!(!error.to_string().contains("secret-path"), "{error}");
    let text = error.map_text(|text| redact.apply(text)).to_string();
    assert!(text.starts_with("model m: connection failed: "), "{text}");
    for leak in [
        "10.1.2.3",
        "secret-path",
        "sk-test-SECRET",
        "http",
        "127.0.0.1",
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[test]
fn error_texts_carry_no_url_or_key() {
    let redact = Redact::new("http://10.1.2.3:9/secret-path/v1", Some("sk-test-SECRET"));
    let echo = "invalid key sk-test-SECRET for http://10.1.2.3:9/secret-path/v1/chat/completions";
    let body = format!(r#"{{"error":{{"message":"{echo}","code":"insufficient_quota"}}}}"#);
    for status in [429, 401, 500] {
        let error = from_status(
            "m".to_owned(),
            HttpFailure {
                status,
                retry_after: None,
                body: if status == 500 {
                    echo.to_owned()
                } else {
                    body.clone()
                },
            },
        )
        .map_text(|text| redact.apply(text));
        let text = error.to_string();
        for leak in ["10.1.2.3", "secret-path", "sk-test-SECRET", "http"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }
}

#[test]
fn keys_are_sensitive_and_not_in_debug() {
    let endpoint = match Endpoint::new("http://h/v1/", Some("sk-secret".into())) {
        Ok(endpoint) => endpoint,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(
        endpoint.url("/chat/completions"),
        "http://h/v1/chat/completions"
    );
    assert!(endpoint.headers()[AUTHORIZATION].is_sensitive());
    assert!(!format!("{endpoint:?}").contains("sk-secret"));
    let err = Endpoint::new("http://h", Some("bad\nkey".into()))
        .err()
        .unwrap_or_default();
    assert!(!err.contains("bad"));
    assert!(Endpoint::new("http://h", None).map(|e| e.headers().is_empty()) == Ok(true));
}
