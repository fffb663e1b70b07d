//! Unit tests of the agent loop: a flood of tool calls runs the first ones, bounded, and refuses
//! the rest.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use troupe_runtime::store::MemoryStore;
use troupe_tools::{Tool, ToolOutput};

use super::*;
use crate::message::Role;
use crate::model::ScriptedModel;

/// A tool that meets `batch` calls at a barrier, counting the calls running at once.
struct Gate {
    barrier: tokio::sync::Barrier,
    running: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl Tool for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn description(&self) -> &str {
        "waits for its batch"
    }

    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }

    async fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        // Only a full batch passes: fewer at once would never finish (the test's timeout).
        self.barrier.wait().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(ToolOutput::text("ran"))
    }
}

fn spec(store: Arc<dyn Store>, gate: Arc<Gate>, agent_keys: &str) -> AgentSpec {
    let text = format!(
        "[models.m]\nprovider = \"scripted\"\n[tools.gate]\nkind = \"current_time\"\n\
         [agents.a]\nmodel = \"m\"\ntools = [\"gate\"]\n{agent_keys}"
    );
    let config = match troupe_config::load_str(&text, "t.toml", &[]) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let mut tools = ToolRegistry::new();
    let registered = tools.register(gate, std::time::Duration::from_secs(10), false);
    assert!(registered.is_ok());
    let model = match ScriptedModel::new("m", &config.models["m"]) {
        Ok(model) => model,
        Err(err) => panic!("{err}"),
    };
    AgentSpec {
        name: "a".into(),
        settings: config.agents["a"].clone(),
        model: Arc::new(model),
        prices: Prices::default(),
        tools: Arc::new(tools),
        policies: Policies::new(
            store.clone(),
            crate::usage::UsageLedger::new(store.clone(), Default::default()),
            troupe_runtime::limit::Limiters::new(&config.limits, store.clone())
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        store,
        memory: None,
    }
}

#[tokio::test]
async fn a_flood_of_tool_calls_runs_the_first_ones_bounded_and_refuses_the_rest() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gate = Arc::new(Gate {
        barrier: tokio::sync::Barrier::new(4),
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
    });
    let spec = spec(
        store.clone(),
        gate.clone(),
        "max_tool_calls = 40\ntool_concurrency = 4\n",
    );
    let thread = ThreadId::new("g", "t").unwrap_or_else(|e| panic!("{e}"));
    let calls: Vec<Decided> = (0..50)
        .map(|i| Decided {
            call: ToolCall {
                id: format!("call_{i}"),
                name: "gate".into(),
                arguments: "{}".into(),
            },
            approved: true,
        })
        .collect();
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        execute(&spec, &thread, "u", calls),
    )
    .await
    .unwrap_or_else(|_| panic!("the calls never finished: fewer than 4 ran at once"));

    // Every call answered, in order; the first 40 ran, 4 at a time, the rest refused.
    assert_eq!(results.len(), 50);
    for (i, message) in results.iter().enumerate() {
        assert_eq!(message.role, Role::Tool);
        assert_eq!(
            message.tool_call_id.as_deref(),
            Some(format!("call_{i}").as_str())
        );
        let expected = if i < 40 {
            "ran"
        } else {
            "refused: more than max_tool_calls = 40 tool calls in one response"
        };
        assert_eq!(message.content, expected, "call {i}");
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 40);
    assert_eq!(gate.peak.load(Ordering::SeqCst), 4);

    // Audited: one event per call run, one for the refused flood.
    let events = crate::events::EventLog::new(store)
        .read("g", "0", 1000)
        .await
        .unwrap_or_default();
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|e| {
            e.field("kind")
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "tool_call").count(), 40);
    assert_eq!(kinds.iter().filter(|k| *k == "tool_denied").count(), 1);
    let denied = events
        .iter()
        .find(|e| e.field("kind") == Some(b"tool_denied".as_slice()))
        .and_then(|e| e.field("data"))
        .and_then(|data| serde_json::from_slice::<serde_json::Value>(data).ok())
        .unwrap_or_default();
    assert_eq!(denied["refused"], 10);
    assert_eq!(denied["max_tool_calls"], 40);
    assert_eq!(denied["calls"][0]["call_id"], "call_40");
}
