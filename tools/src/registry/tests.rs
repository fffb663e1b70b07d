//! Registry tests: building from config, schemas, and the policy of `call` (allowlist,
//! arguments, timeout, panic containment, tracing).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;

use super::*;

fn ctx() -> ToolContext {
    ToolContext {
        group: "acme".into(),
        user: "ann".into(),
        agent: "web".into(),
        thread: "t1".into(),
        message_id: "m1".into(),
    }
}

fn settings(kind: &str, options: &str) -> ToolSettings {
    ToolSettings {
        kind: kind.to_owned(),
        timeout: Duration::from_secs(5),
        requires_approval: false,
        options: options
            .parse()
            .unwrap_or_else(|err| panic!("{options}: {err}")),
    }
}

fn from_config(tools: &[(&str, ToolSettings)]) -> Result<ToolRegistry, String> {
    let tools: BTreeMap<String, ToolSettings> = tools
        .iter()
        .map(|(name, settings)| ((*name).to_owned(), settings.clone()))
        .collect();
    ToolRegistry::from_config(&tools).map_err(|err| err.to_string())
}

fn allow(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// A test tool: counts its calls, and echoes, panics or hangs as told by `mode`.
struct Probe {
    name: &'static str,
    mode: &'static str,
    calls: Arc<AtomicUsize>,
}

impl Probe {
    fn new(name: &'static str, mode: &'static str) -> (Arc<Self>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = Probe {
            name,
            mode,
            calls: Arc::clone(&calls),
        };
        (Arc::new(probe), calls)
    }
}

#[async_trait]
impl Tool for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "a probe"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({ "type": "object" })
    }
    fn requires_approval(&self) -> bool {
        self.mode == "approve"
    }
    async fn call(
        &self,
        _ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            "panic" => panic!("probe exploded"),
            "panic_string" => std::panic::panic_any(format!("probe exploded: {args}")),
            "panic_other" => std::panic::panic_any(42_u8),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(ToolOutput::text("woke up"))
            }
            _ => Ok(ToolOutput::text(args.to_string())),
        }
    }
}

fn registry_with(tools: &[Arc<Probe>], timeout: Duration) -> ToolRegistry {
    let mut registry = ToolRegistry::new();
    for tool in tools {
        let tool: Arc<dyn Tool> = Arc::clone(tool) as Arc<dyn Tool>;
        registry
            .register(tool, timeout, false)
            .unwrap_or_else(|err| panic!("{err}"));
    }
    registry
}

#[test]
fn builds_every_builtin_kind_from_config() {
    let registry = from_config(&[
        ("clock", settings("current_time", "")),
        (
            "fetch",
            settings("http_get", "allow = [\"example.com\"]\nmax_bytes = 100"),
        ),
    ])
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(registry.names().collect::<Vec<_>>(), ["clock", "fetch"]);
    assert_eq!(registry.len(), 2);
    assert_eq!(registry.timeout("fetch"), Some(Duration::from_secs(5)));
    assert_eq!(registry.timeout("nope"), None);
    assert!(registry.get("clock").is_some());
    assert!(registry.get("nope").is_none());
    assert_eq!(format!("{registry:?}"), "{\"clock\", \"fetch\"}");
}

#[test]
fn unknown_kinds_and_bad_options_are_config_errors() {
    for (tools, expected) in [
        (
            vec![("calc", settings("calculator", ""))],
            "tools.calc: unknown kind \"calculator\": valid kinds are \"current_time\", \"http_get\", \"rag_search\"",
        ),
        (
            vec![("clock", settings("current_time", "zone = \"UTC\""))],
            "tools.clock: unknown option \"zone\": this kind takes no options",
        ),
        (
            vec![
                ("clock", settings("current_time", "")),
                ("fetch", settings("http_get", "max_bytes = \"1MB\"")),
            ],
            "tools.fetch: options.max_bytes: expected an integer, got string \"1MB\"",
        ),
    ] {
        assert_eq!(from_config(&tools).map(|_| ()), Err(expected.to_owned()));
    }
    let (probe, _) = Probe::new("twice", "echo");
    let mut registry = registry_with(&[Arc::clone(&probe)], Duration::from_secs(1));
    assert_eq!(
        registry
            .register(probe, Duration::from_secs(1), false)
            .map_err(|err| err.to_string()),
        Err("tools.twice: a tool with this name is already registered".to_owned())
    );
}

#[test]
fn requires_approval_comes_from_config_or_the_tool() {
    let mut approved = settings("current_time", "");
    approved.requires_approval = true;
    let mut registry = from_config(&[
        ("clock", settings("current_time", "")),
        ("guarded_clock", approved),
    ])
    .unwrap_or_else(|err| panic!("{err}"));
    let (probe, _) = Probe::new("asks", "approve");
    registry
        .register(probe, Duration::from_secs(1), false)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(!registry.requires_approval("clock"));
    assert!(registry.requires_approval("guarded_clock"));
    assert!(registry.requires_approval("asks"));
    assert!(!registry.requires_approval("unknown"));
}

#[test]
fn specs_follow_the_allowlist() {
    let registry = from_config(&[
        ("clock", settings("current_time", "")),
        ("fetch", settings("http_get", "")),
    ])
    .unwrap_or_else(|err| panic!("{err}"));
    let names = |allowlist: &[&str]| -> Vec<String> {
        registry
            .specs(&allow(allowlist))
            .into_iter()
            .map(|spec| spec.name)
            .collect()
    };
    assert_eq!(names(&["fetch", "clock"]), ["fetch", "clock"]);
    assert_eq!(names(&["clock", "missing", "clock"]), ["clock"]);
    assert!(names(&[]).is_empty());
    let specs = registry.specs(&allow(&["fetch"]));
    assert_eq!(specs[0].parameters["required"], json!(["url"]));
    assert!(specs[0].description.starts_with("Fetch a web page"));
}

#[tokio::test]
async fn a_tool_outside_the_allowlist_never_runs() {
    let (secret, calls) = Probe::new("secret", "echo");
    let (open, _) = Probe::new("open", "echo");
    let registry = registry_with(&[secret, open], Duration::from_secs(1));
    // Whatever the model asked (prompt injection included), `secret` is not this agent's.
    let got = registry
        .call(&allow(&["open"]), "secret", &ctx(), "{}")
        .await;
    assert_eq!(
        got,
        Err(ToolError::Denied {
            tool: "secret".into(),
            reason: "not allowed for agent web".into(),
        })
    );
    // An unknown name is refused the same way: existence is not revealed.
    let got = registry.call(&allow(&["open"]), "nope", &ctx(), "{}").await;
    assert!(matches!(got, Err(ToolError::Denied { .. })), "{got:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let got = registry
        .call(&allow(&["open", "secret"]), "secret", &ctx(), "{\"a\":1}")
        .await;
    assert_eq!(got, Ok(ToolOutput::text("{\"a\":1}")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Allowed but not configured: a plain failure, not a crash.
    let got = registry
        .call(&allow(&["ghost"]), "ghost", &ctx(), "{}")
        .await;
    assert!(
        matches!(
            got,
            Err(ToolError::Failed {
                retryable: false,
                ..
            })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn arguments_must_be_a_json_object() {
    let (echo, calls) = Probe::new("echo", "echo");
    let registry = registry_with(&[echo], Duration::from_secs(1));
    let call = |raw: &'static str| {
        let registry = registry.clone();
        async move {
            registry
                .call(&allow(&["echo"]), "echo", &ctx(), raw)
                .await
                .map(|output| output.content)
                .map_err(|err| err.to_string())
        }
    };
    assert_eq!(call("").await, Ok("{}".to_owned()));
    assert_eq!(call("  ").await, Ok("{}".to_owned()));
    assert_eq!(call(" {\"x\": [1]} ").await, Ok("{\"x\":[1]}".to_owned()));
    for (raw, message) in [
        ("{\"x\": ", "invalid arguments for echo: arguments are not valid JSON (EOF while parsing a value at line 1 column 5); send a JSON object matching the tool's parameters"),
        ("{'x': 1}", "invalid arguments for echo: arguments are not valid JSON (key must be a string at line 1 column 2); send a JSON object matching the tool's parameters"),
        ("[1, 2]", "invalid arguments for echo: arguments must be a JSON object matching the tool's parameters, got an array"),
        ("\"x\"", "invalid arguments for echo: arguments must be a JSON object matching the tool's parameters, got a string"),
        ("null", "invalid arguments for echo: arguments must be a JSON object matching the tool's parameters, got null"),
    ] {
        assert_eq!(call(raw).await, Err(message.to_owned()), "{raw}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_panicking_tool_is_contained() {
    let (boom, _) = Probe::new("boom", "panic");
    let (boom_string, _) = Probe::new("boom_string", "panic_string");
    let (boom_other, _) = Probe::new("boom_other", "panic_other");
    let (echo, _) = Probe::new("echo", "echo");
    let registry = registry_with(
        &[boom, boom_string, boom_other, echo],
        Duration::from_secs(1),
    );
    let everything = allow(&["boom", "boom_string", "boom_other", "echo"]);
    for (name, message) in [
        ("boom", "probe exploded"),
        ("boom_string", "probe exploded: {\"n\":1}"),
        ("boom_other", "a panic without a message"),
    ] {
        let got = registry.call(&everything, name, &ctx(), "{\"n\":1}").await;
        assert_eq!(
            got,
            Err(ToolError::Panicked {
                tool: name.into(),
                message: message.into()
            })
        );
    }
    // The caller and the registry carry on.
    let got = registry.call(&everything, "echo", &ctx(), "{}").await;
    assert_eq!(got, Ok(ToolOutput::text("{}")));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_of_the_tool_is_enforced() {
    let (hang, calls) = Probe::new("hang", "hang");
    let registry = registry_with(&[hang], Duration::from_millis(250));
    let started = tokio::time::Instant::now();
    let got = registry.call(&allow(&["hang"]), "hang", &ctx(), "{}").await;
    assert_eq!(
        got,
        Err(ToolError::Timeout {
            tool: "hang".into(),
            after: Duration::from_millis(250)
        })
    );
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Captured log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn calls_are_traced_and_denials_warned() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Tests on other threads register callsites with no subscriber: recompute the interest.
    tracing::callsite::rebuild_interest_cache();
    let (echo, _) = Probe::new("echo", "echo");
    let registry = registry_with(&[echo], Duration::from_secs(1));
    let _ = registry.call(&allow(&[]), "echo", &ctx(), "{}").await;
    let _ = registry.call(&allow(&["echo"]), "echo", &ctx(), "{}").await;
    let logs = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
    .into_owned();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].contains(" WARN tool{tool=echo group=acme agent=web thread=t1}: ")
            && lines[0].contains("tool call denied reason=not allowed for agent web"),
        "{logs}"
    );
    assert!(
        lines[1].contains("DEBUG tool{tool=echo group=acme agent=web thread=t1}: ")
            && lines[1].contains("tool call finished"),
        "{logs}"
    );
}
