//! The spans of a task end to end: a task published to the ingress runs an agent that calls a
//! tool, over the mock model server (whose first answer is a 500, so the first model call is
//! retried). Every model attempt and tool call must sit in the tree
//! `task → thread.turn → agent.run → …` across the ingress, thread and agent mailboxes, with
//! the fixed field names of `troupe_runtime::trace`.
//!
//! Its own test binary: the capturing subscriber is process-wide (actors and their futures
//! run wherever actix puts them), and a callsite's interest is cached process-wide, so no
//! other test may register callsites while this one captures.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::Actor;
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use troupe_config::IngressSettings;
use troupe_ingress::wire::Status;
use troupe_ingress::{IngressActor, TaskResult};
use troupe_runtime::store::Store;
use troupe_runtime::trace::{self, span};

use llm::{mock_config, Fault, MockHandle};
use troupe::Daemon;
use troupe_testkit::{eventually, llm, redis, WAIT};

/// A span's name and the fields recorded on it so far.
#[derive(Debug, Clone)]
struct Recorded {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

impl Recorded {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{} has no field {name}: {self:?}", self.name))
    }
}

/// A span as it closed: itself first, then its ancestors, nearest first.
#[derive(Debug, Clone)]
struct Closed(Vec<Recorded>);

impl Closed {
    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.name).collect()
    }

    /// The span (or ancestor) called `name`.
    fn get(&self, name: &str) -> &Recorded {
        self.0
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.names()))
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Keeps every closed span with its ancestry.
#[derive(Clone, Default)]
struct Capture {
    closed: Arc<Mutex<Vec<Closed>>>,
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let chain = span
            .scope()
            .map(|s| Recorded {
                name: s.name(),
                fields: s
                    .extensions()
                    .get::<Fields>()
                    .map(|f| f.0.clone())
                    .unwrap_or_default(),
            })
            .collect();
        self.closed.lock().push(Closed(chain));
    }
}

/// The process-wide capture, installed once before any span is created.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        capture
    })
}

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

[tools.current_time]
kind = "current_time"

[agents.helper]
model = "mock"
tools = ["current_time"]
"#,
        url = mock.base_url()
    )
}

fn settings() -> IngressSettings {
    IngressSettings {
        block: Duration::from_millis(100),
        ..IngressSettings::default()
    }
}

/// Waits for the result of task `id` on the results stream.
async fn result_of(store: &Arc<dyn Store>, id: &str) -> TaskResult {
    eventually(format!("no result for {id}"), WAIT, || async {
        let entries = store
            .xrange(&settings().results, "-", "+", None)
            .await
            .expect("xrange");
        entries.iter().find_map(|e| {
            let result: TaskResult = serde_json::from_slice(e.field("result")?).ok()?;
            (result.task_id == id).then_some(result)
        })
    })
    .await
}

#[actix::test]
async fn model_attempts_and_tool_calls_are_traced_under_their_task() {
    let capture = capture();
    let mock = llm::start(mock_config("")).await;
    mock.push_faults([Fault::ServerError]);
    let store = redis::store(&redis::unique_prefix("spans")).await;
    let config = troupe_config::load_str(&config_text(&mock), "troupe.toml", &[]).expect("config");
    // The test runs an ingress consumer of its own (below).
    let daemon = Daemon::builder(&config, store.clone())
        .ingress(false)
        .start()
        .expect("daemon");
    IngressActor::new(
        store.clone(),
        daemon.conversations.clone(),
        None,
        BTreeSet::new(),
        settings(),
        "spans-1".to_owned(),
    )
    .start();
    let task = serde_json::json!({"id": "t-42", "agent": "helper", "group": "acme",
        "user": "alice", "input": "What is the current_time?"});
    store
        .xadd(
            &settings().stream,
            &[("task", task.to_string().as_bytes())],
            None,
        )
        .await
        .expect("xadd");

    let result = result_of(&store, "t-42").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let thread = result.thread.expect("the task's thread");

    // The model and tool spans closed before the result was written.
    let closed = capture.closed.lock().clone();
    let of =
        |name: &str| -> Vec<&Closed> { closed.iter().filter(|c| c.0[0].name == name).collect() };
    let attempts = of(span::MODEL_ATTEMPT);
    let tools = of(span::TOOL);
    assert_eq!(tools.len(), 1, "{closed:#?}");
    // The first call failed once (500) and was retried; the second answered at once.
    let mut calls: Vec<(&str, &str)> = attempts
        .iter()
        .map(|c| {
            (
                c.get(span::MODEL_CALL).field("call"),
                c.0[0].field(trace::ATTEMPT),
            )
        })
        .collect();
    calls.sort_unstable();
    assert_eq!(calls, [("1", "1"), ("1", "2"), ("2", "1")]);

    for traced in attempts.iter().chain(&tools) {
        let expected: &[&str] = if traced.0[0].name == span::TOOL {
            &[span::TOOL, span::AGENT_RUN, span::THREAD_TURN, span::TASK]
        } else {
            &[
                span::MODEL_ATTEMPT,
                span::MODEL_CALL,
                span::AGENT_RUN,
                span::THREAD_TURN,
                span::TASK,
            ]
        };
        assert_eq!(traced.names(), expected);

        let task = traced.get(span::TASK);
        assert_eq!(task.field(trace::TASK), "t-42");
        assert_eq!(task.field(trace::GROUP), "acme");
        assert_eq!(task.field(trace::AGENT), "helper");
        let turn = traced.get(span::THREAD_TURN);
        assert_eq!(turn.field(trace::GROUP), "acme");
        assert_eq!(turn.field(trace::THREAD), thread);
        assert_eq!(turn.field(trace::AGENT), "helper");
        let run = traced.get(span::AGENT_RUN);
        assert_eq!(run.field(trace::AGENT), "helper");
        assert_eq!(run.field(trace::THREAD), thread);

        if traced.0[0].name == span::TOOL {
            let tool = &traced.0[0];
            assert_eq!(tool.field(trace::TOOL), "current_time");
            assert_eq!(tool.field(trace::AGENT), "helper");
            assert_eq!(tool.field(trace::THREAD), thread);
        } else {
            assert_eq!(traced.0[0].field(trace::MODEL), "mock");
            assert_eq!(traced.get(span::MODEL_CALL).field(trace::MODEL), "mock");
        }

        // Only the documented field names.
        for recorded in &traced.0 {
            for name in recorded.fields.keys() {
                assert!(
                    trace::FIELDS.contains(&name.as_str()) || trace::LOCAL.contains(&name.as_str()),
                    "{} has the undocumented field {name}",
                    recorded.name
                );
            }
        }
    }
    daemon.shutdown(Duration::from_secs(6)).await;
}
