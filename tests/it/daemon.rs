//! The daemon binary: graceful shutdown on signals, the demo, staying up without Redis; and
//! the daemon as a library (`troupe::Daemon::builder`).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::{config_file, Daemon};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn serve_exits_zero_within_grace_on_sigterm_and_sigint() {
    let config = config_file("[daemon]\nshutdown_grace = \"3s\"\n");
    let path = config.path().to_str().expect("utf-8 path");
    for signal in ["TERM", "INT"] {
        let mut daemon = Daemon::spawn(&["serve", "--config", path]);
        daemon.wait_for_log("troupe serving", Duration::from_secs(20));
        let sent = Instant::now();
        daemon.signal(signal);
        let status = daemon
            .wait_exit(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no exit within the grace period after SIG{signal}"));
        assert!(status.success(), "exit status {status:?} after SIG{signal}");
        assert!(sent.elapsed() < Duration::from_secs(3));
        let log = daemon.log();
        assert!(log.contains("shutting down"), "{log}");
        assert!(log.contains("stopped cleanly"), "{log}");
    }
}

#[test]
fn serve_stays_up_and_not_ready_while_redis_is_unreachable() {
    let port = free_port();
    let config = config_file(&format!(
        "[daemon]\nshutdown_grace = \"3s\"\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nresponse_timeout = \"200ms\"\nconnect_timeout = \"200ms\"\n"
    ));
    let path = config.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("troupe serving", Duration::from_secs(20));
    daemon.wait_for_log("store unreachable: not ready", Duration::from_secs(10));
    // Still running: it neither crashed nor exited.
    assert!(daemon.wait_exit(Duration::from_millis(300)).is_none());
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(4))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

#[test]
fn serve_rejects_an_invalid_config_with_exit_1() {
    let config = config_file("[daemon]\nshutdown_grace = \"soon\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--config"])
        .arg(config.path())
        .output()
        .expect("run troupe");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("daemon.shutdown_grace"), "{stderr}");
}

#[test]
fn demo_runs_end_to_end_on_embedded_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("demo")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run troupe demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent called its tool and streamed; threads came back from the store; tenants are
    // isolated; usage was accounted; the tree shut down cleanly.
    assert!(stdout.contains("calls current_time({})"), "{stdout}");
    assert!(stdout.contains("delta entries to deltas:acme:"), "{stdout}");
    assert!(
        stdout.contains("re-activated from the store with 6 messages"),
        "{stdout}"
    );
    assert!(stdout.contains("forbidden"), "{stdout}");
    assert!(stdout.contains("[usage] acme: 3 model calls"), "{stdout}");
    assert!(stdout.contains("shut down cleanly"), "{stdout}");
    assert!(
        stdout.contains("web, academic and news in parallel"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"label "technical" read from "Tech.""#),
        "{stdout}"
    );
    assert!(stdout.contains("[workflow] completed"), "{stdout}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let config = config_file("[daemon]\nshutdown_grace = \"2s\"\n");
    let path = config.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["--log-format", "json", "serve", "--config", path]);
    let line = daemon.wait_for_log("troupe serving", Duration::from_secs(20));
    let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(record["fields"]["message"], "troupe serving");
    assert_eq!(record["level"], "INFO");
    assert_eq!(record["fields"]["store"], "memory");
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(3)).expect("exit");
    assert!(status.success());
}

#[test]
fn check_rejects_an_unknown_tool_kind() {
    let config = config_file("[tools.calc]\nkind = \"calculator\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("check")
        .arg(config.path())
        .output()
        .expect("run troupe check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tools.calc:"), "{stderr}");
    assert!(stderr.contains("current_time"), "{stderr}");
}

/// The daemon as a library: `troupe::Daemon::builder` starts the production wiring in this
/// process; a turn and a workflow run go through it, then it stops cleanly.
#[actix::test]
async fn the_daemon_library_runs_a_turn_and_a_workflow_and_stops() {
    let text = r#"
[models.m]
provider = "scripted"

[agents.echo]
model = "m"

[workflows.twice]
[[workflows.twice.steps]]
name = "first"
kind = "agent"
agent = "echo"
[[workflows.twice.steps]]
name = "second"
kind = "agent"
agent = "echo"
input = "again: {{steps.first.output}}"
"#;
    let config =
        troupe_config::load_str(text, "daemon.toml", &[]).unwrap_or_else(|e| panic!("{e}"));
    let store: std::sync::Arc<dyn troupe_runtime::store::Store> =
        std::sync::Arc::new(troupe_runtime::store::MemoryStore::new());
    let daemon = troupe::Daemon::builder(&config, store)
        .start()
        .expect("the daemon starts");
    let turn = daemon
        .conversations
        .ask(troupe_agents::Ask {
            group: "acme".into(),
            user: "alice".into(),
            agent: "echo".into(),
            thread: None,
            input: "hello daemon".into(),
            stream: false,
            started: None,
        })
        .await
        .expect("a turn");
    assert_eq!(turn.status, troupe_agents::TurnStatus::Completed);
    assert!(turn.answer.contains("hello daemon"), "{}", turn.answer);
    let submit = troupe_workflow::Submit {
        workflow: "twice".into(),
        group: "acme".into(),
        user: "alice".into(),
        input: "ping".into(),
    };
    let run = daemon.router.submit(submit).await.expect("submit");
    let record = daemon
        .router
        .runs()
        .wait("acme", &run, Duration::from_secs(20))
        .await
        .expect("the run ends");
    assert_eq!(
        record.status,
        troupe_workflow::RunStatus::Completed,
        "{record:?}"
    );
    assert!(record.output.unwrap_or_default().contains("again: "));
    assert_eq!(
        daemon.shutdown(Duration::from_secs(5)).await,
        troupe_runtime::Exit::Stopped
    );
}
