//! Workflows end to end: the research and support examples on the scripted model and over
//! HTTP to the mock server, parallel branches overlapping, cancel, restart from a step, event
//! waits and their timeout, a changed definition, two routers sharing runs on Redis, and
//! daemon processes killed while runs are in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_agents::workflow::{
    Entry, EntryKind, Router, RouterOptions, RunRecord, RunStatus, Runs, Submit,
};
use troupe_agents::{build_agents, Conversations, UsageLedger};
use troupe_runtime::limit::Limiters;
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{Exit, Intensity, Life, RegistryOptions, SupervisorSpec};

use crate::support::daemon::Daemon;
use crate::support::llm::{self, MockConfig, MockHandle};
use crate::support::redis::{redis_url, unique_prefix};

/// Upper bound for a run to end.
const WAIT: Duration = Duration::from_secs(30);

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

/// Agents, threads and a router over a store: the workflow part of the daemon's tree.
struct Rig {
    router: Router,
    talk: Conversations,
    life: Life,
}

impl Rig {
    async fn start(text: &str, origin: &Path, store: Arc<dyn Store>, owner: &str) -> Rig {
        let config = troupe_config::load_str(text, &origin.display().to_string(), &[])
            .unwrap_or_else(|err| panic!("{err}"));
        let usage = UsageLedger::new(store.clone(), BTreeMap::new());
        let limiters = Limiters::new(&config.limits, store.clone()).expect("limits");
        let (agents, directory) = build_agents(
            &config,
            store.clone(),
            usage.clone(),
            limiters.clone(),
            Intensity::default(),
        )
        .expect("agents");
        let talk = Conversations::new(store.clone(), directory, usage, RegistryOptions::default());
        let mut root = SupervisorSpec::new("root", Intensity::default());
        root.supervisor(agents);
        let options = RouterOptions {
            owner: owner.to_owned(),
            lease: Duration::from_secs(2),
            scan: Duration::from_millis(50),
            event_poll: Duration::from_millis(20),
            ..RouterOptions::default()
        };
        let router = Router::child_of(
            &mut root,
            store,
            talk.clone(),
            Some(limiters),
            &config,
            options,
            Intensity::default(),
        );
        let (_root, life) = root.start();
        Rig { router, talk, life }
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
        self.router.shutdown(Duration::from_secs(2)).await;
        self.talk.shutdown(Duration::from_secs(2)).await;
        assert_eq!(
            self.life.shutdown(Duration::from_secs(2)).await,
            Exit::Stopped
        );
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
    let thread = format!("wf-{id}-research-web");
    let page = rig
        .talk
        .messages("acme", &thread, 0, 10)
        .await
        .expect("thread");
    assert_eq!(page.total, 2);
    rig.stop().await;

    let support = std::fs::read_to_string(example("support.toml")).expect("read");
    let rig = Rig::start(&support, &example("support.toml"), memory(), "d1").await;
    let (id, record) = rig.run("support", "My router keeps dropping Wi-Fi").await;
    assert_completed(&record);
    assert!(record
        .output
        .clone()
        .unwrap_or_default()
        .ends_with("(final)"));
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
    assert_eq!(mock.requests().len(), 7);
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
        Err(troupe_agents::workflow::WorkflowError::NotFound { .. })
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
    let deadline = Instant::now() + WAIT;
    loop {
        let record = runs.record("acme", id).await.expect("record");
        if record.status == status {
            return;
        }
        assert!(Instant::now() < deadline, "run stayed {:?}", record.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    assert!(
        runs.status("globex", &id).await.is_err(),
        "another group sees the run"
    );
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
    let deadline = Instant::now() + WAIT;
    // Kill it once most research calls have answered: some runs then have their research
    // completed, others have calls in flight.
    while mock.requests().len() < RUNS * 4 + RUNS / 2 {
        assert!(
            Instant::now() < deadline,
            "the daemon made only {} calls",
            mock.requests().len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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
