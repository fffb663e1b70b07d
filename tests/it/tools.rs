//! Tools tests: the registry built from real config, and `http_get` against local HTTP servers
//! on 127.0.0.1 — SSRF refusals (loopback by default, names resolving to loopback, redirects to
//! the metadata address) happen before any connection, opened networks are reachable, bodies
//! are truncated and silent servers time out. No test contacts a non-loopback address.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use troupe_tools::{ToolContext, ToolError, ToolOutput, ToolRegistry};

/// What the test server answers to a request path: a raw HTTP response, or `None` to hold
/// the connection open without answering.
type Handler = Arc<dyn Fn(&str, u16) -> Option<String> + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1:0 counting the connections it accepts.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(handler: impl Fn(&str, u16) -> Option<String> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("bind: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("local_addr: {err}"))
            .port();
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, Arc::clone(&handler), port));
            }
        });
        Server {
            port,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, handler: Handler, port: u16) {
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    match handler(&path, port) {
        Some(response) => {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        None => {
            // Never answer; keep the connection open until the client gives up.
            let _ = stream.read(&mut buf).await;
        }
    }
}

fn ok(body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn status(code: u16, reason: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

fn redirect(location: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

/// A registry with one tool `[tools.fetch]` of kind `http_get`, built through the real config
/// path from `extra` (more keys of `[tools.fetch]`) and `options`.
fn fetch_tool(extra: &str, options: &str) -> ToolRegistry {
    let text = format!(
        "[tools.fetch]\nkind = \"http_get\"\ntimeout = \"5s\"\n{extra}\n[tools.fetch.options]\n{options}\n"
    );
    let config = troupe_config::load_str(&text, "tools.toml", &[])
        .unwrap_or_else(|err| panic!("{text}\n{err}"));
    ToolRegistry::from_config(&config.tools).unwrap_or_else(|err| panic!("{err}"))
}

fn ctx() -> ToolContext {
    ToolContext {
        group: "acme".into(),
        user: "ann".into(),
        agent: "web".into(),
        thread: "t1".into(),
        message_id: "m1".into(),
    }
}

async fn fetch(registry: &ToolRegistry, url: &str) -> Result<ToolOutput, ToolError> {
    let args = serde_json::json!({ "url": url }).to_string();
    registry
        .call(&["fetch".to_owned()], "fetch", &ctx(), &args)
        .await
}

/// The reason of a denial, or a panic showing what came instead.
fn denied(result: Result<ToolOutput, ToolError>) -> String {
    match result {
        Err(ToolError::Denied { tool, reason }) if tool == "fetch" => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default_before_connecting() {
    let server = Server::start(|_, _| ok("secret")).await;
    let registry = fetch_tool("", "");
    for url in [
        server.url("/"),
        format!("http://2130706433:{}/", server.port),
        format!("http://0x7f000001:{}/", server.port),
        format!("http://0177.0.0.1:{}/", server.port),
        format!("http://127.1:{}/", server.port),
        format!("http://[::ffff:127.0.0.1]:{}/", server.port),
    ] {
        let reason = denied(fetch(&registry, &url).await);
        assert!(reason.contains("is a loopback address"), "{url}: {reason}");
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_before_connecting() {
    let server = Server::start(|_, _| ok("secret")).await;
    let registry = fetch_tool("", "");
    let reason = denied(fetch(&registry, &format!("http://localhost:{}/", server.port)).await);
    assert!(
        reason.starts_with("localhost resolves to ")
            && reason.ends_with("a loopback address, which this tool may not reach"),
        "{reason}"
    );
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn allow_private_reaches_a_local_server() {
    let server = Server::start(|path, _| ok(&format!("hello from {path}"))).await;
    let registry = fetch_tool("", "allow_private = true");
    let output = fetch(&registry, &server.url("/page?q=1"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.content, "hello from /page?q=1");
    assert_eq!(output.data["status"], 200);
    assert_eq!(output.data["truncated"], false);
    assert_eq!(output.data["content_type"], "text/plain; charset=utf-8");
    // A host name resolving to loopback only is fine too.
    let output = fetch(&registry, &format!("http://localhost:{}/x", server.port))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.content, "hello from /x");
    // allow_private never opens link-local: the metadata address stays closed.
    let reason = denied(fetch(&registry, "http://169.254.169.254/latest/meta-data/").await);
    assert_eq!(
        reason,
        "169.254.169.254 is a link-local address, which this tool may not reach"
    );
}

#[tokio::test]
async fn allow_networks_opens_only_the_named_networks() {
    let server = Server::start(|_, _| ok("hello")).await;
    let registry = fetch_tool("", "allow_networks = [\"127.0.0.0/8\"]");
    let output = fetch(&registry, &server.url("/"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.content, "hello");
    assert_eq!(server.connections(), 1);
    for (url, reason) in [
        (
            "http://10.0.0.1/",
            "10.0.0.1 is a private address, which this tool may not reach",
        ),
        (
            "http://192.168.1.1/",
            "192.168.1.1 is a private address, which this tool may not reach",
        ),
        (
            "http://[::1]/",
            "::1 is a loopback address, which this tool may not reach",
        ),
    ] {
        assert_eq!(denied(fetch(&registry, url).await), reason, "{url}");
    }
}

#[tokio::test]
async fn redirects_to_internal_addresses_are_refused() {
    let server = Server::start(|path, port| match path {
        "/metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        "/metadata-hex" => redirect("http://0xA9FEA9FE/latest/meta-data/"),
        "/metadata-mapped" => redirect("http://[::ffff:a9fe:a9fe]/"),
        "/private" => redirect("http://10.0.0.1/admin"),
        "/ipv6-loopback" => redirect(&format!("http://[::1]:{port}/secret")),
        "/file" => redirect("file:///etc/passwd"),
        _ => ok("secret"),
    })
    .await;
    let registry = fetch_tool("", "allow_networks = [\"127.0.0.0/8\"]");
    for (path, reason) in [
        ("/metadata", "redirected to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local address, which this tool may not reach"),
        ("/metadata-hex", "redirected to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local address, which this tool may not reach"),
        ("/metadata-mapped", "redirected to http://[::ffff:a9fe:a9fe]/: ::ffff:169.254.169.254 is a link-local address, which this tool may not reach"),
        ("/private", "redirected to http://10.0.0.1/admin: 10.0.0.1 is a private address, which this tool may not reach"),
        ("/file", "redirected to file:///etc/passwd: scheme \"file\" is not allowed: only http and https"),
    ] {
        assert_eq!(denied(fetch(&registry, &server.url(path)).await), reason, "{path}");
    }
    // 127.0.0.0/8 does not open IPv6 loopback.
    assert_eq!(
        denied(fetch(&registry, &server.url("/ipv6-loopback")).await),
        format!(
            "redirected to http://[::1]:{}/secret: ::1 is a loopback address, which this tool may not reach",
            server.port
        )
    );
    // One connection per first hop; none to any refused destination.
    assert_eq!(server.connections(), 6);
}

#[tokio::test]
async fn every_redirect_hop_is_checked_against_the_host_allowlist() {
    let server = Server::start(|path, port| match path {
        "/elsewhere" => redirect(&format!("http://localhost:{port}/secret")),
        _ => ok("secret"),
    })
    .await;
    // Naming 127.0.0.1 in `allow` opens that address, and only that host.
    let registry = fetch_tool("", "allow = [\"127.0.0.1\"]");
    assert_eq!(
        fetch(&registry, &server.url("/ok"))
            .await
            .map(|output| output.content),
        Ok("secret".to_owned())
    );
    assert_eq!(
        denied(fetch(&registry, &server.url("/elsewhere")).await),
        format!(
            "redirected to http://localhost:{}/secret: host localhost is not allowed for this tool",
            server.port
        )
    );
    assert_eq!(
        denied(fetch(&registry, &format!("http://localhost:{}/", server.port)).await),
        "host localhost is not allowed for this tool"
    );
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let server = Server::start(|path, _| match path {
        "/start" => redirect("/middle"),
        "/middle" => redirect("end?x=1"),
        "/end?x=1" => ok("arrived"),
        _ => redirect("/loop"),
    })
    .await;
    let registry = fetch_tool("", "allow_private = true\nmax_redirects = 2");
    let output = fetch(&registry, &server.url("/start"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.content, "arrived");
    assert_eq!(output.data["redirects"], 2);
    assert_eq!(output.data["url"], server.url("/end?x=1"));
    let before = server.connections();
    match fetch(&registry, &server.url("/loop")).await {
        Err(ToolError::Failed {
            message,
            retryable: false,
            ..
        }) => assert!(
            message.contains("too many redirects (at most 2 are followed)"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.connections() - before, 3);
}

#[tokio::test]
async fn large_bodies_are_truncated_at_max_bytes() {
    let server = Server::start(|_, _| ok(&"a".repeat(5000))).await;
    let registry = fetch_tool("", "allow_private = true\nmax_bytes = 1000");
    let output = fetch(&registry, &server.url("/"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        output.content,
        format!(
            "{}\n\n[truncated: the response is longer than 1000 bytes]",
            "a".repeat(1000)
        )
    );
    assert_eq!(output.data["bytes"], 1000);
    assert_eq!(output.data["truncated"], true);
    // Exactly max_bytes is not truncated.
    let registry = fetch_tool("", "allow_private = true\nmax_bytes = 5000");
    let output = fetch(&registry, &server.url("/"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.content.len(), 5000);
    assert_eq!(output.data["truncated"], false);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = Server::start(|_, _| None).await;
    let text = "timeout = \"300ms\"";
    let registry = {
        let text = format!(
            "[tools.fetch]\nkind = \"http_get\"\n{text}\n[tools.fetch.options]\nallow_private = true\n"
        );
        let config =
            troupe_config::load_str(&text, "tools.toml", &[]).unwrap_or_else(|err| panic!("{err}"));
        ToolRegistry::from_config(&config.tools).unwrap_or_else(|err| panic!("{err}"))
    };
    let started = Instant::now();
    let got = fetch(&registry, &server.url("/")).await;
    let elapsed = started.elapsed();
    assert_eq!(
        got,
        Err(ToolError::Timeout {
            tool: "fetch".into(),
            after: Duration::from_millis(300)
        })
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn http_errors_are_failures_retryable_for_5xx() {
    let server = Server::start(|path, _| match path {
        "/missing" => status(404, "Not Found"),
        "/busy" => status(503, "Service Unavailable"),
        _ => status(429, "Too Many Requests"),
    })
    .await;
    let registry = fetch_tool("", "allow_private = true");
    for (path, expected_status, retry) in [
        ("/missing", "404 Not Found", false),
        ("/busy", "503 Service Unavailable", true),
        ("/slow-down", "429 Too Many Requests", true),
    ] {
        let url = server.url(path);
        assert_eq!(
            fetch(&registry, &url).await,
            Err(ToolError::Failed {
                tool: "fetch".into(),
                message: format!("{url}: HTTP {expected_status}"),
                retryable: retry,
            })
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_failure() {
    // Bind then drop: nothing listens on the port any more.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        listener
            .local_addr()
            .unwrap_or_else(|err| panic!("{err}"))
            .port()
    };
    let registry = fetch_tool("", "allow_private = true");
    match fetch(&registry, &format!("http://127.0.0.1:{port}/")).await {
        Err(ToolError::Failed {
            message,
            retryable: true,
            ..
        }) => assert!(message.contains("cannot connect"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn requires_approval_is_read_from_config() {
    let registry = fetch_tool("requires_approval = true", "");
    assert!(registry.requires_approval("fetch"));
    assert!(!fetch_tool("", "").requires_approval("fetch"));
}

#[test]
fn bad_tool_config_is_reported_by_name() {
    let config = troupe_config::load_str(
        "[tools.fetch]\nkind = \"http_get\"\n[tools.fetch.options]\nallow = [\"http://example.com/\"]\n",
        "tools.toml",
        &[],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        ToolRegistry::from_config(&config.tools).map_err(|err| err.to_string()).map(|_| ()),
        Err("tools.fetch: options.allow: invalid host \"http://example.com/\": give a host name, not a URL (e.g. \"example.com\")".to_owned())
    );
    let config =
        troupe_config::load_str("[tools.calc]\nkind = \"calculator\"\n", "tools.toml", &[])
            .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        ToolRegistry::from_config(&config.tools).map_err(|err| err.to_string()).map(|_| ()),
        Err("tools.calc: unknown kind \"calculator\": valid kinds are \"current_time\", \"http_get\", \"rag_search\"".to_owned())
    );
}

#[test]
fn the_example_config_builds_its_tools() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/troupe.toml");
    let config = troupe_config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    let registry = ToolRegistry::from_config(&config.tools).unwrap_or_else(|err| panic!("{err}"));
    // Kinds other crates provide (rag_search) are registered by them, not here.
    let built_here = |name: &String| {
        !troupe_tools::builtin::PROVIDED_KINDS.contains(&config.tools[name].kind.as_str())
    };
    assert_eq!(
        registry.len(),
        config.tools.keys().filter(|n| built_here(n)).count()
    );
    for (name, agent) in &config.agents {
        assert_eq!(
            registry.specs(&agent.tools).len(),
            agent.tools.iter().filter(|n| built_here(n)).count(),
            "agents.{name}"
        );
    }
}
