//! `troupe demo`: the main job on embedded defaults (memory store, the scripted model, no
//! network, no API key).
//!
//! It starts the real actor tree on the embedded config and talks to an agent through it:
//! the agent answers, calls a tool, streams its answer into a delta stream, every message is
//! persisted by thread actors, idle threads are passivated and re-activated from the store,
//! groups cannot read each other's threads, and usage is accounted. Each step checks its own
//! outcome, so the demo fails loudly if the runtime misbehaves.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use troupe_agents::{AgentError, Ask, Conversations, TurnOutcome, TurnStatus};
use troupe_runtime::store::Store;
use troupe_runtime::Exit;

use crate::serve::open_store;
use crate::tree::Tree;

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
        let tree = Tree::start(&config, store.clone())?;
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
        Ok::<_, anyhow::Error>(())
    });
    actix::System::current().stop();
    result.context("demo failed")
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
