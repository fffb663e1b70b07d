//! `troupe demo`: the main job on embedded defaults (memory store, no network, no API key).
//!
//! It starts the real actor tree on the embedded config and drives conversation threads
//! through it: messages are persisted by thread actors, idle threads are passivated, and the
//! next message re-activates them from the store. Each step checks its own outcome, so the
//! demo fails loudly if the runtime misbehaves.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use troupe_agents::{AppendMessages, ChatMessage, ReadHistory, Role, ThreadId};
use troupe_runtime::Exit;

use crate::serve::open_store;
use crate::tree::Tree;

const CONVERSATIONS: [(&str, &str, &[&str]); 3] = [
    (
        "acme",
        "support-1",
        &["My invoice is wrong.", "It lists 3 seats, we have 2."],
    ),
    ("acme", "support-2", &["How do I rotate an API key?"]),
    (
        "globex",
        "support-1",
        &["Is there an on-premise edition?", "We need SSO too."],
    ),
];

/// Runs the demo and prints what happened.
pub fn run() -> anyhow::Result<()> {
    let mut config = troupe_config::embedded();
    // Passivate quickly so the demo shows threads leaving memory and coming back.
    config.daemon.passivate_after = Duration::from_millis(200);
    let system = actix::System::new();
    let result = system.block_on(async move {
        let started = Instant::now();
        println!("troupe demo: embedded defaults (memory store, no network, no API key)");
        println!("{}", config.summary());
        let store = open_store(&config.store).await?;
        let tree = Tree::start(&config, store);
        println!("\n[tree] root -> infra -> store-health; threads registry on worker arbiters");

        let instructions = config
            .agents
            .values()
            .next()
            .map(|agent| agent.instructions.clone())
            .unwrap_or_default();
        let mut appends = Vec::new();
        for (group, thread, lines) in CONVERSATIONS {
            let id = ThreadId::new(group, thread)?;
            let mut messages = vec![ChatMessage::new(Role::System, instructions.clone())];
            messages.extend(lines.iter().map(|line| ChatMessage::new(Role::User, *line)));
            let threads = tree.threads.clone();
            appends.push(async move {
                let total = threads.send(&id, AppendMessages(messages)).await??;
                Ok::<_, anyhow::Error>((id, total))
            });
        }
        for outcome in futures::future::join_all(appends).await {
            let (id, total) = outcome?;
            println!("[thread {id}] persisted {total} messages");
        }
        let stats = tree.threads.stats();
        println!(
            "[threads] {} live, {} activations",
            stats.active, stats.activations
        );

        let deadline = Instant::now() + Duration::from_secs(5);
        while tree.threads.stats().active > 0 {
            ensure!(
                Instant::now() < deadline,
                "idle threads were not passivated"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = tree.threads.stats();
        println!(
            "[threads] idle for {:?}: {} passivated, {} live",
            config.daemon.passivate_after, stats.passivations, stats.active
        );

        for (group, thread, lines) in CONVERSATIONS {
            let id = ThreadId::new(group, thread)?;
            let history = tree.threads.send(&id, ReadHistory(10)).await??;
            ensure!(
                history.total == lines.len() as u64 + 1,
                "thread {id} lost messages"
            );
            let last = history
                .messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or("");
            println!(
                "[thread {id}] re-activated from the store: {} messages, last: {last:?}",
                history.total
            );
        }
        let stats = tree.threads.stats();
        ensure!(
            stats.activations == 2 * CONVERSATIONS.len() as u64,
            "unexpected activations"
        );
        println!(
            "[threads] {} activations in all ({} re-activations from the store)",
            stats.activations,
            CONVERSATIONS.len()
        );
        ensure!(tree.readiness.is_ready(), "the daemon should be ready");

        let exit = tree.shutdown(Duration::from_secs(5)).await;
        ensure!(exit == Exit::Stopped, "shutdown failed: {exit:?}");
        println!(
            "[tree] shut down cleanly (children in reverse start order) in {:?} total",
            started.elapsed()
        );
        Ok::<_, anyhow::Error>(())
    });
    actix::System::current().stop();
    result.context("demo failed")
}
