//! `troupe::Generations`: a config replaced while the daemon runs (what SIGHUP does in `troupe
//! serve`), in process on the memory store.

use std::sync::Arc;
use std::time::Duration;

use troupe::{Generations, ReloadError};
use troupe_agents::{AgentError, Ask, TurnStatus};
use troupe_runtime::store::{MemoryStore, Store};
use troupe_runtime::{Exit, Readiness};

const BASE: &str = r#"
[daemon]
name = "gen"

[models.m]
provider = "scripted"

[agents.echo]
model = "m"
"#;

fn config(text: &str) -> troupe_config::Config {
    troupe_config::load_str(text, "troupe.toml", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn ask(agent: &str, input: &str) -> Ask {
    Ask {
        group: "acme".into(),
        user: "ann".into(),
        agent: agent.into(),
        input: input.into(),
        ..Ask::default()
    }
}

#[actix::test]
async fn a_reload_starts_the_next_generation_on_the_new_config_and_refuses_restart_only_changes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut daemon =
        Generations::start(config(BASE), store, Readiness::default()).expect("generation 0");
    assert_eq!(daemon.generation(), 0);
    let refused = daemon.daemon().conversations.ask(ask("other", "hi")).await;
    assert!(
        matches!(refused, Err(AgentError::NotFound { what: "agent", .. })),
        "{refused:?}"
    );

    // A new agent: the next generation serves it, and the threads of the first carry on.
    let first = daemon
        .daemon()
        .conversations
        .ask(ask("echo", "before the reload"))
        .await
        .expect("a turn on generation 0");
    let next = format!("{BASE}\n[agents.other]\nmodel = \"m\"\n");
    daemon.reload(config(&next)).expect("reloaded");
    assert_eq!(daemon.generation(), 1);
    assert!(daemon.config().agents.contains_key("other"));
    let turn = daemon
        .daemon()
        .conversations
        .ask(ask("other", "after the reload"))
        .await
        .expect("the new agent answers");
    assert_eq!(turn.status, TurnStatus::Completed);
    let again = daemon
        .daemon()
        .conversations
        .ask(Ask {
            thread: Some(first.thread.clone()),
            ..ask("echo", "still here?")
        })
        .await
        .expect("the old thread continues on the new generation");
    assert_eq!(again.thread, first.thread);

    // What only a restart can change is refused, and the running generation stays.
    for (text, expected) in [
        (
            BASE.replace("name = \"gen\"", "name = \"renamed\""),
            "daemon.name changed",
        ),
        (
            BASE.replace("name = \"gen\"", "name = \"gen\"\nworkers = 3"),
            "daemon.workers changed",
        ),
        (
            format!("{BASE}\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n"),
            "[store] changed",
        ),
    ] {
        let err = daemon.reload(config(&text)).expect_err("refused");
        assert!(
            matches!(err, ReloadError::StoreChanged | ReloadError::RestartOnly(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(daemon.generation(), 1);
        assert!(daemon.config().agents.contains_key("other"));
    }
    assert_eq!(daemon.shutdown(Duration::from_secs(6)).await, Exit::Stopped);
}
