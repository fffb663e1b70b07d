//! Runs the real `troupe` binary as a child process: watch its log lines, signal it, wait.

use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::wait::lazy;

/// A temporary `.toml` file holding `text`: a config for a daemon process (deleted on drop).
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// The `troupe` binary of this build: Cargo builds it for the integration tests and the benches
/// of its package, next to their `deps/` directory (`target/<profile>/troupe`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in target/<profile>/deps");
    let binary = profile.join(format!("troupe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is not built: run this from `cargo test` or `cargo bench` of the troupe package",
        binary.display()
    );
    binary
}

/// A running `troupe` process; killed on drop if still running.
pub struct Daemon {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    /// Starts `troupe ARGS...` with stderr (the log) captured.
    pub fn spawn(args: &[&str]) -> Daemon {
        Daemon::spawn_with_env(args, &[])
    }

    /// Like [`Daemon::spawn`], with environment variables (`RUST_LOG` among them overrides
    /// the default `info`).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn troupe");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a log line contains `needle`; panics with the log so far on timeout.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        // Not `eventually`: it blocks on the next line rather than polling.
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no log line containing {needle:?} within {timeout:?}; log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // Not `eventually`: a process still running after `timeout` is an answer, not a panic.
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log of an exited process: every line until its stderr closed (at most
    /// `timeout` more).
    pub fn log_to_end(&mut self, timeout: Duration) -> String {
        // Not `eventually`: it blocks on the next line, and running out of time is no failure.
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => break,
            }
        }
        self.seen.join("\n")
    }

    /// All log lines read so far, and any still buffered; once the process has exited,
    /// every line it wrote (read to the end of its stderr, 5 s at most a line), so that its
    /// last words are not lost to the reader thread's lag.
    pub fn log(&mut self) -> String {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        loop {
            let line = if exited {
                self.lines.recv_timeout(Duration::from_secs(5)).ok()
            } else {
                self.lines.try_recv().ok()
            };
            match line {
                Some(line) => self.seen.push(line),
                None => break,
            }
        }
        self.seen.join("\n")
    }

    /// `what` followed by the log, read only if it is shown: the `what` of a wait
    /// ([`crate::eventually`]) whose failure should show what the daemon said.
    pub fn with_log<'a>(&'a mut self, what: impl Display + 'a) -> impl Display + 'a {
        lazy(move || format!("{what}; log:\n{}", self.log()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port` (a daemon's metrics and health endpoints): the status code
/// and the body; `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
