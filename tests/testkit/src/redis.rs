//! Private `redis-server`s for the tests: one shared per test binary ([`redis_url`]) and
//! dedicated ones a test can stop and restart ([`RedisServer::start`]).
//!
//! Each server runs under a small `sh` watchdog that reads its stdin, a pipe held by this
//! process: when the handle is dropped — or the test process exits, however it exits — the
//! pipe closes, and the watchdog stops the server and removes its directory. No orphan servers
//! survive `cargo test`. The shared server on :6379 is never touched.

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::wait::{eventually_blocking, lazy};

/// How long a fresh server may take to answer PING.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// Stops the server it was given as `$1` when stdin closes, then removes its directory `$2`
/// unless the line `keep` was written first (a persistent server stopped to be restarted).
/// `$3` is `--appendonly` (`yes`: every write fsynced before it is acknowledged).
const WATCHDOG: &str = r#"
redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly "$3" --appendfsync always \
  --daemonize no --dir "$2" --pidfile "$2/redis.pid" --logfile "$2/redis.log" </dev/null &
pid=$!
read cmd
kill -CONT "$pid" 2>/dev/null
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ "$cmd" = keep ] || rm -rf "$2"
"#;

/// A private redis-server on a loopback port; stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Append-only file on (`--appendfsync always`): data survives `stop` and `restart`.
    persistent: bool,
    watchdog: Option<(Child, ChildStdin)>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (for example the port of a server stopped before).
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, false)
    }

    /// Starts a server on a free port with the append-only file on, fsynced on every write:
    /// everything it acknowledged survives [`RedisServer::stop`] and [`RedisServer::restart`].
    pub fn start_persistent() -> RedisServer {
        Self::start_with(free_port(), true)
    }

    fn start_with(port: u16, persistent: bool) -> RedisServer {
        require_redis_server();
        let dir = tempfile::Builder::new()
            .prefix("troupe-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server")
            .keep();
        let mut server = RedisServer {
            port,
            dir,
            persistent,
            watchdog: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("create the redis-server dir");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("redis-watchdog")
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(if self.persistent { "yes" } else { "no" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh for redis-server");
        let stdin = child.stdin.take().expect("watchdog stdin is piped");
        self.watchdog = Some((child, stdin));
        let what = lazy(|| {
            let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            format!(
                "redis-server on port {} did not answer PING; log:\n{log}",
                self.port
            )
        });
        eventually_blocking(what, STARTUP_LIMIT, || answers_ping(self.port));
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone. Its data is lost,
    /// unless it is persistent (then what it acknowledged is in its append-only file).
    pub fn stop(&mut self) {
        self.kill(self.persistent);
    }

    fn kill(&mut self, keep_data: bool) {
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            if keep_data {
                let _ = stdin.write_all(b"keep\n");
            }
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, or, if persistent, with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Pauses (`true`, SIGSTOP) or resumes (`false`, SIGCONT) the server process.
    pub fn pause(&self, paused: bool) {
        let pid = std::fs::read_to_string(self.dir.join("redis.pid"))
            .expect("redis-server writes its pidfile");
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.trim())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill(false);
        if self.persistent {
            // Stopped before with `keep`, the watchdog left the directory.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The URL of this test binary's shared private server, started on first use.
pub fn redis_url() -> String {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    // Never dropped: the watchdog stops it when this process exits and closes the pipe.
    SHARED.get_or_init(RedisServer::start).url()
}

/// A key prefix no other test in this run uses.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("it{}-{n}:{name}:", std::process::id())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn require_redis_server() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "redis-server is not installed (or not on PATH): the store tests start private \
         redis-servers. Install it, e.g. `apt-get install redis-server`."
    );
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let limit = Some(Duration::from_millis(500));
    if conn.set_read_timeout(limit).is_err() || conn.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    conn.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A store on this test binary's shared private server, with its own key prefix.
pub async fn store(prefix: &str) -> std::sync::Arc<dyn troupe_runtime::store::Store> {
    let mut options = troupe_runtime::store::RedisOptions::new(redis_url());
    options.prefix = prefix.to_owned();
    let store = troupe_runtime::store::RedisStore::connect(options)
        .await
        .expect("connect to the private redis-server");
    std::sync::Arc::new(store)
}

/// A config file whose `[store]` is that store (for the `troupe` binary).
pub fn store_config_file(prefix: &str) -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    let text = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\n",
        redis_url()
    );
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// A private server for a benchmark, or `None` (with a note naming `what` is skipped) when
/// `redis-server` is not installed: benches run where tests would fail loudly instead. Used
/// by the benches, not by the tests.
pub fn start_for_bench(what: &str) -> Option<RedisServer> {
    let installed = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("note: redis-server is not installed; skipping the {what} benches");
        return None;
    }
    Some(RedisServer::start())
}
