//! The operations endpoint of a real daemon: `/health/live`, `/health/ready` (following the
//! store and the ingress consumer) and `/metrics` counting what the daemon did.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use troupe_testkit::{eventually_blocking, WAIT};

use crate::support::daemon::{http_get as get, Daemon};
use crate::support::redis::{free_port, RedisServer};

/// Polls `GET path` until its status is `want`; the body then.
fn wait_status(port: u16, path: &str, want: u16) -> String {
    eventually_blocking(
        format!("GET {path} never answered {want}"),
        WAIT,
        || match get(port, path) {
            Some((status, body)) if status == want => Ok(body),
            got => Err(format!("{got:?}")),
        },
    )
}

/// The samples of the metrics text: `name{labels}` -> value (chunked bodies read whole).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("troupe_"))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn health_and_metrics_follow_the_daemon() {
    let mut redis = RedisServer::start();
    let port = free_port();
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    write!(
        file,
        r#"[daemon]
shutdown_grace = "3s"
metrics_addr = "127.0.0.1:{port}"
[store]
backend = "redis"
url = "{}"
response_timeout = "300ms"
connect_timeout = "300ms"
[ingress]
block = "100ms"
[models.scripted]
provider = "scripted"
[agents.echo]
model = "scripted"
"#,
        redis.url()
    )
    .expect("write config");
    let path = file.path().to_str().expect("utf-8 path");
    let mut daemon = Daemon::spawn(&["serve", "--config", path]);
    daemon.wait_for_log("serving /metrics", WAIT);
    assert_eq!(wait_status(port, "/health/live", 200), "live\n");
    assert_eq!(wait_status(port, "/health/ready", 200), "ready\n");

    // Five tasks and two malformed entries, with plain redis-cli.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "{out:?}");
    };
    for i in 0..5 {
        let task = format!(
            r#"{{"id":"m{i}","agent":"echo","input":"count me {i}","group":"acme","user":"u"}}"#
        );
        cli(&["XADD", "troupe:tasks", "*", "task", &task]);
    }
    cli(&["XADD", "troupe:tasks", "*", "task", "{broken"]);
    cli(&["XADD", "troupe:tasks", "*", "other", "x"]);

    let metrics = eventually_blocking("metrics count the tasks", WAIT, || {
        let (status, body) = get(port, "/metrics").expect("metrics answer");
        assert_eq!(status, 200);
        let m = samples(&body);
        let ok = r#"troupe_tasks_total{target="agent",name="echo",outcome="ok"}"#;
        let dead = r#"troupe_tasks_total{target="none",name="",outcome="dead_lettered"}"#;
        if value(&m, ok) >= 5.0 && value(&m, dead) >= 2.0 {
            Ok(m)
        } else {
            Err(format!("metrics never counted the tasks:\n{body}"))
        }
    });
    let received = r#"troupe_tasks_total{target="agent",name="echo",outcome="received"}"#;
    assert_eq!(value(&metrics, received), 5.0);
    let calls = r#"troupe_model_call_seconds_count{model="scripted",kind="ok"}"#;
    assert_eq!(value(&metrics, calls), 5.0, "{metrics:?}");
    let output = r#"troupe_model_tokens_total{model="scripted",kind="output"}"#;
    assert!(value(&metrics, output) > 0.0, "{metrics:?}");
    assert_eq!(value(&metrics, "troupe_tasks_in_flight"), 0.0);

    // Redis gone: not ready (with the reason), still live, store errors counted.
    redis.stop();
    let body = wait_status(port, "/health/ready", 503);
    assert!(body.contains("not ready"), "{body}");
    assert_eq!(get(port, "/health/live").map(|(s, _)| s), Some(200));
    // Back: ready again, the reconnect counted.
    redis.restart();
    wait_status(port, "/health/ready", 200);
    let (_, body) = get(port, "/metrics").expect("metrics answer");
    let m = samples(&body);
    assert!(value(&m, "troupe_store_reconnects_total") >= 1.0, "{body}");
    assert!(
        m.iter()
            .any(|(k, v)| k.starts_with("troupe_store_errors_total") && *v > 0.0),
        "{body}"
    );

    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}

/// The config of the reload test: the store on the shared private Redis, then `agents`.
fn reload_config(prefix: &str, agents: &str) -> String {
    format!(
        r#"[daemon]
name = "reloading"
shutdown_grace = "5s"
[store]
backend = "redis"
url = "{}"
prefix = "{prefix}"
[ingress]
block = "100ms"
[models.scripted]
provider = "scripted"
[models.slow]
provider = "scripted"
latency = "1500ms"
{agents}"#,
        crate::support::redis::redis_url()
    )
}

#[test]
fn sighup_applies_a_new_config_to_new_work_and_keeps_the_old_on_errors() {
    let prefix = crate::support::redis::unique_prefix("reload");
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let v1 = "[agents.echo]\nmodel = \"scripted\"\n[agents.slow]\nmodel = \"slow\"\n";
    file.write_all(reload_config(&prefix, v1).as_bytes())
        .expect("write config");
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    // The clients' own copy: the daemon's file is broken on purpose below.
    let client = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::fs::write(client.path(), reload_config(&prefix, "")).expect("write client config");
    let client_path = client.path().to_str().expect("utf-8 path").to_owned();
    let mut daemon = Daemon::spawn(&["serve", "--config", &path]);
    daemon.wait_for_log("ingress consumer started", WAIT);
    let publish = |agent: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args([
                "publish", "--agent", agent, "--group", "acme", "--user", "u",
            ])
            .args([
                "--config",
                &client_path,
                "--timeout",
                "20s",
                "--json",
                "hello",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run troupe publish")
    };
    let finish = |child: std::process::Child| {
        let out = child.wait_with_output().expect("publish output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A slow turn is in flight when the config changes under it.
    let in_flight = publish("slow");
    let stream = format!("{prefix}tasks");
    eventually_blocking("the slow task was never taken", WAIT, || {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &crate::support::redis::redis_url()])
            .args(["XPENDING", &stream, "troupe"])
            .output()
            .expect("run redis-cli");
        // The summary's first line is the pending count: the slow task was taken.
        String::from_utf8_lossy(&out.stdout).lines().next() == Some("1")
    });
    let v2 = "[agents.echo]\nmodel = \"scripted\"\n[agents.second]\nmodel = \"scripted\"\n";
    std::fs::write(&path, reload_config(&prefix, v2)).expect("rewrite config");
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded", Duration::from_secs(10));
    let (ok, out, err) = finish(publish("second"));
    assert!(ok, "the new agent answers: {err}\n{}", daemon.log());
    assert!(out.contains(r#""status":"ok""#), "{out}");
    let (ok, out, err) = finish(in_flight);
    assert!(
        ok && out.contains(r#""status":"ok""#),
        "the in-flight turn finished on the config it started with: {out}\n{err}"
    );
    let (ok, _, err) = finish(publish("slow"));
    assert!(!ok && err.contains("unknown_agent"), "{err}");

    // An invalid config is refused with its error; the running one stays.
    std::fs::write(
        &path,
        reload_config(&prefix, "[agents.broken]\nmodle = \"scripted\"\n"),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    let line = daemon.wait_for_log("config reload rejected", Duration::from_secs(10));
    assert!(line.contains("modle"), "the error names the key: {line}");
    let (ok, _, err) = finish(publish("second"));
    assert!(ok, "still served by the previous config: {err}");

    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
