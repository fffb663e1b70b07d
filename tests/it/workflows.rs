//! Workflows end to end: the research and support examples on the scripted model and over
//! HTTP to the mock server, parallel branches overlapping, cancel, restart from a step, event
//! waits and their timeout, a changed definition, two routers sharing runs on Redis, a run
//! adopted by another router after its owner died, panicking runs, large outputs stored
//! apart, cron-submitted runs, other groups kept out, calls run as work-pool items, and
//! daemon processes killed while runs are in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU32, Ordering};

use troupe_agents::Conversations;
use troupe_runtime::pool::{Pool, WorkSpec, WorkStatus};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::Exit;
use troupe_testkit::{eventually, eventually_blocking, WAIT};
use troupe_workflow::cron_targets::CRON_GROUP;
use troupe_workflow::journal::{call_id, lease_key, now_ms, OutputRef};
use troupe_workflow::pool_call::{Call, WORKFLOW_CALL};
use troupe_workflow::{
    Entry, EntryKind, Router, RouterOptions, RunRecord, RunStatus, Runs, StepHook, Submit,
    WorkflowError,
};

use crate::support::daemon::Daemon;
use crate::support::llm::{self, MockConfig, MockHandle};
use crate::support::redis::{redis_url, unique_prefix};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// The example config `name`, with its scripted model replaced by the mock server's.
fn example_over_http(name: &str, mock: &MockHandle) -> String {
    let text = std::fs::read_to_string(example(name)).expect("read example");
    let start = text.find("[models.scripted]").expect("a scripted model");
    let end = start + text[start..].find("\n\n").expect("end of the model table");
    let model = format!(
        r#"[models.scripted]
provider = "openai"
base_url = "{}"
model = "mock-model"
idle_timeout = "2s"
max_retries = 2
initial_backoff = "10ms"
max_backoff = "50ms""#,
        mock.base_url()
    );
    format!("{}{model}{}", &text[..start], &text[end..])
}

/// The mock server answering with an example's scripted rules, after `latency`.
async fn example_mock(rules: &str, latency: Duration) -> MockHandle {
    let mut config = MockConfig::from_file(&example("scripted").join(rules)).expect("mock config");
    config.latency = latency;
    llm::start(config).await
}

/// A daemon in this process, started by the production wiring (`troupe::Daemon::builder`)
/// with the test's router options (short leases and scans, step hooks).
struct Rig {
    router: Router,
    talk: Conversations,
    pools: BTreeMap<String, Pool>,
    daemon: troupe::Daemon,
}

impl Rig {
    async fn start(text: &str, origin: &Path, store: Arc<dyn Store>, owner: &str) -> Rig {
        Rig::start_with(text, origin, store, options(owner)).await
    }

    async fn start_with(
        text: &str,
        origin: &Path,
        store: Arc<dyn Store>,
        options: RouterOptions,
    ) -> Rig {
        let mut config = troupe_config::load_str(text, &origin.display().to_string(), &[])
            .unwrap_or_else(|err| panic!("{err}"));
        // The router's owner, pool runners and leases are the daemon's name.
        config.daemon.name.clone_from(&options.owner);
        let daemon = troupe::Daemon::builder(&config, store)
            .tune_router(move |tuned| {
                *tuned = RouterOptions {
                    arbiters: std::mem::take(&mut tuned.arbiters),
                    ..options
                }
            })
            .start()
            .expect("the daemon starts");
        Rig {
            router: daemon.router.clone(),
            talk: daemon.conversations.clone(),
            pools: daemon.pools.clone(),
            daemon,
        }
    }

    async fn run(&self, workflow: &str, input: &str) -> (String, RunRecord) {
        let id = self
            .router
            .submit(submit(workflow, input))
            .await
            .expect("submit");
        let record = self
            .router
            .runs()
            .wait("acme", &id, WAIT)
            .await
            .expect("wait");
        (id, record)
    }

    async fn stop(self) {
        assert_eq!(
            self.daemon.shutdown(Duration::from_secs(2)).await,
            Exit::Stopped
        );
    }
}

/// The router options of the tests: a short lease, fast scans and event polls.
fn options(owner: &str) -> RouterOptions {
    RouterOptions {
        owner: owner.to_owned(),
        lease: Duration::from_secs(2),
        scan: Duration::from_millis(50),
        event_poll: Duration::from_millis(20),
        ..RouterOptions::default()
    }
}

fn submit(workflow: &str, input: &str) -> Submit {
    Submit {
        workflow: workflow.to_owned(),
        group: "acme".to_owned(),
        user: "alice".to_owned(),
        input: input.to_owned(),
    }
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn redis(prefix: &str) -> Arc<dyn Store> {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        ..RedisOptions::new(redis_url())
    };
    Arc::new(RedisStore::connect(options).await.expect("redis"))
}

async fn journal(runs: &Runs, run: &str) -> Vec<Entry> {
    runs.journal_entries("acme", run).await.expect("journal")
}

/// Journal keys with a `completed` entry.
fn completed(entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Completed)
        .map(|e| e.step.clone())
        .collect()
}

fn at(entries: &[Entry], step: &str, kind: EntryKind) -> u64 {
    entries
        .iter()
        .find(|e| e.step == step && e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} entry for {step}: {entries:#?}"))
        .at
}

fn assert_completed(record: &RunRecord) {
    assert_eq!(
        record.status,
        RunStatus::Completed,
        "run ended {:?}: {:?}",
        record.status,
        record.error
    );
}

#[actix::test]
async fn research_and_support_run_end_to_end_on_the_scripted_model() {
    let store = memory();
    let research = std::fs::read_to_string(example("research.toml")).expect("read");
    let rig = Rig::start(&research, &example("research.toml"), store.clone(), "d1").await;
    let (id, record) = rig
        .run("research", "How do async runtimes schedule tasks?")
        .await;
    assert_completed(&record);
    let output = record.output.clone().unwrap_or_default();
    assert!(output.starts_with("Archived."), "{output}");
    assert!(output.contains("Report: async runtimes"), "{output}");
    let entries = journal(rig.router.runs(), &id).await;
    let done = completed(&entries);
    for key in [
        "classify",
        "research/web",
        "research/academic",
        "research/news",
        "research",
        "synthesis",
        "report/label",
        "report",
        "save",
    ] {
        assert!(done.contains(key), "{key} not completed: {done:?}");
    }
    // "Tech." routed to the technical writer, and the journal says why.
    let note = entries
        .iter()
        .find(|e| e.step == "report" && e.kind == EntryKind::Note)
        .and_then(|e| e.detail.clone())
        .unwrap_or_default();
    assert_eq!(note, r#"label "technical" read from "Tech.""#);
    let view = rig.router.runs().status("acme", &id).await.expect("status");
    assert!(
        view.steps.iter().all(|s| s.state == "completed"),
        "{view:?}"
    );
    // Each call ran in its own deterministic thread of the run's group.
    let thread = call_id(&id, 0, "research/web");
    let page = rig
        .talk
        .messages("acme", &thread, 0, 10)
        .await
        .expect("thread");
    assert_eq!(page.total, 2);
    // Readable by its id, but not in the group's or the user's thread lists: the run's
    // journal names its calls' threads.
    let listed = rig
        .talk
        .list_threads("acme", None, 0, 100)
        .await
        .expect("list");
    assert!(listed.threads.is_empty(), "{:?}", listed.threads);
    let listed = rig
        .talk
        .list_threads("acme", Some("alice"), 0, 100)
        .await
        .expect("list");
    assert!(listed.threads.is_empty(), "{:?}", listed.threads);
    rig.stop().await;

    let support = std::fs::read_to_string(example("support.toml")).expect("read");
    let rig = Rig::start(&support, &example("support.toml"), memory(), "d1").await;
    let (id, record) = rig.run("support", "My router keeps dropping Wi-Fi").await;
    assert_completed(&record);
    // The refined answer, published with its sources (none: this store has no knowledge).
    let output = record.output.clone().unwrap_or_default();
    assert!(
        output.ends_with("(final)\n\nSources (knowledge base):\n(none)"),
        "{output}"
    );
    let done = completed(&journal(rig.router.runs(), &id).await);
    // The draft scored 0.6: one refinement, then both checks passed; no second refinement.
    for key in [
        "polish/0/grammar",
        "polish/0/factuality",
        "polish/0/editor",
        "polish/1/grammar",
        "polish/1/factuality",
        "polish",
    ] {
        assert!(done.contains(key), "{key} not completed: {done:?}");
    }
    assert!(!done.contains("polish/1/editor"), "{done:?}");
    rig.stop().await;
}

#[actix::test]
async fn both_examples_run_over_http_and_parallel_research_overlaps() {
    let latency = Duration::from_millis(200);
    let mock = example_mock("research.toml", latency).await;
    let text = example_over_http("research.toml", &mock);
    let rig = Rig::start(&text, &example("research.toml"), memory(), "d1").await;
    let (id, record) = rig
        .run("research", "How do async runtimes schedule tasks?")
        .await;
    assert_completed(&record);
    let bodies: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.body["messages"].to_string())
        .collect();
    assert_eq!(bodies.len(), 7, "one request per call: {bodies:#?}");
    let entries = journal(rig.router.runs(), &id).await;
    // Three 200 ms calls, measured around the step from its journal timestamps.
    let step = at(&entries, "research", EntryKind::Completed)
        - at(&entries, "research", EntryKind::Started);
    for branch in ["web", "academic", "news"] {
        let key = format!("research/{branch}");
        let call =
            at(&entries, &key, EntryKind::Completed) - at(&entries, &key, EntryKind::Started);
        assert!(
            call >= 200,
            "{key} took {call} ms, below the mock's latency"
        );
    }
    println!("research step: 3 parallel calls of 200 ms took {step} ms");
    assert!(
        step < 450,
        "the parallel step took {step} ms: its calls did not overlap"
    );
    rig.stop().await;

    let mock = example_mock("support.toml", Duration::ZERO).await;
    let text = example_over_http("support.toml", &mock);
    let rig = Rig::start(&text, &example("support.toml"), memory(), "d1").await;
    let (_, record) = rig.run("support", "My router keeps dropping Wi-Fi").await;
    assert_completed(&record);
    // classify, answer, 2 + 2 scorers, one refinement, publish (the knowledge step is local).
    assert_eq!(mock.requests().len(), 7 + 1);
    rig.stop().await;
}

#[actix::test]
async fn restart_from_a_step_keeps_earlier_results() {
    let mock = example_mock("research.toml", Duration::ZERO).await;
    let text = example_over_http("research.toml", &mock);
    let rig = Rig::start(&text, &example("research.toml"), memory(), "d1").await;
    let (id, record) = rig.run("research", "Why is the sky blue?").await;
    assert_completed(&record);
    assert_eq!(mock.requests().len(), 7);
    let runs = rig.router.runs().clone();
    assert!(matches!(
        runs.restart("acme", &id, "nope").await,
        Err(troupe_workflow::WorkflowError::NotFound { .. })
    ));
    runs.restart("acme", &id, "report").await.expect("restart");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    assert_eq!(record.restarts, 1);
    // Only the report and the save step ran again.
    assert_eq!(mock.requests().len(), 9);
    rig.stop().await;
}

const WAITING: &str = r#"
[models.m]
provider = "scripted"

[agents.writer]
model = "m"

[workflows.approve]
[[workflows.approve.steps]]
name = "draft"
kind = "agent"
agent = "writer"
input = "DRAFT {{input}}"
[[workflows.approve.steps]]
name = "approval"
kind = "wait_event"
event = "approved"
TIMEOUT
[[workflows.approve.steps]]
name = "publish"
kind = "agent"
agent = "writer"
input = "PUBLISH {{steps.draft.output}} approved by {{steps.approval.output}}"
"#;

async fn wait_status(runs: &Runs, id: &str, status: RunStatus) {
    eventually(format!("run {id} {status:?}"), WAIT, || async {
        let record = runs.record("acme", id).await.expect("record");
        if record.status == status {
            Ok(())
        } else {
            Err(format!("run stayed {:?}", record.status))
        }
    })
    .await;
}

#[actix::test]
async fn cancel_ends_a_waiting_run() {
    let text = WAITING.replace("TIMEOUT", "");
    let rig = Rig::start(&text, Path::new("troupe.toml"), memory(), "d1").await;
    let id = rig
        .router
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    let runs = rig.router.runs().clone();
    wait_status(&runs, &id, RunStatus::Waiting).await;
    runs.cancel("acme", &id).await.expect("cancel");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_eq!(record.status, RunStatus::Canceled);
    let view = runs.status("acme", &id).await.expect("status");
    assert_eq!(view.steps[2].state, "pending");
    rig.stop().await;
}

#[actix::test]
async fn a_wait_times_out_and_an_event_resumes_a_wait() {
    let text = WAITING.replace("TIMEOUT", "timeout = \"300ms\"");
    let rig = Rig::start(&text, Path::new("troupe.toml"), memory(), "d1").await;
    let runs = rig.router.runs().clone();
    let started = Instant::now();
    let (_, record) = rig.run("approve", "the plan").await;
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap_or_default();
    assert!(
        error.contains("\"approved\" did not arrive in time"),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let id = rig
        .router
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    let data = serde_json::json!({"by": "bob"});
    runs.send_event("acme", &id, "approved", &data)
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    let output = record.output.unwrap_or_default();
    assert!(output.contains(r#"approved by {"by":"bob"}"#), "{output}");
    rig.stop().await;
}

#[actix::test]
async fn an_event_sent_through_the_daemon_wakes_its_waiting_run_without_a_poll() {
    // The run would look for its event in the store only once an hour: what wakes it is the
    // event sent through this daemon's `Runs`.
    let text = WAITING.replace("TIMEOUT", "");
    let options = RouterOptions {
        event_poll: Duration::from_secs(3600),
        ..options("d1")
    };
    let rig = Rig::start_with(&text, Path::new("troupe.toml"), memory(), options).await;
    let runs = rig.router.runs().clone();
    let id = rig
        .router
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    let data = serde_json::json!({"by": "carol"});
    runs.send_event("acme", &id, "approved", &data)
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    let output = record.output.unwrap_or_default();
    assert!(output.contains(r#"approved by {"by":"carol"}"#), "{output}");
    rig.stop().await;
}

/// What another process (the CLI, another daemon) does through the store alone reaches the
/// daemon by its notice: with the scan and the event poll an hour apart, only the notices can
/// adopt the runs, wake the wait of one and cancel the other. (The store-only client's waits
/// end at the `ended` notices, or at their own read of the record every `WAIT_CHECK`.)
async fn check_notices(store: Arc<dyn Store>) {
    let text = WAITING.replace("TIMEOUT", "");
    let options = RouterOptions {
        scan: Duration::from_secs(3600),
        event_poll: Duration::from_secs(3600),
        ..options("d1")
    };
    let rig = Rig::start_with(&text, Path::new("troupe.toml"), store.clone(), options).await;
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    // The other process: the store and the definitions, no router.
    let cli = Runs::new(store.clone(), config.workflows.clone());
    let approved = cli
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    let canceled = cli
        .submit(submit("approve", "the other plan"))
        .await
        .expect("submit");
    wait_status(&cli, &approved, RunStatus::Waiting).await;
    wait_status(&cli, &canceled, RunStatus::Waiting).await;
    cli.send_event("acme", &approved, "approved", &serde_json::json!("dave"))
        .await
        .expect("event");
    cli.cancel("acme", &canceled).await.expect("cancel");
    let record = cli.wait("acme", &approved, WAIT).await.expect("wait");
    assert_completed(&record);
    assert!(record
        .output
        .unwrap_or_default()
        .contains(r#"approved by "dave""#));
    let record = cli.wait("acme", &canceled, WAIT).await.expect("wait");
    assert_eq!(record.status, RunStatus::Canceled);
    rig.stop().await;
}

#[actix::test]
async fn runs_opened_canceled_and_sent_events_by_another_process_act_at_their_notice_in_memory() {
    check_notices(memory()).await;
}

#[actix::test]
async fn runs_opened_canceled_and_sent_events_by_another_process_act_at_their_notice_on_redis() {
    check_notices(redis(&unique_prefix("notices")).await).await;
}

/// Anyone can write to the notices stream: a forged `canceled` notice does not cancel a run
/// (its flag decides), a forged `opened` notice naming another group does not make the
/// router take the run as that group's (the index names its group), and entries that are no
/// notice are skipped.
#[actix::test]
async fn forged_notices_neither_cancel_a_run_nor_adopt_it_under_another_group() {
    let store = memory();
    let text = WAITING.replace("TIMEOUT", "");
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    let cli = Runs::new(store.clone(), config.workflows.clone());
    // Opened before any router runs, its lease held elsewhere: the first scan leaves it.
    let held = cli
        .submit(submit("approve", "the held plan"))
        .await
        .expect("submit");
    assert!(store
        .acquire_lease(&lease_key(&held), "elsewhere", Duration::from_secs(3600))
        .await
        .expect("lease"));
    let options = RouterOptions {
        scan: Duration::from_secs(3600),
        event_poll: Duration::from_secs(3600),
        ..options("d1")
    };
    let rig = Rig::start_with(&text, Path::new("troupe.toml"), store.clone(), options).await;
    let waiting = cli
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    wait_status(&cli, &waiting, RunStatus::Waiting).await;

    let notices = troupe_workflow::notices::NOTICES;
    let forged: [&[(&str, &[u8])]; 4] = [
        &[("kind", b"canceled"), ("run", waiting.as_bytes())],
        &[
            ("kind", b"opened"),
            ("run", b"rnosuchrun000000000"),
            ("group", b"acme"),
        ],
        &[("kind", &[0xff, 0xfe]), ("run", &[0x00, 0xc3])],
        &[("junk", b"x")],
    ];
    for fields in forged {
        store.xadd(notices, fields, None).await.expect("xadd");
    }
    // Free now, and announced as another group's.
    assert!(store
        .release_lease(&lease_key(&held), "elsewhere")
        .await
        .expect("release"));
    store
        .xadd(
            notices,
            &[
                ("kind", b"opened"),
                ("run", held.as_bytes()),
                ("group", b"globex"),
            ],
            None,
        )
        .await
        .expect("xadd");
    // Adopted as acme's, the group the index names: it runs to its wait.
    wait_status(&cli, &held, RunStatus::Waiting).await;
    assert_eq!(
        cli.record("acme", &waiting).await.expect("record").status,
        RunStatus::Waiting,
        "a forged cancel ended the run"
    );
    for id in [&waiting, &held] {
        cli.send_event("acme", id, "approved", &serde_json::json!("zoe"))
            .await
            .expect("event");
        assert_completed(&cli.wait("acme", id, WAIT).await.expect("wait"));
    }
    rig.stop().await;
}

#[actix::test]
async fn a_changed_definition_is_detected_and_the_run_keeps_its_snapshot() {
    let v1 = WAITING.replace("TIMEOUT", "").replace("DRAFT", "ALPHA");
    let v2 = v1.replace("ALPHA", "BETA");
    let store = memory();
    // Submitted through the store alone (as a CLI does), before any router runs.
    let config = troupe_config::load_str(&v1, "troupe.toml", &[]).expect("v1");
    let runs = Runs::new(store.clone(), config.workflows.clone());
    let id = runs
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    runs.send_event("acme", &id, "approved", &serde_json::json!("yes"))
        .await
        .expect("event");
    // A daemon whose config has changed since adopts it.
    let rig = Rig::start(&v2, Path::new("troupe.toml"), store, "d1").await;
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    let output = record.output.unwrap_or_default();
    assert!(output.contains("ALPHA the plan"), "{output}");
    assert!(!output.contains("BETA"), "{output}");
    let changed = journal(&runs, &id).await.iter().any(|e| {
        e.kind == EntryKind::Note
            && e.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("definition changed"))
    });
    assert!(changed, "the change was not journaled");
    rig.stop().await;
}

#[actix::test]
async fn a_run_submitted_through_the_store_is_adopted_by_a_daemon() {
    // Two routers on one Redis share 20 runs: each run is adopted by exactly one of them.
    let prefix = unique_prefix("wf-two-routers");
    let text = WAITING.replace("TIMEOUT", "");
    let a = Rig::start(&text, Path::new("troupe.toml"), redis(&prefix).await, "a").await;
    let b = Rig::start(&text, Path::new("troupe.toml"), redis(&prefix).await, "b").await;
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    let runs = Runs::new(redis(&prefix).await, config.workflows.clone());
    let mut ids = Vec::new();
    for n in 0..20 {
        let id = runs
            .submit(submit("approve", &format!("plan {n}")))
            .await
            .expect("submit");
        runs.send_event("acme", &id, "approved", &serde_json::json!(n))
            .await
            .expect("event");
        ids.push(id);
    }
    for id in &ids {
        assert_completed(&runs.wait("acme", id, WAIT).await.expect("wait"));
        let adoptions = journal(&runs, id)
            .await
            .iter()
            .filter(|e| e.kind == EntryKind::Adopted)
            .count();
        assert_eq!(adoptions, 1, "run {id}");
    }
    a.stop().await;
    b.stop().await;
}

/// A config file for a `troupe serve` daemon on Redis.
fn daemon_config(prefix: &str, body: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        r#"
[daemon]
name = "wf-daemon"
shutdown_grace = "3s"

[store]
backend = "redis"
url = "{url}"
prefix = "{prefix}"
{body}"#,
        url = redis_url()
    );
    file.write_all(text.as_bytes()).expect("write config");
    file
}

fn serve(file: &tempfile::NamedTempFile) -> Daemon {
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("workflow router started", Duration::from_secs(30));
    daemon
}

#[test]
fn an_approval_sent_after_a_daemon_restart_resumes_the_run() {
    let prefix = unique_prefix("wf-approval");
    let file = daemon_config(&prefix, &WAITING.replace("TIMEOUT", "timeout = \"1h\""));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text = std::fs::read_to_string(file.path()).expect("read");
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    let runs =
        runtime.block_on(async { Runs::new(redis(&prefix).await, config.workflows.clone()) });

    let mut daemon = serve(&file);
    let id = runtime
        .block_on(runs.submit(submit("approve", "the launch plan")))
        .expect("submit");
    runtime.block_on(wait_status(&runs, &id, RunStatus::Waiting));
    daemon.signal("KILL");
    assert!(daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(daemon);

    let mut daemon = serve(&file);
    runtime
        .block_on(runs.send_event("acme", &id, "approved", &serde_json::json!({"by": "alice"})))
        .expect("event");
    let record = runtime
        .block_on(runs.wait("acme", &id, WAIT))
        .expect("wait");
    assert_completed(&record);
    let output = record.output.unwrap_or_default();
    assert!(output.contains("DRAFT the launch plan"), "{output}");
    assert!(output.contains(r#"approved by {"by":"alice"}"#), "{output}");
    // The draft was written once: the restarted daemon reused its journaled output.
    let entries = runtime.block_on(journal(&runs, &id));
    let drafts = entries
        .iter()
        .filter(|e| e.step == "draft" && e.kind == EntryKind::Started)
        .count();
    assert_eq!(drafts, 1);
    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        daemon.log()
    );
}

/// The research pipeline for the crash test: every call's last user message names the run's
/// input, and every agent belongs to exactly one step.
fn crash_workflow(mock: &MockHandle) -> String {
    let mut text = format!(
        r#"
[models.mock]
provider = "openai"
base_url = "{}"
model = "mock-model"
idle_timeout = "5s"
max_retries = 2
initial_backoff = "10ms"
max_backoff = "50ms"
"#,
        mock.base_url()
    );
    for agent in [
        "classifier",
        "web",
        "academic",
        "news",
        "synthesizer",
        "tech_writer",
        "writer",
    ] {
        text.push_str(&format!(
            "[agents.{agent}]\nmodel = \"mock\"\ninstructions = \"You are the {agent}.\"\n"
        ));
    }
    text.push_str(
        r#"
[workflows.research]
[[workflows.research.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
input = "CLASSIFY: {{input}}"
[[workflows.research.steps]]
name = "research"
kind = "parallel"
agents = ["web", "academic", "news"]
input = "RESEARCH: {{input}}"
[[workflows.research.steps]]
name = "synthesis"
kind = "agent"
agent = "synthesizer"
input = "SYNTHESIZE {{input}}"
[[workflows.research.steps]]
name = "report"
kind = "route"
on = "classify"
routes = { technical = "tech_writer", general = "writer" }
input = "WRITE A REPORT on {{input}}"
"#,
    );
    text
}

/// (agent, run input) of a recorded model request: its system message and last user message.
fn identity(body: &serde_json::Value) -> Option<(String, String)> {
    let messages = body.get("messages")?.as_array()?;
    let system = messages
        .iter()
        .find(|m| m["role"] == "system")?
        .get("content")?
        .as_str()?;
    let agent = system
        .strip_prefix("You are the ")?
        .strip_suffix('.')?
        .to_owned();
    let user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")?
        .get("content")?
        .as_str()?;
    let input = user.split_whitespace().find(|w| w.starts_with("job"))?;
    Some((agent, input.to_owned()))
}

#[test]
fn a_sigkilled_daemon_leaves_no_workflow_behind_and_repeats_no_completed_step() {
    const RUNS: usize = 100;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut mock_config =
        crate::support::llm::mock_config("[[rules]]\ncontains = \"CLASSIFY\"\nreply = \"Tech.\"\n");
    mock_config.latency = Duration::from_millis(200);
    let mock = runtime.block_on(llm::start(mock_config));
    let prefix = unique_prefix("wf-crash");
    let file = daemon_config(&prefix, &crash_workflow(&mock));
    let text = std::fs::read_to_string(file.path()).expect("read");
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    let runs =
        runtime.block_on(async { Runs::new(redis(&prefix).await, config.workflows.clone()) });

    let mut daemon = serve(&file);
    let mut ids = Vec::new();
    for n in 0..RUNS {
        // Inputs are one word, so a request's last user message names its run.
        let id = runtime
            .block_on(runs.submit(submit("research", &format!("job{n}"))))
            .expect("submit");
        ids.push(id);
    }
    // Kill it mid-flight: some runs done with some steps, many calls in flight.
    // Kill it once most research calls have answered: some runs then have their research
    // completed, others have calls in flight.
    eventually_blocking("most research calls answered", WAIT, || {
        let calls = mock.requests().len();
        if calls >= RUNS * 4 + RUNS / 2 {
            Ok(())
        } else {
            Err(format!("the daemon made only {calls} calls"))
        }
    });
    daemon.signal("KILL");
    assert!(daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(daemon);
    let before_kill = mock.requests().len();

    // What was completed when it died.
    let step_of = |agent: &str| -> String {
        match agent {
            "classifier" => "classify".to_owned(),
            "web" | "academic" | "news" => format!("research/{agent}"),
            "synthesizer" => "synthesis".to_owned(),
            _ => "report".to_owned(),
        }
    };
    let mut done_at_kill: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut unfinished = 0;
    for (n, id) in ids.iter().enumerate() {
        let entries = runtime.block_on(journal(&runs, id));
        let done = completed(&entries);
        if !done.contains("report") {
            unfinished += 1;
        }
        done_at_kill.insert(format!("job{n}"), done);
    }
    assert!(unfinished > 0, "every run finished before the kill");
    let researched = done_at_kill
        .values()
        .filter(|d| d.contains("research"))
        .count();
    assert!(
        researched > 0,
        "no run had its parallel step completed at the kill"
    );

    let mut daemon = serve(&file);
    for id in &ids {
        let record = runtime
            .block_on(runs.wait("acme", id, Duration::from_secs(60)))
            .expect("wait");
        assert_completed(&record);
    }
    let requests = mock.requests();
    let mut calls: HashMap<(String, String), usize> = HashMap::new();
    for (i, request) in requests.iter().enumerate() {
        let (agent, input) = identity(&request.body)
            .unwrap_or_else(|| panic!("unexpected request {}", request.body));
        let step = step_of(&agent);
        if i >= before_kill {
            let done = &done_at_kill[&input];
            assert!(
                !done.contains(&step),
                "{input}: step {step} was completed before the kill and called again"
            );
        }
        *calls.entry((input, step)).or_default() += 1;
    }
    // Every call was made; calls made twice were in flight at the kill.
    assert_eq!(
        calls.len(),
        RUNS * 6,
        "calls per run: classify, 3 research, synthesis, report"
    );
    let repeated = calls.values().filter(|n| **n > 1).count();
    println!(
        "{RUNS} runs: {unfinished} unfinished at the kill ({researched} past research), {before_kill} calls before it, {} after; {repeated} in-flight calls repeated",
        requests.len() - before_kill
    );
    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        daemon.log()
    );
}

/// Journal entries of `kind` for `step`.
fn count(entries: &[Entry], step: &str, kind: EntryKind) -> usize {
    entries
        .iter()
        .filter(|e| e.step == step && e.kind == kind)
        .count()
}

/// The daemons that adopted the run, in order.
fn adopters(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Adopted)
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect()
}

/// Messages in the thread of the call `key` of run `id` (a question and its answer per call).
async fn call_messages(talk: &Conversations, id: &str, key: &str) -> u64 {
    let thread = call_id(id, 0, key);
    talk.messages("acme", &thread, 0, 50)
        .await
        .expect("thread")
        .total as u64
}

#[actix::test]
async fn a_dead_owners_run_is_adopted_by_another_router_once_its_lease_expires() {
    let store = memory();
    let text = WAITING.replace("TIMEOUT", "");
    let lease = Duration::from_millis(600);
    // Router "a" runs the run to its wait, then dies with its actix system: no shutdown, no
    // lease release, its futures dropped mid-wait.
    let (a_store, a_text, a_lease) = (store.clone(), text.clone(), store.clone());
    let id = std::thread::spawn(move || {
        let system = actix::System::new();
        let (id, rig) = system.block_on(async move {
            let options = RouterOptions {
                lease,
                ..options("a")
            };
            let rig = Rig::start_with(&a_text, Path::new("troupe.toml"), a_store, options).await;
            let id = rig
                .router
                .submit(submit("approve", "the plan"))
                .await
                .expect("submit");
            wait_status(rig.router.runs(), &id, RunStatus::Waiting).await;
            (id, rig)
        });
        // From here on "a" renews nothing (its system is no longer driven): its lease
        // expires when its last renewal says, which under load may be sooner than a lease
        // after now. Read before the system goes; tearing its daemon down (worker threads
        // joined) may take a while and must not count.
        // The time before the read: the lease expires no sooner than this plus what was left
        // (a pause between the read and a later clock read would overstate the expiry).
        let before = now_ms();
        let left = futures::executor::block_on(a_lease.ttl(&lease_key(&id)))
            .expect("the lease's ttl")
            .expect("a holds the run's lease");
        let expires = before + u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        drop(system);
        drop(rig);
        (id, expires)
    })
    .join()
    .expect("router a's thread");
    let (id, expires) = id;

    let options = RouterOptions {
        lease,
        ..options("b")
    };
    let b = Rig::start_with(&text, Path::new("troupe.toml"), store, options).await;
    let runs = b.router.runs().clone();
    runs.send_event("acme", &id, "approved", &serde_json::json!("yes"))
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    assert!(
        record.output.unwrap_or_default().contains("DRAFT the plan"),
        "the draft was not read back"
    );
    let entries = journal(&runs, &id).await;
    assert_eq!(adopters(&entries), ["a", "b"]);
    // "b" waited for the lease "a" last renewed to expire (times in whole ms: 1 ms of slack).
    let adopted = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Adopted)
        .map(|e| e.at)
        .nth(1)
        .unwrap_or_default();
    assert!(
        adopted + 1 >= expires,
        "b adopted the run {} ms before a's lease expired",
        expires - adopted
    );
    // The completed draft was neither journaled as started again nor asked again.
    assert_eq!(count(&entries, "draft", EntryKind::Started), 1);
    assert_eq!(call_messages(&b.talk, &id, "draft").await, 2);
    assert_eq!(count(&entries, "publish", EntryKind::Completed), 1);
    b.stop().await;
}

const FLAKY: &str = r#"
[models.m]
provider = "scripted"

[agents.writer]
model = "m"

[workflows.flaky]
[[workflows.flaky.steps]]
name = "draft"
kind = "agent"
agent = "writer"
[[workflows.flaky.steps]]
name = "publish"
kind = "agent"
agent = "writer"
input = "PUBLISH {{steps.draft.output}}"

[workflows.doomed]
[[workflows.doomed.steps]]
name = "draft"
kind = "agent"
agent = "writer"
[[workflows.doomed.steps]]
name = "boom"
kind = "agent"
agent = "writer"
"#;

#[actix::test]
async fn a_panicking_run_restarts_from_its_journal_and_fails_after_three_panics() {
    // `publish` panics the first two times it starts; `boom` every time.
    let publishes = Arc::new(AtomicU32::new(0));
    let seen = publishes.clone();
    let hook = StepHook(Arc::new(move |key: &str| {
        if key == "publish" && seen.fetch_add(1, Ordering::SeqCst) < 2 {
            panic!("injected fault in {key}");
        }
        if key == "boom" {
            panic!("injected fault in {key}");
        }
    }));
    let options = RouterOptions {
        on_step_start: Some(hook),
        ..options("d1")
    };
    let rig = Rig::start_with(FLAKY, Path::new("troupe.toml"), memory(), options).await;
    let (id, record) = rig.run("flaky", "the news").await;
    assert_completed(&record);
    assert_eq!(
        record.output.unwrap_or_default(),
        "You said: PUBLISH You said: the news"
    );
    let entries = journal(rig.router.runs(), &id).await;
    // Started three times by its router, from its journal: the draft was not made again.
    assert_eq!(adopters(&entries), ["d1", "d1", "d1"]);
    assert_eq!(count(&entries, "draft", EntryKind::Started), 1);
    assert_eq!(call_messages(&rig.talk, &id, "draft").await, 2);
    assert_eq!(count(&entries, "publish", EntryKind::Started), 3);
    assert_eq!(publishes.load(Ordering::SeqCst), 3);

    let (id, record) = rig.run("doomed", "the news").await;
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap_or_default();
    assert!(error.contains("panicked 3 times"), "{error}");
    assert!(error.contains("injected fault in boom"), "{error}");
    let entries = journal(rig.router.runs(), &id).await;
    assert_eq!(count(&entries, "boom", EntryKind::Started), 3);
    assert_eq!(count(&entries, "draft", EntryKind::Started), 1);
    // A failed run leaves the index: no router adopts it again.
    assert_eq!(rig.router.running().await, 0);
    rig.stop().await;
}

const BIG: &str = r#"
[models.m]
provider = "scripted"

[agents.writer]
model = "m"

[workflows.big]
[[workflows.big.steps]]
name = "big"
kind = "agent"
agent = "writer"
[[workflows.big.steps]]
name = "again"
kind = "agent"
agent = "writer"
input = "{{input}}"
[[workflows.big.steps]]
name = "approval"
kind = "wait_event"
event = "go"
[[workflows.big.steps]]
name = "use"
kind = "agent"
agent = "writer"
input = "USE {{steps.big.output}}"
"#;

#[actix::test]
async fn a_large_output_is_stored_once_referenced_and_read_back_after_a_restart() {
    let store = memory();
    // About 3.9 KB of distinct words: a cut or reordered read-back shows.
    let text = (0..600)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let big = format!("You said: {text}");
    assert!(big.len() > 2048);
    let rig = Rig::start(BIG, Path::new("troupe.toml"), store.clone(), "d1").await;
    let id = rig
        .router
        .submit(submit("big", &text))
        .await
        .expect("submit");
    wait_status(rig.router.runs(), &id, RunStatus::Waiting).await;
    // The run is left open by a shutdown; another router takes it over and renders `use`
    // from the stored output.
    rig.stop().await;
    let rig = Rig::start(BIG, Path::new("troupe.toml"), store.clone(), "d2").await;
    let runs = rig.router.runs().clone();
    runs.send_event("acme", &id, "go", &serde_json::json!(true))
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    assert_eq!(
        record.output.unwrap_or_default(),
        format!("You said: USE {big}")
    );

    let entries = journal(&runs, &id).await;
    assert_eq!(adopters(&entries), ["d1", "d2"]);
    let stored = |step: &str| -> (String, usize) {
        let entry = entries
            .iter()
            .find(|e| e.step == step && e.kind == EntryKind::Completed)
            .unwrap_or_else(|| panic!("{step} not completed"));
        match &entry.output {
            Some(OutputRef::Stored { hash, len }) => (hash.clone(), *len),
            other => panic!("{step}'s output is not stored apart: {other:?}"),
        }
    };
    let (hash, len) = stored("big");
    assert_eq!(len, big.len());
    // The same text twice is one stored value, referenced twice.
    assert_eq!(stored("again"), (hash.clone(), len));
    let (use_hash, _) = stored("use");
    let prefix = format!("wf:acme:{id}:out:");
    let mut keys = store.keys_with_prefix(&prefix).await.expect("keys");
    keys.sort();
    let mut expected = vec![format!("{prefix}{hash}"), format!("{prefix}{use_hash}")];
    expected.sort();
    assert_eq!(keys, expected);
    let value = store
        .get(&format!("{prefix}{hash}"))
        .await
        .expect("get")
        .unwrap_or_default();
    assert_eq!(value, big.as_bytes());
    rig.stop().await;
}

#[actix::test]
async fn a_cron_with_a_workflow_target_submits_a_run_that_completes() {
    let store = memory();
    // The daemon's own cron scheduler fires it, as configured.
    let text = format!(
        "{FLAKY}\n[crons.digest]\nevery = \"200ms\"\nworkflow = \"flaky\"\ninput = \"the nightly digest\"\n"
    );
    let rig = Rig::start(&text, Path::new("troupe.toml"), store.clone(), "d1").await;
    // The fire's run, found by its record in the cron group.
    let prefix = format!("wf:{CRON_GROUP}:");
    let id = eventually("the cron submitted no run", WAIT, || async {
        let keys = store.keys_with_prefix(&prefix).await.expect("keys");
        keys.iter().find_map(|k| {
            k.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(":meta"))
                .map(str::to_owned)
        })
    })
    .await;
    rig.daemon
        .crons
        .delete("digest")
        .await
        .expect("delete the cron");
    let record = rig
        .router
        .runs()
        .wait(CRON_GROUP, &id, WAIT)
        .await
        .expect("wait");
    assert_completed(&record);
    assert_eq!(record.workflow, "flaky");
    assert_eq!(record.user, "digest");
    assert_eq!(
        record.output.unwrap_or_default(),
        "You said: PUBLISH You said: the nightly digest"
    );
    rig.stop().await;
}

#[actix::test]
async fn another_group_cannot_see_signal_cancel_or_restart_a_run() {
    let text = WAITING.replace("TIMEOUT", "");
    let rig = Rig::start(&text, Path::new("troupe.toml"), memory(), "d1").await;
    let runs = rig.router.runs().clone();
    let id = rig
        .router
        .submit(submit("approve", "the plan"))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    let forbidden = |what: &str, result: Result<(), WorkflowError>| match result {
        Err(WorkflowError::Forbidden { run }) => assert_eq!(run, id, "{what}"),
        other => panic!("{what} as another group: {other:?}"),
    };
    forbidden("status", runs.status("globex", &id).await.map(|_| ()));
    forbidden("record", runs.record("globex", &id).await.map(|_| ()));
    forbidden(
        "journal",
        runs.journal_entries("globex", &id).await.map(|_| ()),
    );
    let data = serde_json::json!("forged");
    forbidden(
        "event",
        runs.send_event("globex", &id, "approved", &data).await,
    );
    forbidden("cancel", runs.cancel("globex", &id).await.map(|_| ()));
    // An unknown run is not found, for any group.
    assert!(matches!(
        runs.status("acme", "r0000000000000000000").await,
        Err(WorkflowError::NotFound { .. })
    ));
    // Neither the event nor the cancel reached the run: it still waits, then completes with
    // its own group's event.
    assert_eq!(
        runs.record("acme", &id).await.expect("record").status,
        RunStatus::Waiting
    );
    runs.send_event("acme", &id, "approved", &serde_json::json!("bob"))
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    assert!(record
        .output
        .unwrap_or_default()
        .contains("approved by \"bob\""));
    // Finished, it still cannot be restarted or read by another group.
    forbidden("restart", runs.restart("globex", &id, "publish").await);
    forbidden("status", runs.status("globex", &id).await.map(|_| ()));
    rig.stop().await;
}

/// A parallel step whose calls run in a pool of one, on a model that fails its first request.
fn pooled_workflow(mock: &MockHandle) -> String {
    format!(
        r#"
[models.mock]
provider = "openai"
base_url = "{}"
model = "mock-model"
idle_timeout = "2s"
max_retries = 0

[agents.web]
model = "mock"

[agents.news]
model = "mock"

[pools.research]
max_parallelism = 1
max_attempts = 3
initial_backoff = "10ms"
max_backoff = "20ms"

[workflows.fan]
[[workflows.fan.steps]]
name = "research"
kind = "parallel"
agents = ["web", "news"]
pool = "research"
"#,
        mock.base_url()
    )
}

#[actix::test]
async fn calls_of_a_pooled_step_are_work_items_bounded_and_retried_by_the_pool() {
    let latency = Duration::from_millis(150);
    let mut mock_config = crate::support::llm::mock_config("faults = [\"500\"]\n");
    mock_config.latency = latency;
    let mock = llm::start(mock_config).await;
    let text = pooled_workflow(&mock);
    let rig = Rig::start(&text, Path::new("troupe.toml"), memory(), "d1").await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = rig
            .router
            .submit(submit("fan", &format!("topic {n}")))
            .await
            .expect("submit");
        ids.push(id);
    }
    for id in &ids {
        let record = rig
            .router
            .runs()
            .wait("acme", id, WAIT)
            .await
            .expect("wait");
        assert_completed(&record);
    }
    let elapsed = started.elapsed();
    // Four calls of two runs, one at a time: the pool's bound holds across runs.
    println!("2 runs x 2 pooled calls of {latency:?}, parallelism 1: {elapsed:?}");
    assert!(
        elapsed >= latency * 4,
        "4 calls through a pool of one took {elapsed:?}: they overlapped"
    );
    // Each call is an item of the pool, keyed by its thread; the failed request was retried
    // by the pool (one more attempt), not by the run.
    let pool = &rig.pools["research"];
    let mut attempts = 0;
    for id in &ids {
        for agent in ["web", "news"] {
            let item = call_id(id, 0, &format!("research/{agent}"));
            let record = pool
                .record(&item)
                .await
                .expect("record")
                .unwrap_or_else(|| panic!("no pool item {item}"));
            assert_eq!(record.status(), WorkStatus::Succeeded, "{item}");
            attempts += record.attempts;
        }
        let entries = journal(rig.router.runs(), id).await;
        assert_eq!(count(&entries, "research/web", EntryKind::Completed), 1);
        assert_eq!(count(&entries, "research/news", EntryKind::Completed), 1);
        assert!(
            entries.iter().all(|e| e.kind != EntryKind::AttemptFailed),
            "the run retried a pooled call itself"
        );
    }
    assert_eq!(attempts, 5, "one call retried once by the pool");
    assert_eq!(mock.requests().len(), 5);
    rig.stop().await;
}

#[actix::test]
async fn a_call_made_again_takes_the_answer_of_its_earlier_pool_item() {
    let mock = llm::start(crate::support::llm::mock_config("")).await;
    let text = pooled_workflow(&mock);
    let store = memory();
    let config = troupe_config::load_str(&text, "troupe.toml", &[]).expect("config");
    let runs = Runs::new(store.clone(), config.workflows.clone());
    let id = runs.submit(submit("fan", "topic")).await.expect("submit");
    // A daemon that adopts nothing runs the `web` call's item, as an adoption that crashed
    // before journaling the call's completion would have left it.
    let options = RouterOptions {
        max_runs: 0,
        ..options("d1")
    };
    let idle = Rig::start_with(&text, Path::new("troupe.toml"), store.clone(), options).await;
    let item = call_id(&id, 0, "research/web");
    let call = Call {
        workflow: "fan".to_owned(),
        run: id.clone(),
        step: "research/web".to_owned(),
        group: "acme".to_owned(),
        user: "alice".to_owned(),
        agent: "web".to_owned(),
        thread: item.clone(),
        input: "EARLIER topic".to_owned(),
        timeout_ms: None,
        retention_ms: None,
    };
    let pool = idle.pools["research"].clone();
    let payload = serde_json::to_value(&call).expect("payload");
    pool.enqueue(WorkSpec::new(WORKFLOW_CALL, payload).id(item.clone()))
        .await
        .expect("enqueue");
    eventually("the earlier item did not end", WAIT, || async {
        pool.status(&item).await.expect("status") == Some(WorkStatus::Succeeded)
    })
    .await;
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(idle.router.running().await, 0);
    idle.stop().await;

    let rig = Rig::start(&text, Path::new("troupe.toml"), store, "d1").await;
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    let output = record.output.unwrap_or_default();
    // `web` answered from the earlier item; only `news` asked the model.
    assert!(
        output.contains("[web]\nYou said: EARLIER topic"),
        "{output}"
    );
    assert!(output.contains("[news]\nYou said: topic"), "{output}");
    assert_eq!(mock.requests().len(), 2);
    rig.stop().await;
}

#[actix::test]
async fn the_threads_of_a_runs_calls_expire_with_the_run_whichever_daemon_ends_it() {
    let prefix = unique_prefix("call-threads-ttl");
    let store = redis(&prefix).await;
    // Short enough that the run outlives a hundredth of it, so its end renews its calls'
    // threads (a younger run's end leaves them as their writes set them).
    let retention = Duration::from_secs(20);
    let with_retention = |owner: &str| RouterOptions {
        retention,
        ..options(owner)
    };
    // d1 makes the first two calls, then stops while the run waits; d2 adopts it, makes the
    // last call and ends it. d2 never made the first two calls.
    let rig = Rig::start_with(
        BIG,
        Path::new("troupe.toml"),
        store.clone(),
        with_retention("d1"),
    )
    .await;
    let runs = rig.router.runs().clone();
    let id = rig
        .router
        .submit(submit("big", "hello"))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    let written = std::time::Instant::now();
    rig.stop().await;
    let rig = Rig::start_with(
        BIG,
        Path::new("troupe.toml"),
        store.clone(),
        with_retention("d2"),
    )
    .await;
    // Long enough after d1's calls that an unrenewed thread would show it.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(written.elapsed())).await;
    runs.send_event("acme", &id, "go", &serde_json::json!(true))
        .await
        .expect("event");
    assert_completed(&runs.wait("acme", &id, WAIT).await.expect("wait"));
    let since = written.elapsed();
    for step in ["big", "again", "use"] {
        let thread = call_id(&id, 0, step);
        // The call's thread is one value (see `thread_store`).
        let key = format!("thread:acme:{thread}:once");
        let ttl = store.ttl(&key).await.expect("ttl");
        assert!(
            ttl.is_some_and(
                |ttl| ttl <= retention && ttl + since > retention + Duration::from_millis(500)
            ),
            "{key} expires with the run (renewed by its end, {since:?} after d1's calls, to \
             {retention:?}), not after the thread retention: {ttl:?}"
        );
    }
    rig.stop().await;
}

/// A cancel flag and an event are written with an expiry of their own: one written just as
/// the run ended (its status read before the end's batch) is not kept for good.
#[actix::test]
async fn a_runs_cancel_flag_and_events_expire_whenever_they_are_written() {
    let prefix = unique_prefix("signal-ttl");
    let store = redis(&prefix).await;
    let rig = Rig::start(BIG, Path::new("troupe.toml"), store.clone(), "d1").await;
    let runs = rig.router.runs().clone();
    let id = rig
        .router
        .submit(submit("big", "hello"))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    runs.send_event("acme", &id, "unrelated", &serde_json::json!(1))
        .await
        .expect("event");
    let ttl = store
        .ttl(&format!("wf:acme:{id}:events"))
        .await
        .expect("ttl");
    assert!(
        ttl.is_some_and(|t| t <= troupe_workflow::runs::SIGNAL_TTL),
        "events: {ttl:?}"
    );
    runs.cancel("acme", &id).await.expect("cancel");
    // Read before the run ends (canceled, its end sets the run's retention on it).
    let ttl = store
        .ttl(&format!("wf:acme:{id}:cancel"))
        .await
        .expect("ttl");
    assert!(ttl.is_some(), "cancel flag: {ttl:?}");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_eq!(record.status, RunStatus::Canceled);
    rig.stop().await;
}

#[actix::test]
async fn a_restarted_run_makes_the_keys_it_needs_permanent_again() {
    let prefix = unique_prefix("restart-ttl");
    let store = redis(&prefix).await;
    let text = (0..600)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let big = format!("You said: {text}");
    let rig = Rig::start(BIG, Path::new("troupe.toml"), store.clone(), "d1").await;
    let runs = rig.router.runs().clone();
    let id = rig
        .router
        .submit(submit("big", &text))
        .await
        .expect("submit");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    runs.send_event("acme", &id, "go", &serde_json::json!(true))
        .await
        .expect("event");
    assert_completed(&runs.wait("acme", &id, WAIT).await.expect("wait"));
    // The ended run's keys are about to expire (its retention nearly over).
    let mut keys = store
        .keys_with_prefix(&format!("wf:acme:{id}:"))
        .await
        .expect("keys");
    keys.push(format!("wf-group:{id}"));
    for key in &keys {
        assert!(
            store.ttl(key).await.expect("ttl").is_some(),
            "{key} expires"
        );
        store
            .expire(key, Duration::from_millis(1500))
            .await
            .expect("expire");
    }
    runs.restart("acme", &id, "approval")
        .await
        .expect("restart");
    wait_status(&runs, &id, RunStatus::Waiting).await;
    for key in &keys {
        let needed = !key.ends_with(":events") && !key.ends_with(":cancel");
        if needed && store.exists(key).await.expect("exists") {
            assert_eq!(
                store.ttl(key).await.expect("ttl"),
                None,
                "{key} still expires"
            );
        }
    }
    // Past the old expiry, another daemon loads the run (snapshot, journal, the big output
    // of a step before the restart) and finishes it.
    rig.stop().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let rig = Rig::start(BIG, Path::new("troupe.toml"), store.clone(), "d2").await;
    runs.send_event("acme", &id, "go", &serde_json::json!(true))
        .await
        .expect("event");
    let record = runs.wait("acme", &id, WAIT).await.expect("wait");
    assert_completed(&record);
    assert_eq!(
        record.output.unwrap_or_default(),
        format!("You said: USE {big}")
    );
    rig.stop().await;
}

const CLASH: &str = r#"
[models.m]
provider = "scripted"

[agents.b]
model = "m"

[agents.c]
model = "m"

[pools.p]
max_parallelism = 2

[workflows.clash]
[[workflows.clash.steps]]
name = "a"
kind = "parallel"
agents = ["b", "c"]
pool = "p"
[[workflows.clash.steps]]
name = "a-b"
kind = "agent"
agent = "c"
pool = "p"
input = "AGAIN {{input}}"
"#;

#[actix::test]
async fn a_branch_and_a_step_named_like_it_make_different_calls() {
    let rig = Rig::start(CLASH, Path::new("troupe.toml"), memory(), "d1").await;
    let (id, record) = rig.run("clash", "topic").await;
    assert_completed(&record);
    // The step `a-b` is its own call, not the branch `a/b`'s answer taken again.
    assert_eq!(record.output.as_deref(), Some("You said: AGAIN topic"));
    let branch = call_id(&id, 0, "a/b");
    let step = call_id(&id, 0, "a-b");
    assert_ne!(branch, step);
    let pool = &rig.pools["p"];
    for item in [&branch, &step] {
        let found = pool.record(item).await.expect("record");
        assert!(found.is_some(), "no pool item {item}");
    }
    rig.stop().await;
}

#[test]
fn troupe_check_refuses_names_that_make_call_ids_too_long() {
    let text = CLASH.replace("\"a-b\"", &format!("\"{}\"", "x".repeat(93)));
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("check")
        .arg(file.path())
        .output()
        .expect("run troupe check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("makes call keys of 93 characters, more than 92"),
        "{stderr}"
    );
}
