//! The Redis store's connections: one shared multiplexed connection kept up by a background
//! reconnect task, and a small pool of dedicated connections for blocking reads.
//!
//! The shared connection is `Up` or `Down`. While it is `Down` every call fails at once with
//! [`StoreError::Unavailable`] and the reconnect task retries with exponential backoff and
//! jitter, capped at `reconnect_max_delay`. A call that sees the connection drop marks it
//! `Down` (waking the task); an idempotent read then waits, within its response timeout, for
//! the new connection and is sent once more. Writes are never resent: whether they applied is
//! unknown.
//!
//! A blocking `XREAD`/`XREADGROUP` would stall every command pipelined behind it on the shared
//! connection, so it runs on a dedicated one, with a deadline of `BLOCK` plus the response
//! timeout.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, ScriptInvocation,
};
use redis::{ServerErrorKind, Value};
use tokio::sync::{oneshot, watch};

use super::RedisOptions;
use crate::store::{StoreError, StoreResult};

/// Idle dedicated connections kept for blocking reads; more are opened when busy.
const MAX_IDLE_BLOCKING: usize = 8;
/// First reconnect delay; doubled per failed attempt up to `reconnect_max_delay`.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);

/// What an error is about, for turning server errors into [`StoreError`]s.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx<'a> {
    /// The store operation.
    pub op: &'static str,
    /// The key or stream, without the prefix.
    pub key: &'a str,
    /// The consumer group, if any.
    pub group: &'a str,
    /// The entry ids the operation was given, if any.
    pub ids: &'a str,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(op: &'static str, key: &'a str) -> Self {
        Ctx {
            op,
            key,
            group: "",
            ids: "",
        }
    }

    pub(super) fn group(self, group: &'a str) -> Self {
        Ctx { group, ..self }
    }

    pub(super) fn ids(self, ids: &'a str) -> Self {
        Ctx { ids, ..self }
    }
}

/// One request on the shared connection.
pub(super) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
    Script(&'a ScriptInvocation<'a>),
}

/// Whether a request may be sent again after the connection dropped under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// A read: sent once more on the new connection.
    Idempotent,
    /// A write: its outcome is unknown, so the error is returned.
    Never,
}

#[derive(Clone)]
enum State {
    Up {
        conn: MultiplexedConnection,
        generation: u64,
    },
    Down {
        reason: String,
        generation: u64,
        /// Reconnect attempts that failed since the connection went down.
        failures: u32,
    },
}

impl State {
    fn generation(&self) -> u64 {
        match self {
            State::Up { generation, .. } | State::Down { generation, .. } => *generation,
        }
    }
}

pub(super) struct Link {
    client: Client,
    opts: RedisOptions,
    state: watch::Sender<State>,
    /// Idle dedicated connections for blocking reads, with the generation they were opened in.
    blocking: Mutex<Vec<(u64, MultiplexedConnection)>>,
}

enum Attempt {
    Done(StoreResult<Value>),
    Dropped(RedisError),
}

impl Link {
    /// Creates the link and makes one connection attempt (bounded by the connect timeout).
    /// Whatever its outcome, a reconnect task keeps the shared connection up from then on.
    pub(super) async fn start(opts: RedisOptions) -> StoreResult<Arc<Link>> {
        let client = Client::open(opts.url.as_str()).map_err(|e| StoreError::InvalidArgument {
            op: "connect",
            message: format!("redis url: {e}"),
        })?;
        let (state, rx) = watch::channel(State::Down {
            reason: "not connected yet".into(),
            generation: 0,
            failures: 0,
        });
        let link = Arc::new(Link {
            client,
            opts,
            state,
            blocking: Mutex::new(Vec::new()),
        });
        let (first, first_done) = oneshot::channel();
        tokio::spawn(reconnect(Arc::downgrade(&link), rx, first));
        // The task reports after its first attempt; either way the store is usable.
        let _ = first_done.await;
        Ok(link)
    }

    pub(super) fn is_connected(&self) -> bool {
        matches!(*self.state.borrow(), State::Up { .. })
    }

    fn unavailable(op: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            backend: "redis",
            op,
            message: message.into(),
        }
    }

    /// The shared connection, or `Unavailable` at once when it is down.
    fn current(&self, op: &'static str) -> StoreResult<(MultiplexedConnection, u64)> {
        match &*self.state.borrow() {
            State::Up { conn, generation } => Ok((conn.clone(), *generation)),
            State::Down { reason, .. } => {
                Err(Self::unavailable(op, format!("not connected: {reason}")))
            }
        }
    }

    /// Opens a new connection; `response_timeout: None` for blocking reads.
    async fn open(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.opts.connect_timeout))
            .set_response_timeout(response_timeout);
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.opts.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "connecting timed out after {:?}",
                self.opts.connect_timeout
            )),
        }
    }

    /// Marks connection `generation` down (if it is still the current one) so the reconnect
    /// task replaces it.
    fn mark_down(&self, generation: u64, reason: &dyn fmt::Display) {
        let changed = self.state.send_if_modified(|state| match state {
            State::Up { generation: g, .. } if *g == generation => {
                *state = State::Down {
                    reason: reason.to_string(),
                    generation,
                    failures: 0,
                };
                true
            }
            _ => false,
        });
        if changed {
            tracing::warn!(error = %reason, "redis connection lost; reconnecting");
        }
    }

    /// Waits up to `limit` for the reconnect task's next attempt; the connection if it
    /// succeeded.
    async fn wait_up(&self, limit: Duration) -> Option<(MultiplexedConnection, u64)> {
        let mut rx = self.state.subscribe();
        let up = tokio::time::timeout(limit, async {
            let attempted = |s: &State| match s {
                State::Up { .. } => true,
                State::Down { failures, .. } => *failures > 0,
            };
            let state = rx.wait_for(attempted).await.ok()?;
            match &*state {
                State::Up { conn, generation } => Some((conn.clone(), *generation)),
                State::Down { .. } => None,
            }
        });
        up.await.ok().flatten()
    }

    async fn attempt(
        &self,
        ctx: &Ctx<'_>,
        conn: &mut MultiplexedConnection,
        req: &Request<'_>,
    ) -> Attempt {
        let after = self.opts.response_timeout;
        let sent = async {
            match req {
                Request::Cmd(cmd) => cmd.query_async::<Value>(conn).await,
                Request::Pipe(pipe) => pipe.query_async::<Value>(conn).await,
                Request::Script(script) => script.invoke_async::<Value>(conn).await,
            }
        };
        match tokio::time::timeout(after, sent).await {
            Err(_) => Attempt::Done(Err(StoreError::Timeout { op: ctx.op, after })),
            Ok(Ok(value)) => Attempt::Done(Ok(value)),
            Ok(Err(e)) if e.is_unrecoverable_error() => Attempt::Dropped(e),
            Ok(Err(e)) => Attempt::Done(Err(classify(ctx, &e))),
        }
    }

    /// Sends `req` on the shared connection, bounded by the response timeout.
    pub(super) async fn query(
        &self,
        ctx: &Ctx<'_>,
        req: &Request<'_>,
        retry: Retry,
    ) -> StoreResult<Value> {
        counted(self.query_once(ctx, req, retry).await)
    }

    async fn query_once(
        &self,
        ctx: &Ctx<'_>,
        req: &Request<'_>,
        retry: Retry,
    ) -> StoreResult<Value> {
        let (mut conn, generation) = self.current(ctx.op)?;
        let error = match self.attempt(ctx, &mut conn, req).await {
            Attempt::Done(result) => return result,
            Attempt::Dropped(e) => e,
        };
        self.mark_down(generation, &error);
        if retry == Retry::Never {
            return Err(Self::unavailable(ctx.op, error.to_string()));
        }
        let Some((mut conn, generation)) = self.wait_up(self.opts.response_timeout).await else {
            return Err(Self::unavailable(ctx.op, error.to_string()));
        };
        match self.attempt(ctx, &mut conn, req).await {
            Attempt::Done(result) => result,
            Attempt::Dropped(e) => {
                self.mark_down(generation, &e);
                Err(Self::unavailable(ctx.op, e.to_string()))
            }
        }
    }

    /// Sends a blocking read on a dedicated connection, bounded by `block` plus the response
    /// timeout. Never retried: a read from a consumer group moves entries to the pending list.
    pub(super) async fn query_blocking(
        &self,
        ctx: &Ctx<'_>,
        cmd: &Cmd,
        block: Duration,
    ) -> StoreResult<Value> {
        counted(self.query_blocking_once(ctx, cmd, block).await)
    }

    async fn query_blocking_once(
        &self,
        ctx: &Ctx<'_>,
        cmd: &Cmd,
        block: Duration,
    ) -> StoreResult<Value> {
        // While the shared connection is down, fail fast rather than dialling on every call.
        let (_, generation) = self.current(ctx.op)?;
        let idle = {
            let mut pool = self.blocking.lock();
            pool.retain(|(g, _)| *g == generation);
            pool.pop()
        };
        let mut conn = match idle {
            Some((_, conn)) => conn,
            None => match self.open(None).await {
                Ok(conn) => conn,
                Err(message) => {
                    // The server is gone for new connections too: reconnect the shared one.
                    self.mark_down(generation, &message);
                    return Err(Self::unavailable(ctx.op, message));
                }
            },
        };
        let after = block + self.opts.response_timeout;
        match tokio::time::timeout(after, cmd.query_async::<Value>(&mut conn)).await {
            // The connection is dropped: a late reply must not reach the next reader.
            Err(_) => Err(StoreError::Timeout { op: ctx.op, after }),
            Ok(Ok(value)) => {
                self.give_back(generation, conn);
                Ok(value)
            }
            Ok(Err(e)) if e.is_unrecoverable_error() => {
                Err(Self::unavailable(ctx.op, e.to_string()))
            }
            Ok(Err(e)) => {
                self.give_back(generation, conn);
                Err(classify(ctx, &e))
            }
        }
    }

    fn give_back(&self, generation: u64, conn: MultiplexedConnection) {
        let mut pool = self.blocking.lock();
        if pool.len() < MAX_IDLE_BLOCKING {
            pool.push((generation, conn));
        }
    }
}

/// The reconnect task: whenever the shared connection is down, dials with backoff until it is
/// up again. Ends when the store is dropped.
async fn reconnect(link: Weak<Link>, mut rx: watch::Receiver<State>, first: oneshot::Sender<()>) {
    let mut first = Some(first);
    let mut failures: u32 = 0;
    loop {
        if rx
            .wait_for(|s| matches!(s, State::Down { .. }))
            .await
            .is_err()
        {
            return;
        }
        let Some(strong) = link.upgrade() else {
            return;
        };
        let result = strong.open(None).await;
        let generation = strong.state.borrow().generation() + 1;
        let delay = match result {
            Ok(conn) => {
                failures = 0;
                if generation > 1 {
                    tracing::info!(generation, "redis connection re-established");
                    crate::metrics::metrics().store_reconnects.inc();
                }
                strong.state.send_replace(State::Up { conn, generation });
                None
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, strong.opts.reconnect_max_delay);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(%reason, failures, retry_in = ?delay, "redis not reachable");
                } else {
                    tracing::debug!(%reason, failures, retry_in = ?delay, "redis not reachable");
                }
                // Wakes reads waiting for this attempt (`wait_up`).
                strong.state.send_if_modified(|s| match s {
                    State::Down {
                        reason: r,
                        failures: f,
                        ..
                    } => {
                        r.clone_from(&reason);
                        *f = failures;
                        true
                    }
                    State::Up { .. } => false,
                });
                Some(delay)
            }
        };
        drop(strong);
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The delay after `failures` consecutive failed attempts: exponential from
/// [`RECONNECT_MIN_DELAY`], capped at `max`, with jitter over its upper half.
fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = RECONNECT_MIN_DELAY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
}

/// Counts a failed call in the metrics, by kind.
fn counted(result: StoreResult<Value>) -> StoreResult<Value> {
    if let Err(err) = &result {
        let kind = match err {
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Timeout { .. } => "timeout",
            _ => "other",
        };
        crate::metrics::metrics().store_error(kind);
    }
    result
}

/// Turns a client or server error into a [`StoreError`].
pub(super) fn classify(ctx: &Ctx<'_>, e: &RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::Io => Link::unavailable(ctx.op, e.to_string()),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Protocol {
            op: ctx.op,
            message: e.to_string(),
        },
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown,
        ) => Link::unavailable(ctx.op, e.to_string()),
        _ => match e.code() {
            Some(code) => server_error(ctx, code, e.detail().unwrap_or_default()),
            None => StoreError::Other {
                op: ctx.op,
                message: e.to_string(),
            },
        },
    }
}

/// Turns a server error reply (`CODE detail`) into a [`StoreError`].
pub(super) fn server_error(ctx: &Ctx<'_>, code: &str, detail: &str) -> StoreError {
    let op = ctx.op;
    let message = format!("{code} {detail}");
    match code {
        "NOGROUP" => StoreError::NoGroup {
            stream: ctx.key.to_owned(),
            group: ctx.group.to_owned(),
        },
        "WRONGTYPE" => StoreError::WrongType {
            op,
            key: ctx.key.to_owned(),
        },
        "OOM" => StoreError::OutOfMemory { op, message },
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" => {
            Link::unavailable(op, message)
        }
        "ERR" if detail.contains("not an integer") || detail.contains("would overflow") => {
            StoreError::NotInteger {
                op,
                key: ctx.key.to_owned(),
            }
        }
        "ERR" if detail.contains("Invalid stream ID") => StoreError::InvalidId {
            op,
            id: ctx.ids.to_owned(),
        },
        _ => StoreError::Other { op, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Transient as _;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let max = Duration::from_secs(5);
        for failures in 1..40 {
            let d = backoff(failures, max);
            let nominal = RECONNECT_MIN_DELAY
                .saturating_mul(2u32.saturating_pow(failures - 1))
                .min(max);
            assert!(d >= nominal / 2 && d <= nominal, "{failures}: {d:?}");
        }
        assert!(backoff(1, max) <= RECONNECT_MIN_DELAY);
    }

    #[test]
    fn server_errors_become_actionable_variants() {
        let ctx = Ctx::new("xreadgroup", "jobs").group("workers").ids("1-x");
        assert!(matches!(
            server_error(&ctx, "NOGROUP", "No such key"),
            StoreError::NoGroup { stream, group } if stream == "jobs" && group == "workers"
        ));
        assert!(matches!(
            server_error(&ctx, "WRONGTYPE", "Operation against a key"),
            StoreError::WrongType { key, .. } if key == "jobs"
        ));
        assert!(matches!(
            server_error(&ctx, "ERR", "Invalid stream ID specified as stream command argument"),
            StoreError::InvalidId { id, .. } if id == "1-x"
        ));
        assert!(server_error(&ctx, "LOADING", "Redis is loading").is_retryable());
        assert!(server_error(&ctx, "OOM", "command not allowed").is_retryable());
        assert!(!server_error(&ctx, "ERR", "syntax error").is_retryable());
    }
}
