//! Unit tests of the ingress wire format: names checked at parse time, reply streams, whole-entry
//! checks, quoted prefixes of bad values, bounded dead letters.

use super::*;

const RESULTS: &str = "results";

fn entry(fields: &[(&[u8], &[u8])]) -> StreamEntry {
    StreamEntry {
        id: "1-0".to_owned(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    }
}

/// Parses `task` (a JSON text) as the only field of an entry and returns the rejection's
/// kind, or `"ok"`.
fn check(task: &str, expected: &str) {
    let agents = BTreeSet::from(["echo".to_owned()]);
    let workflows = BTreeSet::from(["triage".to_owned()]);
    let limits = Limits {
        agents: &agents,
        workflows: &workflows,
        max_input_bytes: 64,
        max_entry_bytes: 1024,
        results: RESULTS,
        prefix: "tp:",
    };
    let got = match parse_entry(&entry(&[(b"task", task.as_bytes())]), &limits) {
        Ok(_) => "ok",
        Err(rejection) => {
            let message = rejection.to_string();
            assert!(message.len() < 400, "{task}: long message {message}");
            rejection.kind().as_str()
        }
    };
    assert_eq!(got, expected, "{task}");
}

#[test]
fn names_that_become_keys_are_checked_at_parse_time() {
    let base = r#""agent":"echo","input":"hi","user":"alice""#;
    check(&format!(r#"{{{base},"group":"acme"}}"#), "ok");
    check(
        &format!(r#"{{{base},"group":"acme","id":"a.b@c+d=e_f-1"}}"#),
        "ok",
    );
    // A ':' would let (group "a:b", id "c") and (group "a", id "b:c") share keys.
    check(&format!(r#"{{{base},"group":"a:b"}}"#), "invalid_field");
    check(
        &format!(r#"{{{base},"group":"acme","id":"b:c"}}"#),
        "invalid_field",
    );
    check(&format!(r#"{{{base},"group":"ac*"}}"#), "invalid_field");
    check(&format!(r#"{{{base},"group":"a{{b}}"}}"#), "invalid_field");
    check(
        &format!(r#"{{{base},"group":"acme","thread":"t 1"}}"#),
        "invalid_field",
    );
    check(
        &format!(r#"{{{base},"group":"{}"}}"#, "g".repeat(65)),
        "invalid_field",
    );
    check(
        &format!(r#"{{{base},"group":"acme","id":"{}"}}"#, "i".repeat(129)),
        "invalid_field",
    );
    check(
        r#"{"agent":"echo","input":"hi","group":"acme","user":"al\u0000ice"}"#,
        "invalid_field",
    );
    check(&format!(r#"{{{base},"group":"system"}}"#), "reserved_group");
}

#[test]
fn reply_to_is_a_results_stream_of_the_tasks_own_group() {
    let base = r#""agent":"echo","input":"hi","user":"alice","group":"acme""#;
    for (reply_to, expected) in [
        ("results:acme", "ok"),
        ("results:acme:client-7", "ok"),
        ("tp:results:acme:client-7", "ok"),
        ("results", "reply_to"),
        ("results:beta", "reply_to"),
        ("results:beta:x", "reply_to"),
        ("results:acme2", "reply_to"),
        ("results:acme:", "reply_to"),
        ("results:acme:a:b", "reply_to"),
        ("events:acme", "reply_to"),
        ("tp:events:acme", "reply_to"),
    ] {
        check(&format!(r#"{{{base},"reply_to":"{reply_to}"}}"#), expected);
    }
}

#[test]
fn entries_are_checked_as_a_whole_before_their_task() {
    let agents = BTreeSet::from(["echo".to_owned()]);
    let workflows = BTreeSet::new();
    let limits = Limits {
        agents: &agents,
        workflows: &workflows,
        max_input_bytes: 64,
        max_entry_bytes: 256,
        results: RESULTS,
        prefix: "",
    };
    let task = br#"{"agent":"echo","input":"hi","user":"u","group":"g"}"#;
    let big = vec![b'x'; 300];
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}").into_bytes(), Vec::new()))
        .collect();
    let many: Vec<(&[u8], &[u8])> = many
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let cases: Vec<(StreamEntry, &str)> = vec![
        (entry(&[(b"task", task)]), "ok"),
        (entry(&[(b"task", task), (b"trace", b"x")]), "ok"),
        (
            entry(&[(b"\xff\xfe", b"x"), (b"task", task)]),
            "malformed_entry",
        ),
        (entry(&[(b"", b"x"), (b"task", task)]), "malformed_entry"),
        (
            entry(&[(b"task", task), (b"task", task)]),
            "malformed_entry",
        ),
        (
            entry(&[(&[b'n'; 65], b"x"), (b"task", task)]),
            "malformed_entry",
        ),
        (entry(&many), "malformed_entry"),
        (entry(&[(b"task", task), (b"pad", &big)]), "entry_too_large"),
        (entry(&[(b"other", b"x")]), "no_task_field"),
    ];
    for (entry, expected) in cases {
        let got = parse_entry(&entry, &limits).map_or_else(|r| r.kind().as_str(), |_| "ok");
        assert_eq!(got, expected, "{entry:?}");
    }
}

#[test]
fn messages_quote_only_a_prefix_of_bad_values() {
    let long = "z".repeat(10_000);
    let message = check_name("user", &long).expect_err("too long").to_string();
    assert!(message.len() < 200, "{message}");
    assert!(message.contains("10000 bytes"), "{message}");
    assert_eq!(quote("short"), "\"short\"");
}

#[test]
fn dead_letters_of_oversized_entries_are_bounded() {
    let big = vec![b'x'; 1 << 20];
    let e = entry(&[(b"task", &big)]);
    let letter = DeadLetter::new(&e, 1024, ErrorKind::EntryTooLarge, "big".into(), 1);
    assert!(letter.truncated);
    assert_eq!(letter.fields[0].1.len(), DEAD_VALUE_BYTES);
    let small = entry(&[(b"task", b"{}")]);
    let letter = DeadLetter::new(&small, 1024, ErrorKind::NotJson, "x".into(), 1);
    assert!(!letter.truncated);
    assert_eq!(letter.fields, vec![("task".to_owned(), "{}".to_owned())]);
}
