//! The fault-injection suite (issue 8): real `troupe serve` daemons on a private Redis, the
//! mock model server, tasks published with plain Redis commands, one fault per case, and one
//! oracle for all of them ([`Scenario::check`] in `support/oracle.rs`): every accepted entry
//! ends exactly once (a whole `ok` answer, a typed `error`, or a dead letter with a reason),
//! nothing is lost or pending, model calls are counted per input, and the daemons are up and
//! ready afterwards.
//!
//! Model-call promise per case ([`Calls`]):
//! - `AtMostOnce` (no daemon dies, Redis loses nothing acknowledged): every repeated request
//!   is a retry of a fault the mock served — model faults, malformed entries, Redis down at
//!   start, the secrets run.
//! - `Bounded(max_in_flight)`: a daemon killed or drained, or Redis gone or stalled while
//!   results were being written, may make the model answer the tasks that were in flight
//!   again (README: "the promise is one result per task id, not one model call").
//!
//! Not here: a crash-looping actor cannot be provoked in a daemon from outside (nothing
//! configured panics); `tests/it/actors.rs` holds it in-process
//! (`crash_loop_stops_at_restart_limit_and_escalates`,
//! `escalation_restarts_the_subtree_then_reaches_the_root`). No configured tool kind can
//! panic either, so the panicking tool is driven through the `ToolRegistry` the agents use.

use std::sync::Arc;
use std::time::Duration;

use troupe_ingress::sign;
use troupe_tools::{Tool, ToolContext, ToolError, ToolOutput, ToolRegistry};

use crate::support::llm::{self, Fault};
use crate::support::oracle::{Calls, Scenario, Setup};

const IN_FLIGHT: usize = 32;

fn mock_with(latency_ms: u64) -> llm::MockConfig {
    llm::mock_config(&format!(
        "latency = \"{latency_ms}ms\"\nretry_after = \"20ms\"\n"
    ))
}

#[test]
fn sigkill_one_of_two_daemons_under_load() {
    let mut s = Scenario::start(Setup {
        daemons: 2,
        max_in_flight: IN_FLIGHT,
        mock: mock_with(10),
        ..Setup::default()
    });
    let accepted = s.publish(600, 0, false);
    assert_eq!(accepted, 600);
    s.wait_results(200);
    s.kill(0);
    let report = s.check(Calls::Bounded(IN_FLIGHT));
    assert_eq!(report.statuses.get("ok"), Some(&600), "{report:?}");
    assert!(
        s.all_logs()
            .contains("ingress reclaimed stale pending entries"),
        "the survivor reclaimed the killed daemon's entries"
    );
}

#[test]
fn sigterm_drains_and_a_restart_finishes_what_was_left_pending() {
    let mut s = Scenario::start(Setup {
        max_in_flight: 16,
        shutdown_grace: "5s",
        mock: mock_with(200),
        ..Setup::default()
    });
    s.publish(120, 0, false);
    s.wait_results(20);
    let (status, log) = s.terminate(0);
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{log}");
    assert!(log.contains("draining in-flight work"), "{log}");
    // The drain stops fetching: what it leaves pending is at most what it had in flight.
    let pending = s.pending_count();
    eprintln!("left pending by the drain: {pending}");
    assert!(pending <= 16, "{pending} pending after the drain");
    // Restarted under the same name, it reads its own pending entries first.
    s.spawn(0);
    let report = s.check(Calls::Bounded(16));
    assert_eq!(report.statuses.get("ok"), Some(&120), "{report:?}");
}

#[test]
fn redis_restarted_with_aof_under_load() {
    let mut s = Scenario::start(Setup {
        persistent: true,
        max_in_flight: IN_FLIGHT,
        mock: mock_with(10),
        ..Setup::default()
    });
    assert_eq!(s.publish(400, 20, false), 420);
    s.wait_results(100);
    s.start_redis();
    let report = s.check(Calls::Bounded(IN_FLIGHT));
    assert_eq!(report.statuses.get("ok"), Some(&400), "{report:?}");
    assert_eq!(report.dead_kinds.values().sum::<usize>(), 20, "{report:?}");
}

#[test]
fn redis_unreachable_when_the_daemon_starts() {
    let mut s = Scenario::start(Setup {
        redis_late: true,
        mock: mock_with(0),
        ..Setup::default()
    });
    s.wait_ready(0, false);
    s.start_redis();
    s.wait_ready(0, true);
    assert_eq!(s.publish(200, 20, false), 220);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&200), "{report:?}");
}

#[test]
fn redis_down_for_ten_seconds_mid_run() {
    let mut s = Scenario::start(Setup {
        persistent: true,
        max_in_flight: IN_FLIGHT,
        mock: mock_with(10),
        ..Setup::default()
    });
    assert_eq!(s.publish(300, 0, false), 300);
    s.wait_results(50);
    s.stop_redis();
    s.wait_ready(0, false);
    // The outage itself, not a wait for the daemon.
    std::thread::sleep(Duration::from_secs(10));
    s.start_redis();
    s.wait_ready(0, true);
    assert_eq!(s.publish(100, 0, false), 100);
    let report = s.check(Calls::Bounded(IN_FLIGHT));
    assert_eq!(report.statuses.get("ok"), Some(&400), "{report:?}");
}

#[test]
fn redis_paused_longer_than_the_response_timeout() {
    let mut s = Scenario::start(Setup {
        max_in_flight: IN_FLIGHT,
        mock: mock_with(10),
        ..Setup::default()
    });
    assert_eq!(s.publish(300, 0, false), 300);
    s.wait_results(50);
    s.redis.pause(true);
    // Readiness follows the store: calls time out (500 ms) instead of hanging.
    s.wait_ready(0, false);
    std::thread::sleep(Duration::from_secs(2));
    s.redis.pause(false);
    s.wait_ready(0, true);
    let report = s.check(Calls::Bounded(IN_FLIGHT));
    assert_eq!(report.statuses.get("ok"), Some(&300), "{report:?}");
}

#[test]
fn model_429_then_success() {
    let s = Setup {
        mock: mock_with(0),
        ..Setup::default()
    };
    let mut s = Scenario::start(s);
    s.mock
        .push_faults(std::iter::repeat_n(Fault::RateLimited, 30));
    s.publish(100, 0, false);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&100), "{report:?}");
    assert_eq!(report.faults, 30, "{report:?}");
}

#[test]
fn model_500_bursts() {
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        ..Setup::default()
    });
    let burst = |fault| std::iter::repeat_n(fault, 10);
    let pass = || std::iter::repeat_n(Fault::Pass, 20);
    s.mock.push_faults(
        burst(Fault::ServerError)
            .chain(pass())
            .chain(burst(Fault::Unavailable))
            .chain(pass())
            .chain(burst(Fault::ServerError)),
    );
    s.publish(150, 0, false);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&150), "{report:?}");
    assert_eq!(report.faults, 30, "{report:?}");
}

#[test]
fn model_rate_limited_forever_dead_letters_every_task_with_a_reason() {
    let mut s = Scenario::start(Setup {
        max_deliveries: 2,
        mock: mock_with(0),
        ..Setup::default()
    });
    s.mock.set_fault(Some(Fault::RateLimited));
    s.publish(10, 0, false);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(
        report.dead_kinds.get("max_deliveries"),
        Some(&10),
        "{report:?}"
    );
    assert_eq!(report.statuses.get("ok"), None, "{report:?}");
}

#[test]
fn model_hangs_until_the_idle_timeout() {
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        ..Setup::default()
    });
    s.mock.push_faults(std::iter::repeat_n(Fault::Hang, 10));
    s.publish(60, 0, false);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&60), "{report:?}");
    assert_eq!(report.faults, 10, "{report:?}");
}

#[test]
fn model_stalls_mid_stream() {
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        ..Setup::default()
    });
    s.mock.push_faults(std::iter::repeat_n(Fault::Stall, 10));
    // Streamed tasks: the model answers over SSE, and the stall comes after the first chunk.
    s.publish(60, 0, true);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.faults, 10, "{report:?}");
    assert_eq!(
        report.statuses.values().sum::<usize>(),
        60,
        "every streamed task ends with a result: {report:?}"
    );
}

#[test]
fn a_thousand_malformed_entries_among_valid_tasks() {
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        ..Setup::default()
    });
    assert_eq!(s.publish(1_000, 1_000, false), 2_000);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&1_000), "{report:?}");
    assert_eq!(
        report.dead_kinds.values().sum::<usize>(),
        1_000,
        "{report:?}"
    );
    assert_eq!(report.dead_kinds.len(), 5, "five kinds: {report:?}");
}

#[test]
fn the_api_key_never_appears_in_the_logs() {
    const KEY: &str = "sk-faults-7f3a9c1e-secret-key-never-logged";
    let mut s = Scenario::start(Setup {
        model_extra: "api_key_env = \"TROUPE_FAULTS_API_KEY\"".to_owned(),
        env: vec![
            ("TROUPE_FAULTS_API_KEY".to_owned(), KEY.to_owned()),
            ("RUST_LOG".to_owned(), "trace".to_owned()),
        ],
        max_deliveries: 1,
        mock: mock_with(0),
        ..Setup::default()
    });
    // Failing calls too: errors are where secrets leak.
    s.mock.push_faults([
        Fault::ServerError,
        Fault::RateLimited,
        Fault::HtmlError,
        Fault::Malformed,
        Fault::InsufficientQuota,
        Fault::Truncate,
    ]);
    s.publish(20, 5, false);
    s.check(Calls::AtMostOnce);
    let requests = s.mock.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str()),
            "the key reaches the model server"
        );
    }
    let (status, _) = s.terminate(0);
    assert!(status.success());
    let logs = s.all_logs();
    assert!(logs.lines().count() > 100, "trace logging is on");
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(KEY)).collect();
    assert!(leaks.is_empty(), "the API key is in the log: {leaks:#?}");
}

/// A task of the agent `echo` for `group`, as JSON text, with `extra` fields merged in.
fn task_json(id: &str, input: &str, group: &str, extra: serde_json::Value) -> String {
    let mut task = serde_json::json!({
        "id": id, "agent": "echo", "input": input, "group": group, "user": "u",
    });
    if let (Some(task), serde_json::Value::Object(extra)) = (task.as_object_mut(), extra) {
        task.extend(extra);
    }
    task.to_string()
}

/// Hostile entries a producer (or anything with write access to the stream) can send: field
/// names that are not UTF-8 or empty, thousands of fields, a megabyte entry, names that
/// would share keys, the reserved group, and a reply_to into another group's stream. Each
/// must be dead-lettered with a reason, none may hold up the valid tasks read with it, and
/// the first batch is left pending with the daemon's own consumer name when it starts, as a
/// daemon that died right after its read leaves it (`own pending first` must get past it).
#[test]
fn poisoned_entries_in_a_batch_then_a_restart_under_the_same_name() {
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        ..Setup::default()
    });
    s.kill(0);
    let mega = vec![b'x'; 1 << 20];
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000)
        .map(|i| (format!("f{i}").into_bytes(), b"v".to_vec()))
        .collect();
    let mut n = 0;
    let mut round = |s: &mut Scenario| {
        for _ in 0..10 {
            let id = format!("p{n}");
            let input = format!("poisoned batch task {n}");
            let task = task_json(&id, &input, "g0", serde_json::json!({}));
            assert!(s.publish_entry(&[(b"task", task.as_bytes())], Some((&id, &input))));
            let valid = task_json(&format!("bad{n}"), "x", "g0", serde_json::json!({}));
            let bad: Vec<(&[u8], &[u8])> = match n % 8 {
                0 => vec![(b"\xff\xfe", b"x"), (b"task", valid.as_bytes())],
                1 => vec![(b"", b"x"), (b"task", valid.as_bytes())],
                2 => many
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect(),
                3 => vec![(b"task", valid.as_bytes()), (b"pad", &mega)],
                _ => vec![],
            };
            let cross = task_json(
                "cross",
                "x",
                "g0",
                serde_json::json!({"reply_to": "results:g1:inbox"}),
            );
            let system = task_json("sys", "x", "system", serde_json::json!({}));
            let colliding = task_json("a:b", "x", "g0", serde_json::json!({}));
            let bad: Vec<(&[u8], &[u8])> = match n % 8 {
                4 => vec![(b"task", cross.as_bytes())],
                5 => vec![(b"task", system.as_bytes())],
                6 => vec![(b"task", colliding.as_bytes())],
                7 => vec![(b"task", b"\xc3\x28 not utf-8 json")],
                _ => bad,
            };
            assert!(s.publish_entry(&bad, None));
            n += 1;
        }
    };
    round(&mut s);
    // The first batch is pending with consumer d0, which then starts under that name.
    assert_eq!(s.read_as("d0"), 20);
    s.spawn(0);
    round(&mut s);
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&20), "{report:?}");
    for kind in [
        "malformed_entry",
        "entry_too_large",
        "reply_to",
        "reserved_group",
        "invalid_field",
        "not_json",
    ] {
        assert!(report.dead_kinds.contains_key(kind), "{kind}: {report:?}");
    }
    let other: usize = s.redis_len("results:g1:inbox");
    assert_eq!(other, 0, "nothing reached another group's stream");
}

/// With `[ingress.auth] mode = "hmac"`, only tasks signed with their group's secret, with an
/// id and not expired, run; a signed task published again in another entry is a replay.
/// Everything else is dead-lettered as `unauthenticated` and never reaches the model.
#[test]
fn producer_auth_refuses_unsigned_forged_expired_and_replayed_tasks() {
    const SECRET: &str = "g0-producer-secret-1d9f";
    let mut s = Scenario::start(Setup {
        mock: mock_with(0),
        env: vec![("TROUPE_FAULTS_G0_SECRET".to_owned(), SECRET.to_owned())],
        config_extra: "[ingress.auth]\nmode = \"hmac\"\nmax_expiry = \"10m\"\n\n\
                       [ingress.auth.groups.g0]\nsecret_env = \"TROUPE_FAULTS_G0_SECRET\"\n"
            .to_owned(),
        ..Setup::default()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let fresh = serde_json::json!({"expires": now + 300});
    let mut signed = Vec::new();
    for i in 0..20 {
        let (id, input) = (format!("s{i}"), format!("signed task {i}"));
        let task = task_json(&id, &input, "g0", fresh.clone());
        let sig = sign(SECRET.as_bytes(), task.as_bytes());
        assert!(s.publish_entry(
            &[(b"task", task.as_bytes()), (b"sig", sig.as_bytes())],
            Some((&id, &input))
        ));
        signed.push((task, sig));
    }
    let refused = |i: usize| {
        let task = task_json(
            &format!("r{i}"),
            &format!("refused task {i}"),
            "g0",
            fresh.clone(),
        );
        let sig = sign(SECRET.as_bytes(), task.as_bytes());
        match i % 6 {
            // Unsigned.
            0 => (task, None),
            // Forged: another key.
            1 => {
                let forged = sign(b"not the secret", task.as_bytes());
                (task, Some(forged))
            }
            // The signature of other bytes.
            2 => (task.replace("refused", "changed"), Some(sig)),
            // Expired.
            3 => {
                let old = serde_json::json!({"expires": now - 5});
                let task = task_json(&format!("r{i}"), "expired", "g0", old);
                let sig = sign(SECRET.as_bytes(), task.as_bytes());
                (task, Some(sig))
            }
            // No id: the entry id would not stop a replay.
            4 => {
                let task = serde_json::json!({"agent": "echo", "input": "no id", "group": "g0",
                    "user": "u", "expires": now + 300})
                .to_string();
                let sig = sign(SECRET.as_bytes(), task.as_bytes());
                (task, Some(sig))
            }
            // A group without a secret, signed with g0's.
            _ => {
                let task = task_json(&format!("r{i}"), "other group", "g1", fresh.clone());
                let sig = sign(SECRET.as_bytes(), task.as_bytes());
                (task, Some(sig))
            }
        }
    };
    for i in 0..30 {
        let (task, sig) = refused(i);
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b"task", task.as_bytes())];
        if let Some(sig) = &sig {
            fields.push((b"sig", sig.as_bytes()));
        }
        assert!(s.publish_entry(&fields, None));
    }
    s.wait_results(20);
    // Replays: the same signed bytes in new entries, after the originals were answered.
    for (task, sig) in signed.iter().take(10) {
        assert!(s.publish_entry(
            &[(b"task", task.as_bytes()), (b"sig", sig.as_bytes())],
            None
        ));
    }
    let report = s.check(Calls::AtMostOnce);
    assert_eq!(report.statuses.get("ok"), Some(&20), "{report:?}");
    assert_eq!(
        report.dead_kinds.get("unauthenticated"),
        Some(&40),
        "{report:?}"
    );
    assert_eq!(
        report.model_requests, 20,
        "refused tasks never reach the model"
    );
    let logs = s.all_logs();
    assert!(
        !logs.contains(SECRET),
        "the producer secret is never logged"
    );
}

/// A tool that panics on every call.
struct Panics;

#[async_trait::async_trait]
impl Tool for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn description(&self) -> &str {
        "always panics"
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"type": "object"})
    }
    async fn call(&self, _: &ToolContext, _: serde_json::Value) -> Result<ToolOutput, ToolError> {
        panic!("tool exploded")
    }
}

/// A tool that answers.
struct Answers;

#[async_trait::async_trait]
impl Tool for Answers {
    fn name(&self) -> &str {
        "answers"
    }
    fn description(&self) -> &str {
        "answers"
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"type": "object"})
    }
    async fn call(&self, _: &ToolContext, _: serde_json::Value) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput {
            content: "fine".to_owned(),
            data: serde_json::Value::Null,
        })
    }
}

/// No configured tool kind panics, so this drives the registry every agent calls its tools
/// through: each panic becomes a typed error (handed to the model as the tool's message) and
/// the registry, its other tools and later calls go on.
#[tokio::test]
async fn a_panicking_tool_becomes_a_typed_error_and_the_rest_goes_on() {
    let mut registry = ToolRegistry::new();
    let timeout = Duration::from_secs(2);
    registry
        .register(Arc::new(Panics), timeout, false)
        .expect("register");
    registry
        .register(Arc::new(Answers), timeout, false)
        .expect("register");
    let allow = ["panics".to_owned(), "answers".to_owned()];
    let ctx = ToolContext {
        group: "g".to_owned(),
        user: "u".to_owned(),
        agent: "a".to_owned(),
        thread: "t".to_owned(),
        message_id: "m".to_owned(),
    };
    for _ in 0..3 {
        match registry.call(&allow, "panics", &ctx, "{}").await {
            Err(ToolError::Panicked { tool, message }) => {
                assert_eq!(tool, "panics");
                assert!(message.contains("tool exploded"), "{message}");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        let fine = registry
            .call(&allow, "answers", &ctx, "{}")
            .await
            .expect("a sibling tool answers");
        assert_eq!(fine.content, "fine");
    }
}
