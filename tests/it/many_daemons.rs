//! Many daemons, one truth: durable state is right whichever daemon does the next step.
//!
//! Threads: a thread continued in turn on two real daemons (each reading tasks from a stream
//! of its own, so the test decides which one answers) numbers its messages contiguously, and
//! each turn's model call — seen at the mock server — holds every earlier message. In one
//! process, two sets of thread actors over one Redis stand for two daemons: an approval left
//! pending by one is seen and answered by the other, and turns sent to both at once are
//! serialized by the thread's turn lease.

use std::sync::Arc;
use std::time::Duration;

use redis::Commands as _;
use troupe_agents::{AgentError, Ask, Role, TurnStatus};
use troupe_runtime::store::Store;
use troupe_testkit::{eventually_blocking, WAIT};

use crate::support::agents::Rig;
use crate::support::daemon::{config_file, Daemon};
use crate::support::llm::{self, mock_config, MockHandle};
use crate::support::redis::{self as private_redis, free_port, unique_prefix, RedisServer};

const PREFIX: &str = "many:";

/// A `troupe serve` config reading tasks from the stream `tasks-{name}`.
fn daemon_config(name: &str, redis: &RedisServer, mock: &MockHandle) -> tempfile::NamedTempFile {
    let text = format!(
        r#"[daemon]
name = "{name}"
metrics_addr = "127.0.0.1:{metrics}"

[store]
backend = "redis"
url = "{url}"
prefix = "{PREFIX}"

[ingress]
stream = "tasks-{name}"
block = "100ms"

[models.mock]
provider = "openai"
base_url = "{base_url}"
model = "mock-model"

[agents.echo]
model = "mock"
instructions = "Echo."
"#,
        metrics = free_port(),
        url = redis.url(),
        base_url = mock.base_url(),
    );
    config_file(&text)
}

/// XADDs an agent task to `stream` and waits for its final result.
fn turn(
    conn: &mut redis::Connection,
    stream: &str,
    id: &str,
    thread: Option<&str>,
    input: &str,
) -> serde_json::Value {
    let mut task = serde_json::json!({
        "id": id, "agent": "echo", "input": input, "group": "acme", "user": "alice",
    });
    if let Some(thread) = thread {
        task["thread"] = thread.into();
    }
    let _: String = conn
        .xadd(
            format!("{PREFIX}{stream}"),
            "*",
            &[("task", task.to_string())],
        )
        .expect("XADD");
    eventually_blocking(format!("no result for {id}"), WAIT, || {
        let reply: redis::streams::StreamRangeReply =
            conn.xrange_all(format!("{PREFIX}results")).expect("XRANGE");
        reply
            .ids
            .iter()
            .filter_map(|e| e.get::<String>("result"))
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
            .find(|r| r["task_id"] == id && r["status"] != "accepted")
    })
}

#[test]
fn a_thread_continued_on_two_daemons_in_turn_keeps_one_numbering_and_one_context() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mock = runtime.block_on(llm::start(mock_config("")));
    let redis = RedisServer::start();
    let configs = [
        daemon_config("d0", &redis, &mock),
        daemon_config("d1", &redis, &mock),
    ];
    let mut daemons: Vec<Daemon> = configs
        .iter()
        .map(|config| {
            let path = config.path().to_str().expect("utf-8 path");
            let mut daemon = Daemon::spawn(&["serve", "--config", path]);
            daemon.wait_for_log("ingress consumer started", Duration::from_secs(30));
            daemon
        })
        .collect();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");

    // d0, d1, d0, d1, d0: each daemon's thread actor stays live between its turns.
    let order = ["d0", "d1", "d0", "d1", "d0"];
    let mut thread: Option<String> = None;
    for (i, daemon) in order.iter().enumerate() {
        let stream = format!("tasks-{daemon}");
        let result = turn(
            &mut conn,
            &stream,
            &format!("t{i}"),
            thread.as_deref(),
            &format!("turn {i} on {daemon}"),
        );
        assert_eq!(result["status"], "ok", "{result}");
        assert_eq!(result["output"], format!("You said: turn {i} on {daemon}"));
        thread = result["thread"].as_str().map(ToOwned::to_owned);
    }
    let thread = thread.expect("a thread");

    // The thread's messages, read with plain Redis: numbered 0..10, user and answer in turn.
    let raw: Vec<String> = conn
        .lrange(format!("{PREFIX}thread:acme:{thread}:messages"), 0, -1)
        .expect("LRANGE");
    let messages: Vec<serde_json::Value> = raw
        .iter()
        .map(|m| serde_json::from_str(m).expect("a JSON message"))
        .collect();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>(), "{raw:#?}");
    for (i, pair) in messages.chunks(2).enumerate() {
        assert_eq!(pair[0]["content"], format!("turn {i} on {}", order[i]));
        assert_eq!(pair[1]["role"], "assistant");
    }

    // Each turn's model call held the instructions and every earlier message, in order.
    let requests = mock.requests();
    assert_eq!(requests.len(), order.len());
    for (i, request) in requests.iter().enumerate() {
        let sent: Vec<(String, String)> = request.body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                (text("role"), text("content"))
            })
            .collect();
        let mut expected = vec![("system".to_owned(), "Echo.".to_owned())];
        for earlier in &messages[..2 * i + 1] {
            let text = |k: &str| earlier[k].as_str().unwrap_or_default().to_owned();
            expected.push((text("role"), text("content")));
        }
        assert_eq!(sent, expected, "the context of turn {i}");
    }
    for daemon in &mut daemons {
        assert!(daemon.is_running(), "{}", daemon.log());
    }
}

const GATED: &str = r#"
[models.mock]
provider = "openai"
base_url = "BASE_URL"
model = "mock-model"

[tools.guarded_time]
kind = "current_time"
requires_approval = true

[agents.gated]
model = "mock"
tools = ["guarded_time"]
"#;

fn ask(thread: Option<&str>, input: &str) -> Ask {
    Ask {
        group: "acme".into(),
        user: "alice".into(),
        agent: "gated".into(),
        thread: thread.map(Into::into),
        input: input.into(),
        stream: false,
        started: None,
    }
}

#[actix::test]
async fn an_approval_left_pending_on_one_daemon_is_seen_and_answered_on_the_other() {
    let mock = llm::start(mock_config("")).await;
    let store: Arc<dyn Store> = private_redis::store(&unique_prefix("approvals")).await;
    let config = GATED.replace("BASE_URL", &mock.base_url());
    let one = Rig::start(&config, store.clone()).await;
    let two = Rig::start(&config, store.clone()).await;

    // A plain turn on both first: both daemons now hold a live actor for the thread.
    let first = one.talk.ask(ask(None, "hello")).await.expect("turn");
    let thread = first.thread.clone();
    two.talk
        .ask(ask(Some(&thread), "hello again"))
        .await
        .expect("turn");

    // One pauses for an approval; the other sees it and refuses a new turn meanwhile.
    let paused = one
        .talk
        .ask(ask(Some(&thread), "what is the guarded_time"))
        .await
        .expect("turn");
    let TurnStatus::AwaitingApproval { approval, .. } = paused.status else {
        panic!("expected a pause, got {:?}", paused.status);
    };
    let refused = two.talk.ask(ask(Some(&thread), "anyone there?")).await;
    assert!(
        matches!(&refused, Err(AgentError::AwaitingApproval { approval: a, .. }) if *a == approval),
        "{refused:?}"
    );
    // The other answers it, and the first sees it answered.
    let approved = two
        .talk
        .approve("acme", &thread, &approval, true)
        .await
        .expect("resume on the other daemon");
    assert_eq!(approved.status, TurnStatus::Completed);
    let again = one.talk.approve("acme", &thread, &approval, true).await;
    assert!(
        matches!(
            &again,
            Err(AgentError::NotFound {
                what: "approval",
                ..
            })
        ),
        "{again:?}"
    );
    let after = one
        .talk
        .ask(ask(Some(&thread), "thanks"))
        .await
        .expect("a turn after the approval");
    assert_eq!(after.status, TurnStatus::Completed);

    let page = two
        .talk
        .messages("acme", &thread, 0, 100)
        .await
        .expect("messages");
    assert!(page
        .messages
        .iter()
        .enumerate()
        .all(|(i, m)| m.seq == i as u64));
    assert_eq!(page.total, page.messages.len() as u64);
    // hello, answer, hello again, answer, question, tool call, tool result, answer, thanks, answer.
    assert_eq!(page.total, 10, "{:#?}", page.messages);
    assert_eq!(page.messages[6].message.role, Role::Tool);
    one.stop().await;
    two.stop().await;
}

#[actix::test]
async fn turns_sent_to_two_daemons_at_once_are_serialized_by_the_thread_lease() {
    let mock = llm::start(mock_config("latency = \"50ms\"")).await;
    let store: Arc<dyn Store> = private_redis::store(&unique_prefix("leases")).await;
    let config = GATED.replace("BASE_URL", &mock.base_url());
    let one = Rig::start(&config, store.clone()).await;
    let two = Rig::start(&config, store.clone()).await;
    let thread = one.talk.ask(ask(None, "start")).await.expect("turn").thread;

    let turns = (0..6).map(|i| {
        let talk = if i % 2 == 0 { &one.talk } else { &two.talk };
        let thread = thread.clone();
        async move { talk.ask(ask(Some(&thread), &format!("message {i}"))).await }
    });
    for outcome in futures::future::join_all(turns).await {
        outcome.expect("turn");
    }
    let page = one
        .talk
        .messages("acme", &thread, 0, 100)
        .await
        .expect("messages");
    assert_eq!(page.total, 14);
    // Every answer follows its own question: no turn ran beside another.
    for (i, pair) in page.messages.chunks(2).enumerate() {
        assert_eq!(pair[0].seq, 2 * i as u64);
        assert_eq!(pair[0].message.role, Role::User);
        assert_eq!(
            pair[1].message.content,
            format!("You said: {}", pair[0].message.content)
        );
    }
    // And each model call saw every message before its question: 1, 3, … 13 messages.
    let mut sent: Vec<usize> = mock
        .requests()
        .iter()
        .map(|r| r.body["messages"].as_array().map_or(0, Vec::len))
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, (0..7).map(|i| 2 * i + 1).collect::<Vec<usize>>());
    one.stop().await;
    two.stop().await;
}
