//! Agents end to end: TOML-defined agents answering over real HTTP through the mock model
//! server, tool calls and the allowlist, approvals, streaming to the store, usage and budgets,
//! group isolation, and a conversation that survives a restart on Redis.

use std::sync::Arc;
use std::time::Duration;

use troupe_agents::usage::{self, day_of, tally};
use troupe_agents::{AgentError, Ask, Conversations, Role, TurnOutcome, TurnStatus};
use troupe_runtime::limit::LimitError;
use troupe_runtime::store::{MemoryStore, Store};

use crate::support::agents::Rig;
use crate::support::llm::{self, mock_config, MockHandle};
use crate::support::redis::{self, unique_prefix};

const RULES: &str = r#"
[[rules]]
contains = "steal"
tool_calls = [{ name = "fetch", arguments = { url = "http://127.0.0.1:9/" } }]

[[rules]]
contains = "broken args"
tool_calls = [{ name = "current_time", arguments = "{not json" }]
"#;

fn config_text(mock: &MockHandle) -> String {
    format!(
        r#"
[models.mock]
provider = "openai"
base_url = "{url}"
model = "mock-model"
idle_timeout = "500ms"
max_retries = 2
max_retry_time = "3s"
initial_backoff = "10ms"
max_backoff = "50ms"
input_cost_per_million = 1.0
output_cost_per_million = 2.0

[tools.current_time]
kind = "current_time"

[tools.fetch]
kind = "http_get"

[tools.guarded_time]
kind = "current_time"
requires_approval = true

[agents.helper]
model = "mock"
instructions = "You help."
tools = ["current_time"]

[agents.gated]
model = "mock"
tools = ["guarded_time"]
"#,
        url = mock.base_url()
    )
}

fn ask(agent: &str, group: &str, thread: Option<&str>, input: &str) -> Ask {
    Ask {
        group: group.into(),
        user: "alice".into(),
        agent: agent.into(),
        thread: thread.map(Into::into),
        input: input.into(),
        stream: false,
        started: None,
    }
}

async fn memory_rig(mock: &MockHandle) -> (Rig, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    (Rig::start(&config_text(mock), store.clone()).await, store)
}

async fn contents(talk: &Conversations, group: &str, out: &TurnOutcome) -> Vec<(Role, String)> {
    let page = talk
        .messages(group, &out.thread, 0, 100)
        .await
        .expect("messages");
    page.messages
        .into_iter()
        .map(|m| {
            let text = if m.message.tool_calls.is_empty() {
                m.message.content
            } else {
                m.message
                    .tool_calls
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            (m.message.role, text)
        })
        .collect()
}

/// Resolves `approval` of acme's `thread` (`approve` or deny) and checks that the resumed
/// turn completed with an answer containing `expected`.
async fn resume(
    talk: &Conversations,
    thread: &str,
    approval: &str,
    approve: bool,
    expected: &str,
) -> TurnOutcome {
    let out = talk
        .approve("acme", thread, approval, approve)
        .await
        .expect("resume");
    assert_eq!(out.status, TurnStatus::Completed);
    assert!(out.answer.contains(expected), "{}", out.answer);
    out
}

fn today() -> i64 {
    day_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

#[actix::test]
async fn an_agent_answers_calls_a_tool_and_streams_over_http() {
    let mock = llm::start(mock_config("")).await;
    let (rig, store) = memory_rig(&mock).await;
    let mut question = ask("helper", "acme", None, "What is the current_time please?");
    question.stream = true;
    let out = rig.talk.ask(question).await.expect("turn");
    assert_eq!(out.status, TurnStatus::Completed);
    assert_eq!(out.model_calls, 2);
    assert!(
        out.answer
            .starts_with("Here is what the tools returned: 20"),
        "{}",
        out.answer
    );

    let messages = contents(&rig.talk, "acme", &out).await;
    let roles: Vec<Role> = messages.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
    assert_eq!(messages[1].1, "current_time");
    assert!(
        messages[2].1.starts_with("20") && messages[2].1.ends_with('Z'),
        "{:?}",
        messages[2]
    );
    assert_eq!(messages[3].1, out.answer);

    // The deltas in the store add up to the answer, then a final entry marks completion.
    let key = out.delta_stream.clone().expect("streamed");
    let entries = store.xrange(&key, "-", "+", None).await.expect("xrange");
    let text: String = entries
        .iter()
        .filter_map(|e| e.field("delta"))
        .map(String::from_utf8_lossy)
        .collect();
    assert_eq!(text, out.answer);
    let last = entries.last().expect("entries");
    assert_eq!(last.field("done"), Some(&b"ok"[..]));
    assert!(
        store.ttl(&key).await.expect("ttl").is_some(),
        "delta streams expire"
    );
    assert_eq!(mock.stats().chat_completions, 2);
    rig.stop().await;
}

/// The reports' totals are what the mock server counted.
fn assert_adds_up(reports: &[&troupe_agents::UsageReport], stats: &troupe_mock_llm::Stats) {
    let sum =
        |f: fn(&troupe_agents::Totals) -> u64| reports.iter().map(|r| f(&r.total)).sum::<u64>();
    assert_eq!(sum(|t| t.calls), stats.chat_completions);
    assert_eq!(sum(|t| t.input_tokens), stats.prompt_tokens);
    assert_eq!(sum(|t| t.output_tokens), stats.completion_tokens);
}

#[actix::test]
async fn usage_totals_equal_the_tokens_the_mock_server_reported() {
    let mock = llm::start(mock_config("")).await;
    let (rig, _store) = memory_rig(&mock).await;
    let first = rig
        .talk
        .ask(ask("helper", "acme", None, "What is the current_time?"))
        .await
        .expect("turn");
    rig.talk
        .ask(ask(
            "helper",
            "acme",
            Some(&first.thread),
            "and one more question",
        ))
        .await
        .expect("turn");
    rig.talk
        .ask(ask("helper", "globex", None, "hello"))
        .await
        .expect("turn");

    let stats = mock.stats();
    let acme = rig
        .talk
        .usage("acme", today(), today())
        .await
        .expect("usage");
    let globex = rig
        .talk
        .usage("globex", today(), today())
        .await
        .expect("usage");
    assert_adds_up(&[&acme, &globex], &stats);
    assert_eq!(acme.by_model["mock"].calls, 3);
    assert_eq!(
        acme.by_agent["helper"].input_tokens,
        acme.total.input_tokens
    );
    let cost = (acme.total.input_tokens as f64 + 2.0 * acme.total.output_tokens as f64) / 1e6;
    assert!(
        (acme.total.cost - cost).abs() < 1e-9,
        "{} != {cost}",
        acme.total.cost
    );
    let events = rig.talk.events("acme", "0", 1000).await.expect("events");
    let usage_events = events
        .iter()
        .filter(|e| e.field("kind") == Some(&b"usage"[..]))
        .count();
    assert_eq!(usage_events, 3);
    rig.stop().await;
}

/// On Redis, a call of a group without a budget is one usage log entry in the call's batch;
/// the tally folds the log into the counters. A report is exact before and after the fold,
/// only the lease holder folds, and forged entries are dropped without touching other keys.
#[actix::test]
async fn usage_is_logged_folded_once_and_reported_exactly_on_redis() {
    let mock = llm::start(mock_config("")).await;
    let prefix = unique_prefix("usage-log");
    let store = redis::store(&prefix).await;
    // The test holds the tally's lease, so the daemon's tally waits until it lets go.
    assert!(store
        .acquire_lease(tally::LEASE, "test", Duration::from_secs(30))
        .await
        .expect("lease"));
    let config = format!(
        "{}\n[budgets.acme]\ntokens_per_day = 1000000\n",
        config_text(&mock)
    );
    let rig = Rig::start(&config, store.clone()).await;
    for group in ["acme", "acme", "globex", "globex"] {
        rig.talk
            .ask(ask("helper", group, None, "hello there"))
            .await
            .expect("turn");
    }
    let stats = mock.stats();
    let report = |group: &'static str| {
        let talk = rig.talk.clone();
        async move { talk.usage(group, today(), today()).await.expect("usage") }
    };
    let (acme, globex) = (report("acme").await, report("globex").await);
    assert_adds_up(&[&acme, &globex], &stats);
    assert_eq!(globex.by_agent["helper"].calls, 2);
    // acme has a budget: its counters were written by its calls. globex's calls are in the log.
    let log = store
        .xrange("usage-log", "-", "+", None)
        .await
        .expect("log");
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|e| e
        .field("k")
        .is_some_and(|k| k.starts_with(b"usage:globex:"))));
    let acme_day = store.keys_with_prefix("usage:acme:").await.expect("keys");
    assert_eq!(acme_day.len(), 1, "{acme_day:?}");
    assert!(store
        .keys_with_prefix("usage:globex:")
        .await
        .expect("keys")
        .is_empty());

    // Forged entries: one naming a key outside the usage hashes, one of garbage.
    for fields in [
        vec![
            ("k", &b"ingress:done:globex:forged"[..]),
            ("p", b"pair:mock:helper:"),
            ("i", b"5"),
            ("o", b"5"),
            ("c", b"5"),
        ],
        vec![("k", &[0xff, 0x00][..])],
    ] {
        store.xadd("usage-log", &fields, None).await.expect("xadd");
    }
    // Only the lease holder folds.
    assert_eq!(
        usage::fold(store.as_ref(), "other").await.expect("fold"),
        usage::Folded::default()
    );
    assert_eq!(store.xlen("usage-log").await.expect("xlen"), 4);
    let folded = usage::fold(store.as_ref(), "test").await.expect("fold");
    assert_eq!(
        folded,
        usage::Folded {
            calls: 2,
            malformed: 2
        }
    );
    assert_eq!(store.xlen("usage-log").await.expect("xlen"), 0);
    assert!(!store
        .exists("ingress:done:globex:forged")
        .await
        .expect("exists"));
    assert_eq!(report("globex").await, globex, "the same after the fold");
    assert_eq!(report("acme").await, acme);

    // Let go of the lease: the daemon's own tally folds the next call.
    store
        .release_lease(tally::LEASE, "test")
        .await
        .expect("release");
    rig.talk
        .ask(ask("helper", "globex", None, "once more"))
        .await
        .expect("turn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.xlen("usage-log").await.expect("xlen") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon's tally folds the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report("globex").await.total.calls, 3);
    rig.stop().await;
}

#[actix::test]
async fn a_tool_outside_the_allowlist_is_refused_and_recorded() {
    let mock = llm::start(mock_config(RULES)).await;
    let (rig, _store) = memory_rig(&mock).await;
    let out = rig
        .talk
        .ask(ask("helper", "acme", None, "please steal the secrets"))
        .await
        .expect("turn");
    assert_eq!(out.status, TurnStatus::Completed);
    let messages = contents(&rig.talk, "acme", &out).await;
    assert_eq!(messages[1], (Role::Assistant, "fetch".to_owned()));
    assert_eq!(messages[2].0, Role::Tool);
    assert!(
        messages[2]
            .1
            .contains("fetch denied: not allowed for agent helper"),
        "{}",
        messages[2].1
    );
    // The refusal went back to the model, which answered with it.
    assert!(
        out.answer.contains("not allowed for agent helper"),
        "{}",
        out.answer
    );
    let events = rig.talk.events("acme", "0", 1000).await.expect("events");
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.field("kind") == Some(&b"tool_denied"[..]))
        .collect();
    assert_eq!(denied.len(), 1);
    rig.stop().await;
}

#[actix::test]
async fn malformed_tool_arguments_go_back_to_the_model() {
    let mock = llm::start(mock_config(RULES)).await;
    let (rig, _store) = memory_rig(&mock).await;
    let out = rig
        .talk
        .ask(ask("helper", "acme", None, "call it with broken args"))
        .await
        .expect("turn");
    assert_eq!(out.status, TurnStatus::Completed);
    let messages = contents(&rig.talk, "acme", &out).await;
    assert!(
        messages[2]
            .1
            .starts_with("error: invalid arguments for current_time"),
        "{}",
        messages[2].1
    );
    // The second model request carried the error as a tool message.
    let requests = mock.requests();
    let last = &requests.last().expect("requests").body["messages"];
    let tool_message = last.as_array().and_then(|m| m.last()).expect("messages");
    assert_eq!(tool_message["role"], "tool");
    assert!(tool_message["content"]
        .as_str()
        .unwrap_or("")
        .contains("invalid arguments"));
    rig.stop().await;
}

#[actix::test]
async fn a_tool_needing_approval_pauses_the_turn_until_a_client_decides() {
    let mock = llm::start(mock_config("")).await;
    let (rig, _store) = memory_rig(&mock).await;
    let out = rig
        .talk
        .ask(ask("gated", "acme", None, "what is the guarded_time"))
        .await
        .expect("turn");
    let TurnStatus::AwaitingApproval { approval, calls } = out.status.clone() else {
        panic!("expected a pause, got {:?}", out.status);
    };
    assert_eq!(calls[0].name, "guarded_time");
    // Nothing else runs in the thread meanwhile.
    let busy = rig
        .talk
        .ask(ask("gated", "acme", Some(&out.thread), "hello?"))
        .await;
    assert!(
        matches!(busy, Err(AgentError::AwaitingApproval { .. })),
        "{busy:?}"
    );
    let wrong = rig.talk.approve("acme", &out.thread, "nope", true).await;
    assert!(
        matches!(
            wrong,
            Err(AgentError::NotFound {
                what: "approval",
                ..
            })
        ),
        "{wrong:?}"
    );

    resume(&rig.talk, &out.thread, &approval, false, "did not approve").await;

    let again = rig
        .talk
        .ask(ask(
            "gated",
            "acme",
            Some(&out.thread),
            "the guarded_time now",
        ))
        .await
        .expect("turn");
    let TurnStatus::AwaitingApproval { approval, .. } = again.status else {
        panic!("expected a pause");
    };
    resume(
        &rig.talk,
        &out.thread,
        &approval,
        true,
        "Here is what the tools returned: 20",
    )
    .await;
    rig.stop().await;
}

#[actix::test]
async fn a_one_shot_turn_paused_for_an_approval_is_an_ordinary_thread_the_approval_continues() {
    let mock = llm::start(mock_config("")).await;
    let (rig, store) = memory_rig(&mock).await;
    let new = troupe_agents::NewThread {
        group: "acme".into(),
        user: "alice".into(),
        id: Some("wf-r9.gate".into()),
        title: "a gated call".into(),
        metadata: serde_json::Value::Null,
    };
    let (out, writes) = rig
        .talk
        .ask_once(new, "gated", "what is the guarded_time".into(), None)
        .await
        .expect("one-shot turn");
    let TurnStatus::AwaitingApproval { approval, .. } = out.status.clone() else {
        panic!("expected a pause, got {:?}", out.status);
    };
    // Written already, as an ordinary thread (owner, metadata, messages, approval), not in
    // the one-value form; unlisted like every workflow call's thread.
    assert!(writes.is_empty(), "{writes:?}");
    let mut keys = store.keys_with_prefix("thread").await.expect("keys");
    keys.sort();
    assert_eq!(
        keys,
        [
            "thread-owner:wf-r9.gate",
            "thread:acme:wf-r9.gate:approval",
            "thread:acme:wf-r9.gate:messages",
            "thread:acme:wf-r9.gate:meta",
        ]
    );
    let before = contents(&rig.talk, "acme", &out).await;
    assert_eq!(
        before,
        [
            (Role::User, "what is the guarded_time".to_owned()),
            (Role::Assistant, "guarded_time".to_owned()),
        ]
    );
    let approved = resume(
        &rig.talk,
        &out.thread,
        &approval,
        true,
        "Here is what the tools returned",
    )
    .await;
    assert_eq!(contents(&rig.talk, "acme", &approved).await.len(), 4);
    rig.stop().await;
}

#[actix::test]
async fn groups_can_never_touch_each_others_threads() {
    let mock = llm::start(mock_config("")).await;
    let (rig, _store) = memory_rig(&mock).await;
    let out = rig
        .talk
        .ask(ask("helper", "acme", None, "private matter"))
        .await
        .expect("turn");
    let t = out.thread.as_str();
    let forbidden = |r: &Result<_, AgentError>| matches!(r, Err(AgentError::Forbidden { .. }));
    assert!(forbidden(
        &rig.talk.messages("globex", t, 0, 10).await.map(|_| ())
    ));
    assert!(forbidden(
        &rig.talk
            .ask(ask("helper", "globex", Some(t), "let me in"))
            .await
            .map(|_| ())
    ));
    assert!(forbidden(&rig.talk.thread("globex", t).await.map(|_| ())));
    assert!(forbidden(&rig.talk.archive("globex", t).await.map(|_| ())));
    assert!(forbidden(&rig.talk.delete("globex", t).await));
    assert!(forbidden(
        &rig.talk.approve("globex", t, "a1", true).await.map(|_| ())
    ));
    assert!(rig
        .talk
        .list_threads("globex", None, 0, 10)
        .await
        .expect("list")
        .threads
        .is_empty());
    assert!(rig
        .talk
        .events("globex", "0", 100)
        .await
        .expect("events")
        .is_empty());
    // Still intact for its owner.
    assert_eq!(
        rig.talk
            .messages("acme", t, 0, 10)
            .await
            .expect("messages")
            .total,
        2
    );
    rig.stop().await;
}

#[actix::test]
async fn threads_list_newest_first_archive_and_delete() {
    let mock = llm::start(mock_config("")).await;
    let (rig, _store) = memory_rig(&mock).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            rig.talk
                .ask(ask("helper", "acme", None, &format!("topic {i}")))
                .await
                .expect("turn")
                .thread,
        );
    }
    let page = rig
        .talk
        .list_threads("acme", None, 0, 2)
        .await
        .expect("list");
    assert_eq!(
        page.threads
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [ids[4].as_str(), ids[3].as_str()]
    );
    let rest = rig
        .talk
        .list_threads("acme", Some("alice"), page.next.expect("more"), 10)
        .await
        .expect("list");
    assert_eq!(rest.threads.len(), 3);
    assert_eq!(rest.threads[2].title, "topic 0");

    let archived = rig.talk.archive("acme", &ids[0]).await.expect("archive");
    assert!(archived.archived);
    let refused = rig
        .talk
        .ask(ask("helper", "acme", Some(&ids[0]), "more"))
        .await;
    assert!(
        matches!(refused, Err(AgentError::Archived { .. })),
        "{refused:?}"
    );
    rig.talk.delete("acme", &ids[1]).await.expect("delete");
    let gone = rig.talk.messages("acme", &ids[1], 0, 10).await;
    assert!(matches!(gone, Err(AgentError::NotFound { .. })), "{gone:?}");
    assert_eq!(
        rig.talk
            .list_threads("acme", None, 0, 10)
            .await
            .expect("list")
            .threads
            .len(),
        4
    );
    rig.stop().await;
}

#[actix::test]
async fn a_spent_budget_stops_calls_before_they_reach_the_model() {
    let mock = llm::start(mock_config("")).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = format!(
        "{}\n[budgets.acme]\ntokens_per_day = 5\n",
        config_text(&mock)
    );
    let rig = Rig::start(&config, store).await;
    rig.talk
        .ask(ask("helper", "acme", None, "one two three four five six"))
        .await
        .expect("first call is within budget");
    let calls = mock.stats().chat_completions;
    let refused = rig.talk.ask(ask("helper", "acme", None, "again")).await;
    assert!(
        matches!(
            refused,
            Err(AgentError::Model(
                troupe_agents::model::ModelError::BudgetExceeded { .. }
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(
        mock.stats().chat_completions,
        calls,
        "no call reached the model"
    );
    // Other groups are unaffected.
    rig.talk
        .ask(ask("helper", "globex", None, "hi"))
        .await
        .expect("globex has no budget");
    rig.stop().await;
}

#[actix::test]
async fn a_conversation_survives_a_restart_on_redis() {
    let mock = llm::start(mock_config("")).await;
    let prefix = unique_prefix("agents-restart");
    let first = Rig::start(&config_text(&mock), redis::store(&prefix).await).await;
    let out = first
        .talk
        .ask(ask("helper", "acme", None, "remember the word zebra"))
        .await
        .expect("turn");
    first.stop().await;

    // A new daemon (new connection, new actors) continues the same thread.
    let second = Rig::start(&config_text(&mock), redis::store(&prefix).await).await;
    let next = second
        .talk
        .ask(ask(
            "helper",
            "acme",
            Some(&out.thread),
            "what was the word?",
        ))
        .await
        .expect("turn");
    assert_eq!(next.thread, out.thread);
    let page = second
        .talk
        .messages("acme", &out.thread, 0, 10)
        .await
        .expect("messages");
    assert_eq!(page.total, 4);
    // The model saw the reloaded history: system, the first exchange, the new question.
    let requests = mock.requests();
    let sent = requests.last().expect("request").body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let texts: Vec<&str> = sent.iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(
        texts,
        [
            "You help.",
            "remember the word zebra",
            "You said: remember the word zebra",
            "what was the word?"
        ]
    );
    second.stop().await;
}

#[actix::test]
async fn tail_prints_a_thread_from_the_store_and_refuses_other_groups() {
    let mock = llm::start(mock_config("")).await;
    let prefix = unique_prefix("tail");
    let rig = Rig::start(&config_text(&mock), redis::store(&prefix).await).await;
    let out = rig
        .talk
        .ask(ask("helper", "acme", None, "What is the current_time?"))
        .await
        .expect("turn");
    rig.stop().await;

    let config = redis::store_config_file(&prefix);
    let tail = |group: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args([
                "tail",
                &out.thread,
                "--group",
                group,
                "--no-follow",
                "--config",
            ])
            .arg(config.path())
            .output()
            .expect("run troupe tail")
    };
    let shown = tail("acme");
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        stdout.contains("[0] user: What is the current_time?"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[1] assistant (helper) calls current_time({})"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[3] assistant (helper): {}", out.answer)),
        "{stdout}"
    );

    let refused = tail("globex");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("may not access thread"), "{stderr}");
}

#[actix::test]
async fn the_limits_an_agent_names_guard_its_model_calls_and_429_slows_them() {
    // A long Retry-After: the client gives up at once (beyond max_retry_time) and the
    // limiter is held long enough to observe.
    let mock = llm::start(mock_config("retry_after = \"30s\"\n")).await;
    let config = format!(
        r#"{}
[limits.llm_requests]
kind = "token_bucket"
rate = 2
period = "1h"
key = "group"

[agents.limited]
model = "mock"
limits = ["llm_requests"]
"#,
        config_text(&mock)
    );
    let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
    for i in 0..2 {
        rig.talk
            .ask(ask("limited", "acme", None, &format!("q{i}")))
            .await
            .expect("within the limit");
    }
    let refused = rig.talk.ask(ask("limited", "acme", None, "q3")).await;
    assert!(
        matches!(
            refused,
            Err(AgentError::Limit(LimitError::RateLimited { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        mock.stats().chat_completions,
        2,
        "the refused call never reached the model"
    );
    // The limit is per group: another group still has its own budget.
    rig.talk
        .ask(ask("limited", "globex", None, "hi"))
        .await
        .expect("globex is not limited");

    // A provider 429 (retries exhausted) holds the limiter for the Retry-After it gave.
    mock.set_fault(Some(llm::Fault::RateLimited));
    let limited = rig.talk.ask(ask("limited", "initech", None, "busy?")).await;
    assert!(matches!(limited, Err(AgentError::Model(_))), "{limited:?}");
    let calls = mock.stats().chat_completions;
    mock.set_fault(None);
    let held = rig.talk.ask(ask("limited", "initech", None, "now?")).await;
    assert!(
        matches!(held, Err(AgentError::Limit(LimitError::RateLimited { .. }))),
        "{held:?}"
    );
    assert_eq!(
        mock.stats().chat_completions,
        calls,
        "held by the limiter, not sent"
    );
    rig.stop().await;
}

#[actix::test]
async fn budgets_come_from_the_config() {
    let mock = llm::start(mock_config("")).await;
    let config = format!(
        "{}\n[budgets.acme]\ntokens_per_day = 3\n",
        config_text(&mock)
    );
    let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
    rig.talk
        .ask(ask("helper", "acme", None, "one two three"))
        .await
        .expect("first call");
    let refused = rig.talk.ask(ask("helper", "acme", None, "again")).await;
    assert!(refused.is_err_and(|e| e.kind() == "budget_exceeded"));
    let empty = troupe_config::load_str("[budgets.acme]\n", "troupe.toml", &[]);
    let text = empty.expect_err("an empty budget is refused").to_string();
    assert!(
        text.contains("budgets.acme: a budget needs tokens_per_day"),
        "{text}"
    );
    rig.stop().await;
}

/// Roles, texts and tool calls of a thread, for comparing runs.
async fn transcript(talk: &Conversations, group: &str, thread: &str) -> Vec<String> {
    let page = talk
        .messages(group, thread, 0, 100)
        .await
        .expect("messages");
    page.messages
        .iter()
        .map(|m| {
            let calls: Vec<String> = m
                .message
                .tool_calls
                .iter()
                .map(|c| format!("{}({})", c.name, c.arguments))
                .collect();
            format!(
                "{:?}: {} {}",
                m.message.role,
                m.message.content,
                calls.join(",")
            )
        })
        .collect()
}

#[actix::test]
async fn a_recorded_cassette_replays_offline_to_the_same_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = dir.path().join("run.jsonl");
    let agents = r#"
[tools.current_time]
kind = "current_time"

[agents.helper]
model = "mock"
instructions = "You help."
tools = ["current_time"]
"#;
    let recorded = {
        let mock = llm::start(mock_config(RULES)).await;
        let config = format!(
            "[models.mock]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"mock-model\"\nrecord = \"{}\"\n{agents}",
            mock.base_url(),
            cassette.display()
        );
        let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
        let out = rig
            .talk
            .ask(ask("helper", "acme", None, "call it with broken args"))
            .await
            .expect("turn");
        let first = transcript(&rig.talk, "acme", &out.thread).await;
        rig.stop().await;
        first
        // The mock server stops here: the replay below has no server to talk to.
    };
    assert_eq!(recorded.len(), 4, "{recorded:?}");

    let config = format!(
        "[models.mock]\nprovider = \"scripted\"\ncassette = \"{}\"\n{agents}",
        cassette.display()
    );
    let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
    let out = rig
        .talk
        .ask(ask("helper", "acme", None, "call it with broken args"))
        .await
        .expect("turn");
    let replayed = transcript(&rig.talk, "acme", &out.thread).await;
    assert_eq!(replayed, recorded);
    rig.stop().await;
}

#[actix::test]
async fn tail_follows_the_live_deltas_of_a_turn_in_progress() {
    // 100 ms between streamed words: the turn streams for well over a second.
    let mock = llm::start(mock_config("token_latency = \"100ms\"\n")).await;
    let prefix = unique_prefix("tail-follow");
    let rig = Rig::start(&config_text(&mock), redis::store(&prefix).await).await;
    let thread = rig
        .talk
        .ask(ask("helper", "acme", None, "hello"))
        .await
        .expect("turn")
        .thread;

    let config = redis::store_config_file(&prefix);
    let path = config.path().to_owned();
    let tail_thread = thread.clone();
    let tail = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args([
                "tail",
                &tail_thread,
                "--group",
                "acme",
                "--max-time",
                "4s",
                "--config",
            ])
            .arg(path)
            .output()
            .expect("run troupe tail")
    });
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";
    let mut question = ask("helper", "acme", Some(&thread), long);
    question.stream = true;
    let out = rig.talk.ask(question).await.expect("turn");
    let shown = tail.await.expect("tail task");
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        stdout.contains(&format!("assistant (live): {} [ok]", out.answer)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[3] assistant (helper): {}", out.answer)),
        "{stdout}"
    );
    rig.stop().await;
}

// Hostile model servers and tool floods (issue 13, section 4).

/// The `kind`s of `group`'s audit events, and the data of the first event of `kind`.
async fn audit(talk: &Conversations, group: &str, kind: &str) -> (Vec<String>, serde_json::Value) {
    let events = talk.events(group, "0", 100_000).await.expect("events");
    let kinds = events
        .iter()
        .filter_map(|e| e.field("kind"))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let data = events
        .iter()
        .find(|e| e.field("kind") == Some(kind.as_bytes()))
        .and_then(|e| e.field("data"))
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or_default();
    (kinds, data)
}

#[actix::test]
async fn a_429_with_an_absurd_retry_after_holds_the_limiter_at_most_max_retry_time() {
    // config_text: max_retry_time = "3s".
    for (group, value) in [
        ("acme", "100000000"),
        ("globex", "1e30"),
        ("initech", "Fri, 31 Dec 9999 23:59:59 GMT"),
    ] {
        let mut config = mock_config(&format!("retry_after_values = [{value:?}]\n"));
        config.fault = Some(llm::Fault::RateLimited);
        let mock = llm::start(config).await;
        let config = format!(
            "{}\n[limits.llm]\nkind = \"token_bucket\"\nrate = 100\nperiod = \"1h\"\nkey = \"group\"\n\n\
             [agents.limited]\nmodel = \"mock\"\nlimits = [\"llm\"]\n",
            config_text(&mock)
        );
        let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
        let limited = rig.talk.ask(ask("limited", group, None, "busy?")).await;
        assert!(
            matches!(
                &limited,
                Err(AgentError::Model(
                    troupe_agents::model::ModelError::RateLimited { .. }
                ))
            ),
            "Retry-After {value:?}: {limited:?}"
        );
        // Held for the clamped Retry-After: not for years.
        let held = rig.talk.ask(ask("limited", group, None, "now?")).await;
        match held {
            Err(AgentError::Limit(LimitError::RateLimited { retry_after, .. })) => assert!(
                retry_after > std::time::Duration::ZERO
                    && retry_after <= std::time::Duration::from_secs(3),
                "Retry-After {value:?}: held for {retry_after:?}"
            ),
            other => panic!("Retry-After {value:?}: expected the limiter to hold, got {other:?}"),
        }
        rig.stop().await;
    }
}

const FLOOD: &str = r#"
[[rules]]
contains = "flood"
tool_calls = [{ name = "current_time", repeat = 5000 }]
follow_up = "flood answered"
"#;

#[actix::test]
async fn a_flood_of_tool_calls_runs_max_tool_calls_and_refuses_the_rest() {
    let mock = llm::start(mock_config(FLOOD)).await;
    // Writing 5,000 calls takes the (debug-built) mock a while on a busy machine.
    let config = format!(
        "{}\n[agents.flooded]\nmodel = \"mock\"\ntools = [\"current_time\"]\nmax_tool_calls = 16\n",
        config_text(&mock).replace("idle_timeout = \"500ms\"", "idle_timeout = \"10s\"")
    );
    let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
    for (group, stream) in [("acme", false), ("globex", true)] {
        let mut question = ask("flooded", group, None, "flood the tools");
        question.stream = stream;
        let out = rig.talk.ask(question).await.expect("the turn completes");
        assert_eq!(out.status, TurnStatus::Completed);
        assert_eq!(out.answer, "flood answered");
        assert_eq!(out.model_calls, 2);

        // Every one of the 5,000 calls got a tool message, in order: 16 ran, the rest refused.
        let page = rig
            .talk
            .messages(group, &out.thread, 0, 10_000)
            .await
            .expect("messages");
        let messages: Vec<_> = page.messages.iter().map(|m| &m.message).collect();
        let calls = &messages[1].tool_calls;
        assert_eq!(calls.len(), 5000);
        let results: Vec<_> = messages.iter().filter(|m| m.role == Role::Tool).collect();
        assert_eq!(results.len(), 5000);
        for (call, result) in calls.iter().zip(&results) {
            assert_eq!(result.tool_call_id.as_deref(), Some(call.id.as_str()));
        }
        let refusal = "refused: more than max_tool_calls = 16 tool calls in one response";
        let refused = results.iter().filter(|m| m.content == refusal).count();
        assert_eq!(refused, 4984);
        assert!(results[..16].iter().all(|m| m.content != refusal));

        // The model was answered for every call; the audit has 16 calls and one refusal.
        let (kinds, denied) = audit(&rig.talk, group, "tool_denied").await;
        assert_eq!(kinds.iter().filter(|k| *k == "tool_call").count(), 16);
        assert_eq!(kinds.iter().filter(|k| *k == "tool_denied").count(), 1);
        assert_eq!(denied["refused"], 4984);
        assert_eq!(denied["reason"], "max_tool_calls");

        // The next turn's context (the last 20 messages) does not open with tool results
        // whose call it cut off.
        let again = rig
            .talk
            .ask(ask("flooded", group, Some(&out.thread), "and now?"))
            .await
            .expect("the next turn");
        assert_eq!(again.status, TurnStatus::Completed);
        let sent = mock.requests();
        let roles: Vec<&str> = sent
            .last()
            .and_then(|r| r.body["messages"].as_array())
            .map(|m| m.iter().filter_map(|m| m["role"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(roles.last(), Some(&"user"), "{roles:?}");
        assert_ne!(roles.first(), Some(&"tool"), "{roles:?}");
    }
    // The follow-up requests answered every call to the model.
    let follow_ups: Vec<usize> = mock
        .requests()
        .iter()
        .filter_map(|r| {
            r.body["messages"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["role"] == "tool").count())
        })
        .filter(|tools| *tools > 0)
        .collect();
    assert_eq!(follow_ups, [5000, 5000]);
    rig.stop().await;
}

#[actix::test]
async fn a_failed_call_names_no_url_or_key_in_the_error_or_its_event() {
    let var = format!("TROUPE_IT_AGENTS_KEY_{}", std::process::id());
    std::env::set_var(&var, "sk-test-SECRET");
    let mock = llm::start(mock_config("")).await;
    let config = config_text(&mock).replace(
        "model = \"mock-model\"\n",
        &format!("model = \"mock-model\"\napi_key_env = \"{var}\"\n"),
    );
    let rig = Rig::start(&config, Arc::new(MemoryStore::new())).await;
    // A reqwest error (reqwest names the URL), an error body echoing URL and key, a huge body.
    for (group, fault) in [
        ("acme", llm::Fault::HugeHeader),
        ("globex", llm::Fault::Echo),
        ("initech", llm::Fault::HugeBody),
    ] {
        mock.set_fault(Some(fault));
        let err = rig
            .talk
            .ask(ask("helper", group, None, "hi"))
            .await
            .expect_err("the call fails");
        let (_, event) = audit(&rig.talk, group, "error").await;
        let recorded = event["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(recorded, err.to_string());
        for leak in ["127.0.0.1", "http", "/v1", "sk-test-SECRET"] {
            assert!(!recorded.contains(leak), "{fault:?}: {leak} in {recorded}");
        }
    }
    std::env::remove_var(&var);
    rig.stop().await;
}
