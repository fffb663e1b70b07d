//! The HTTP server: builds the app (the router over the handlers in `chat.rs`,
//! `embeddings.rs` and `control.rs`), runs it ([`MockServer`], [`serve`]), and the
//! [`MockHandle`] a test holds.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Fault, MockConfig};
use crate::error::MockError;
use crate::state::{lock, until_stopped, Shared};
use crate::stats::{RecordedRequest, Stats};

/// Starts mock servers.
#[derive(Debug)]
pub struct MockServer;

impl MockServer {
    /// Starts a server on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start(config: MockConfig) -> Result<MockHandle, MockError> {
        let (listener, addr) = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, stopped.clone()));
        tokio::spawn(run(listener, shared.clone(), stopped));
        Ok(MockHandle { addr, shared, stop })
    }
}

/// Listens on `addr` and returns the listener with the address it got (the port, when `addr`
/// asks for port 0). A failure of either is [`MockError::Bind`] naming `addr`.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), MockError> {
    let bind_error = |source| MockError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Serves the mock on `addr` until the returned future is dropped (or the process ends).
pub async fn serve(addr: SocketAddr, config: MockConfig) -> Result<(), MockError> {
    let (listener, local) = bind(addr).await?;
    tracing::info!(addr = %local, "mock LLM listening on http://{local}/v1");
    // The sender lives as long as this future: dropping it releases hung requests.
    let (_stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared::new(config, stopped.clone()));
    run(listener, shared, stopped).await;
    Ok(())
}

async fn run(listener: TcpListener, shared: Arc<Shared>, stopped: watch::Receiver<bool>) {
    let router = Router::new()
        .route("/v1/chat/completions", post(crate::chat::chat_completions))
        .route("/v1/embeddings", post(crate::embeddings::embeddings))
        .route("/_mock/stats", get(crate::control::stats))
        .route(
            "/_mock/faults",
            post(crate::control::queue_faults).delete(crate::control::clear_faults),
        )
        .with_state(shared);
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(until_stopped(stopped))
        .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "mock LLM server failed");
    }
}

/// A running mock server; stops (and releases hung requests) when dropped.
#[derive(Debug)]
pub struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl MockHandle {
    /// The API root, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends faults to the queue served to the next requests, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.queue().extend(faults);
    }

    /// Sets (or clears) the fault served on every request once the queue is empty.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.persistent) = fault;
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Every `/v1` request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
