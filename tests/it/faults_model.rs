//! Fault cases of hostile model servers and tool floods (issue 13, section 4), held to the
//! fault suite's oracle ([`Scenario::check`] in `support/oracle.rs`): real `troupe serve`
//! daemons on a private Redis, tasks published with plain Redis commands, the mock model
//! server misbehaving. Each case ends with the oracle: every accepted task ends exactly once
//! (a whole answer or a typed error), nothing is lost or pending, model calls are explained,
//! and the daemon is alive and ready.
//!
//! - absurd `Retry-After` values (huge, infinite, negative, NaN, garbage, dates): tasks end
//!   with answers or `rate_limited` errors within bounded time, nothing panics, and no limiter
//!   is held past `max_retry_time`;
//! - 100 MiB answers: typed, non-retried errors at `max_response_bytes`, the daemon's memory
//!   does not grow by one body;
//! - 5,000 tool calls in one response: the turns complete with `max_tool_calls` run and every
//!   other call answered refused.

use std::time::{Duration, Instant};

use crate::support::llm::{self, Fault};
use crate::support::oracle::{Calls, Scenario, Setup};

/// The agent `echo` behind a generous limit that waits for capacity, so that a penalty (a
/// 429's Retry-After) delays its calls, and one longer than `max_wait` refuses them.
const LIMIT: &str = r#"
[limits.llm]
kind = "token_bucket"
rate = 10
period = "1s"
key = "group"
max_wait = "8s"
max_reserved = 100
"#;

#[test]
fn absurd_retry_after_values_end_in_answers_or_typed_errors_and_hold_nothing_for_long() {
    // Each 429 carries the next value, in turn; `max_retry_time` is 5 s.
    let mock = llm::mock_config(
        r#"retry_after_values = ["1e30", "-1", "Fri, 31 Dec 9999 23:59:59 GMT", "NaN", "100000000", "soon", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", "18446744073709551616", "-1e30", "", "0x10"]"#,
    );
    let mut s = Scenario::start(Setup {
        mock,
        agent_extra: "limits = [\"llm\"]".to_owned(),
        config_extra: LIMIT.to_owned(),
        ..Setup::default()
    });
    s.mock.push_faults(vec![Fault::RateLimited; 24]);
    let started = Instant::now();
    assert_eq!(s.publish(12, 0, false), 12);
    let first = s.check(Calls::AtMostOnce);
    let storm = started.elapsed();
    // Only answers and rate_limited errors: nothing panicked on a value.
    assert_eq!(first.statuses.values().sum::<usize>(), 12, "{first:?}");
    assert!(
        first.error_kinds.keys().all(|kind| kind == "rate_limited"),
        "{first:?}"
    );
    assert!(first.faults >= 12, "every task met a 429: {first:?}");
    // Bounded: each task gives up within max_retry_time (and a limiter wait) of its start.
    assert!(storm < Duration::from_secs(30), "{storm:?}");

    // The groups the huge values penalized are held at most max_retry_time (5 s < max_wait),
    // not for years: a second batch is answered.
    s.mock.set_fault(None);
    assert_eq!(s.publish(12, 0, false), 12);
    let both = s.check(Calls::AtMostOnce);
    let ok = |r: &crate::support::oracle::Report| r.statuses.get("ok").copied().unwrap_or(0);
    assert_eq!(ok(&both) - ok(&first), 12, "{both:?}");
    let logs = s.all_logs();
    assert!(!logs.contains("panicked"), "a panic in the logs:\n{logs}");
    eprintln!("retry-after storm: 12 tasks ended in {storm:?}; second batch answered");
}

#[test]
fn a_provider_answering_100_mib_bodies_gets_typed_errors_and_memory_stays_flat() {
    let mut s = Scenario::start(Setup {
        model_extra: "max_response_bytes = 1048576".to_owned(),
        // Reading a megabyte of each of 16 answers at once from the (debug-built, one-thread)
        // mock may take longer than the suite's 300 ms; a timeout would be retried.
        idle_timeout: "10s",
        ..Setup::default()
    });
    let (baseline, _) = s.memory_kib(0).expect("the daemon's memory");
    // Every answer is 100 MiB: a body, or one SSE event.
    s.mock.set_fault(Some(Fault::HugeBody));
    let started = Instant::now();
    assert_eq!(s.publish(8, 0, false) + s.publish(8, 0, true), 16);
    let huge = s.check(Calls::AtMostOnce);
    let elapsed = started.elapsed();
    let (_, peak) = s.memory_kib(0).expect("the daemon's memory");
    assert_eq!(huge.error_kinds.get("model"), Some(&16), "{huge:?}");
    assert!(
        huge.error_samples
            .iter()
            .all(|e| e.contains("the response is larger than 1048576 bytes")),
        "{huge:?}"
    );
    // Not retried: one request per task.
    assert_eq!(huge.model_requests, 16, "{huge:?}");
    // 16 bodies of 100 MiB were sent; the daemon never held even one.
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < 100 * 1024,
        "peak RSS {peak} KiB, {grown} KiB above the baseline {baseline} KiB"
    );

    // It keeps serving.
    s.mock.set_fault(None);
    assert_eq!(s.publish(8, 0, true), 8);
    let after = s.check(Calls::AtMostOnce);
    assert_eq!(after.statuses.get("ok"), Some(&8), "{after:?}");
    eprintln!(
        "huge bodies: 16 tasks failed typed in {elapsed:?}; RSS {baseline} KiB, peak {peak} KiB"
    );
}

#[test]
fn a_model_asking_for_5000_tool_calls_gets_max_tool_calls_run_and_the_rest_refused() {
    // The follow-up answer is the oracle's expected one ("You said: {input}").
    let mock = llm::mock_config(
        r#"
[[rules]]
contains = "fault task"
tool_calls = [{ name = "clock", repeat = 5000 }]
follow_up = "You said: {input}"
"#,
    );
    let mut s = Scenario::start(Setup {
        mock,
        agent_extra: "tools = [\"clock\"]\nmax_tool_calls = 16".to_owned(),
        config_extra: "[tools.clock]\nkind = \"current_time\"\n".to_owned(),
        calls_per_task: 2,
        // The mock (debug-built, one thread) takes a while to write 5,000 calls.
        idle_timeout: "10s",
        ..Setup::default()
    });
    let started = Instant::now();
    assert_eq!(s.publish(3, 0, false) + s.publish(3, 0, true), 6);
    let report = s.check(Calls::AtMostOnce);
    let elapsed = started.elapsed();
    assert_eq!(report.statuses.get("ok"), Some(&6), "{report:?}");
    assert_eq!(report.model_requests, 12, "{report:?}");

    // Each follow-up carried 5,000 tool messages: 16 results, 4,984 refusals.
    let refusal = "refused: more than max_tool_calls = 16 tool calls in one response";
    let follow_ups: Vec<(usize, usize)> = s
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.body["messages"].as_array().cloned())
        .filter(|messages| messages.iter().any(|m| m["role"] == "tool"))
        .map(|messages| {
            let tools: Vec<_> = messages.iter().filter(|m| m["role"] == "tool").collect();
            let refused = tools.iter().filter(|m| m["content"] == refusal).count();
            (tools.len() - refused, refused)
        })
        .collect();
    assert_eq!(follow_ups, vec![(16, 4984); 6]);
    eprintln!("tool flood: 6 turns of 5,000 calls completed in {elapsed:?}");
}
