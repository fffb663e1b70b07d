//! `troupe demo`: the main job on embedded defaults (memory store, the scripted model, no
//! network, no API key).
//!
//! It starts the real actor tree on the embedded config and talks to an agent through it:
//! the agent answers, calls a tool, streams its answer into a delta stream, every message is
//! persisted by thread actors, idle threads are passivated and re-activated from the store,
//! groups cannot read each other's threads, and usage is accounted. Then it runs the research
//! workflow of `examples/research.toml` on its scripted rules: classify, three research agents
//! in parallel, synthesis, the report by the writer the classification chose, archive — every
//! step journaled. Each step checks its own outcome, so the demo fails loudly if the runtime
//! misbehaves.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use troupe_agents::{AgentError, Ask, Conversations, TurnOutcome, TurnStatus};
use troupe_runtime::store::Store;
use troupe_runtime::Exit;
use troupe_workflow::{EntryKind, RunStatus, Submit};

use crate::serve::open_store;
use troupe::Daemon;

/// Runs the demo and prints what happened.
pub fn run() -> anyhow::Result<()> {
    let mut config = troupe_config::embedded();
    // Passivate quickly so the demo shows threads leaving memory and coming back.
    config.daemon.passivate_after = Duration::from_millis(200);
    let system = actix::System::new();
    let result = system.block_on(async move {
        let started = Instant::now();
        println!("troupe demo: embedded defaults (memory store, scripted model, no network, no API key)");
        println!("{}\n", config.summary());
        let store = open_store(&config.store).await?;
        let tree = Daemon::builder(&config, store.clone()).start()?;
        let talk = &tree.conversations;
        let agent = config.agents.keys().next().cloned().context("the embedded config has an agent")?;
        println!("[tree] root -> infra (store-health), agents ({agent}); threads registry on worker arbiters");

        // 1. A question that makes the agent call a tool, streamed.
        let first = ask(talk, &store, &agent, "acme", "alice", None, "What is the current_time in UTC?", true).await?;
        let thread = first.thread.clone();
        let page = talk.messages("acme", &thread, 0, 100).await?;
        let tool_calls: usize = page.messages.iter().map(|m| m.message.tool_calls.len()).sum();
        ensure!(tool_calls == 1, "the agent should have called one tool, got {tool_calls}");
        for m in &page.messages {
            let text = if m.message.tool_calls.is_empty() {
                m.message.content.clone()
            } else {
                m.message.tool_calls.iter().map(|c| format!("calls {}({})", c.name, c.arguments)).collect::<Vec<_>>().join(", ")
            };
            println!("  [{}] {:?}: {text}", m.seq, m.message.role);
        }

        // 2. The conversation continues in the same thread.
        let second = ask(talk, &store, &agent, "acme", "alice", Some(&thread), "Thanks! And what did I ask before?", false).await?;
        ensure!(second.thread == thread, "the turn should continue the thread");

        // 3. Another tenant, and isolation between tenants.
        let other = ask(talk, &store, &agent, "globex", "bob", None, "Hello from globex", false).await?;
        match talk.messages("globex", &thread, 0, 10).await {
            Err(AgentError::Forbidden { .. }) => println!("[isolation] globex reading acme's thread {thread}: forbidden"),
            other => bail!("a group read another group's thread: {other:?}"),
        }
        ensure!(talk.list_threads("acme", None, 0, 10).await?.threads.len() == 1, "acme sees one thread");

        // 4. Idle threads leave memory; the next message re-activates them from the store.
        let deadline = Instant::now() + Duration::from_secs(5);
        while talk.thread_stats().active > 0 {
            ensure!(Instant::now() < deadline, "idle threads were not passivated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = talk.thread_stats();
        println!("[threads] idle for {:?}: {} passivated, none live", config.daemon.passivate_after, before.passivations);
        let page = talk.messages("acme", &thread, 0, 100).await?;
        ensure!(page.total == 6, "acme's thread should hold 6 messages, has {}", page.total);
        println!("[threads] {thread} re-activated from the store with {} messages", page.total);
        ensure!(other.thread != thread);

        // 5. Usage, by group.
        let today = troupe_agents::usage::day_of(now_ms());
        for group in ["acme", "globex"] {
            let report = talk.usage(group, today, today).await?;
            println!(
                "[usage] {group}: {} model calls, {} input + {} output tokens, ${:.6}",
                report.total.calls, report.total.input_tokens, report.total.output_tokens, report.total.cost
            );
        }
        let events = talk.events("acme", "0", 1000).await?;
        println!("[events] acme: {} audit events", events.len());
        ensure!(tree.readiness.is_ready(), "the daemon should be ready");

        let exit = tree.shutdown(Duration::from_secs(5)).await;
        ensure!(exit == Exit::Stopped, "shutdown failed: {exit:?}");
        println!("[tree] shut down cleanly (children in reverse start order) in {:?} total", started.elapsed());

        // 6. A durable workflow: the research pipeline.
        research().await?;
        Ok::<_, anyhow::Error>(())
    });
    actix::System::current().stop();
    result.context("demo failed")
}

/// The research example and its scripted rules, built in so the demo runs from anywhere.
pub(crate) const RESEARCH: &str = include_str!("../examples/research.toml");
pub(crate) const RESEARCH_RULES: &str = include_str!("../examples/scripted/research.toml");

/// Runs the research workflow on its own tree (the example's config, memory store) and prints
/// its journal step by step.
async fn research() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("troupe-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("scripted")).context("creating the demo's temp dir")?;
    std::fs::write(dir.join("scripted").join("research.toml"), RESEARCH_RULES)
        .context("writing the demo's rules")?;
    let result = research_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn research_in(dir: &std::path::Path) -> anyhow::Result<()> {
    let origin = dir.join("research.toml").display().to_string();
    let config =
        troupe_config::load_str(RESEARCH, &origin, &[]).map_err(|err| anyhow::anyhow!("{err}"))?;
    let store = open_store(&config.store).await?;
    let tree = Daemon::builder(&config, store).start()?;
    let question = "How do async runtimes schedule tasks?";
    let submit = Submit {
        workflow: "research".to_owned(),
        group: "acme".to_owned(),
        user: "alice".to_owned(),
        input: question.to_owned(),
    };
    let id = tree.router.submit(submit).await?;
    println!("\n[workflow] research run {id} for acme/alice: {question:?}");
    let runs = tree.router.runs().clone();
    let record = runs.wait("acme", &id, Duration::from_secs(30)).await?;
    ensure!(
        record.status == RunStatus::Completed,
        "the research run ended {:?}: {:?}",
        record.status,
        record.error
    );
    let entries = runs.journal_entries("acme", &id).await?;
    let at = |step: &str, kind: EntryKind| {
        entries
            .iter()
            .find(|e| e.step == step && e.kind == kind)
            .map(|e| e.at)
    };
    let took = |step: &str| match (at(step, EntryKind::Started), at(step, EntryKind::Completed)) {
        (Some(start), Some(end)) => end.saturating_sub(start),
        _ => 0,
    };
    for step in ["classify", "research", "synthesis", "report", "save"] {
        let detail = match step {
            "research" => format!(
                "web, academic and news in parallel ({} ms, {} ms, {} ms)",
                took("research/web"),
                took("research/academic"),
                took("research/news")
            ),
            "report" => entries
                .iter()
                .find(|e| e.step == "report" && e.kind == EntryKind::Note)
                .and_then(|e| e.detail.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let line = format!("  {step:<10} completed in {:>3} ms {detail}", took(step));
        println!("{}", line.trim_end());
    }
    let output = record.output.unwrap_or_default();
    println!(
        "[workflow] completed, {} journal entries; output: {}",
        entries.len(),
        output.lines().last().unwrap_or("")
    );
    let exit = tree.shutdown(Duration::from_secs(5)).await;
    ensure!(
        exit == Exit::Stopped,
        "workflow tree shutdown failed: {exit:?}"
    );
    Ok(())
}

/// Asks the agent, printing the streamed deltas as they are read back from the store.
#[allow(clippy::too_many_arguments)]
async fn ask(
    talk: &Conversations,
    store: &std::sync::Arc<dyn Store>,
    agent: &str,
    group: &str,
    user: &str,
    thread: Option<&str>,
    input: &str,
    stream: bool,
) -> anyhow::Result<TurnOutcome> {
    println!("\n[{group}/{user}] {input}");
    let outcome = talk
        .ask(Ask {
            group: group.to_owned(),
            user: user.to_owned(),
            agent: agent.to_owned(),
            thread: thread.map(str::to_owned),
            input: input.to_owned(),
            stream,
            started: None,
        })
        .await?;
    ensure!(
        outcome.status == TurnStatus::Completed,
        "turn did not complete: {:?}",
        outcome.status
    );
    if let Some(key) = &outcome.delta_stream {
        let entries = store.xrange(key, "-", "+", None).await?;
        let streamed: String = entries
            .iter()
            .filter_map(|e| e.field("delta"))
            .map(String::from_utf8_lossy)
            .collect();
        ensure!(
            streamed == outcome.answer,
            "the streamed deltas should add up to the answer"
        );
        println!("  (streamed {} delta entries to {key})", entries.len());
    }
    println!(
        "  -> {agent} ({} model calls, {} tokens) in thread {}: {}",
        outcome.model_calls,
        outcome.usage.input_tokens + outcome.usage.output_tokens,
        outcome.thread,
        outcome.answer
    );
    Ok(outcome)
}

use troupe_runtime::clock::now_ms;
