//! The HTTP server: shared state (fault queue, stats), the router, embeddings, error responses
//! for faults, the bodies of hostile answers (huge, endless, huge headers), and
//! [`MockServer`]/[`MockHandle`]/[`serve`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Fault, MockConfig, Quirk, HUGE_HEADER_BYTES};
use crate::error::MockError;
use crate::script::{self, Script};
use crate::stats::{RecordedRequest, Stats};

/// Starts mock servers.
#[derive(Debug)]
pub struct MockServer;

impl MockServer {
    /// Starts a server on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start(config: MockConfig) -> Result<MockHandle, MockError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MockError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, stopped.clone()));
        tokio::spawn(run(listener, shared.clone(), stopped));
        Ok(MockHandle { addr, shared, stop })
    }
}

/// Serves the mock on `addr` until the returned future is dropped (or the process ends).
pub async fn serve(addr: SocketAddr, config: MockConfig) -> Result<(), MockError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MockError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| MockError::Bind {
        addr: addr.to_string(),
        source,
    })?;
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
        .route("/v1/embeddings", post(embeddings))
        .route("/_mock/stats", get(stats))
        .route("/_mock/faults", post(queue_faults).delete(clear_faults))
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

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) script: Script,
    queue: Mutex<VecDeque<Fault>>,
    persistent: Mutex<Option<Fault>>,
    stats: Mutex<Stats>,
    requests: Mutex<Vec<RecordedRequest>>,
    sequence: AtomicU64,
    /// `429` answers so far (which of `retry_after_values` is next).
    rate_limited: AtomicUsize,
    stopped: watch::Receiver<bool>,
}

/// The endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Embeddings,
}

impl Shared {
    fn new(config: MockConfig, stopped: watch::Receiver<bool>) -> Shared {
        Shared {
            script: config.script(),
            queue: Mutex::new(config.faults.iter().copied().collect()),
            persistent: Mutex::new(config.fault),
            config,
            stats: Mutex::new(Stats::default()),
            requests: Mutex::new(Vec::new()),
            sequence: AtomicU64::new(0),
            rate_limited: AtomicUsize::new(0),
            stopped,
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Fault>> {
        lock(&self.queue)
    }

    /// Counts and records a request.
    pub(crate) fn record(&self, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) {
        {
            let mut stats = lock(&self.stats);
            stats.requests += 1;
            match endpoint {
                Endpoint::Chat => stats.chat_completions += 1,
                Endpoint::Embeddings => stats.embeddings += 1,
            }
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        lock(&self.requests).push(RecordedRequest {
            endpoint: match endpoint {
                Endpoint::Chat => "chat_completions",
                Endpoint::Embeddings => "embeddings",
            }
            .to_owned(),
            authorization,
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        });
    }

    /// The fault for this request: the header's, else the queue's next, else the persistent
    /// one. Counted when it is a real fault.
    pub(crate) fn next_fault(&self, from_header: Option<Fault>) -> Option<Fault> {
        let fault = from_header
            .or_else(|| self.queue().pop_front())
            .or(*lock(&self.persistent))
            .filter(|fault| *fault != Fault::Pass);
        if let Some(fault) = fault {
            let mut stats = lock(&self.stats);
            stats.faults += 1;
            *stats
                .faults_by_kind
                .entry(fault.name().to_owned())
                .or_default() += 1;
        }
        fault
    }

    /// Adds reported chat usage to the stats.
    pub(crate) fn add_chat_usage(&self, prompt: u64, completion: u64) {
        let mut stats = lock(&self.stats);
        stats.prompt_tokens += prompt;
        stats.completion_tokens += completion;
    }

    /// The raw `Retry-After` and `retry-after-ms` values of the next `429`, when configured.
    fn next_retry_after(&self) -> (Option<&str>, Option<&str>) {
        let n = self.rate_limited.fetch_add(1, Ordering::Relaxed);
        (
            pick(&self.config.retry_after_values, n),
            pick(&self.config.retry_after_ms_values, n),
        )
    }

    /// A fresh response id.
    pub(crate) fn next_id(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Resolves when the server is stopping.
    pub(crate) async fn stopping(&self) {
        until_stopped(self.stopped.clone()).await;
    }

    /// Sleeps `delay`; `false` if the server stopped meanwhile.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        if delay.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.stopping() => false,
        }
    }
}

/// Value `n` of `values`, cycling; `None` when there are none.
fn pick(values: &[String], n: usize) -> Option<&str> {
    (!values.is_empty()).then(|| values[n % values.len()].as_str())
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stopped as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-request options: config values overridden by `x-mock-*` headers.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) fault: Option<Fault>,
    pub(crate) quirks: Vec<Quirk>,
    pub(crate) latency: Duration,
    pub(crate) token_latency: Duration,
    pub(crate) retry_after: Duration,
}

impl Options {
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        config: &MockConfig,
    ) -> Result<Options, String> {
        let text = |name: &str| -> Result<Option<&str>, String> {
            headers
                .get(name)
                .map(|value| value.to_str().map_err(|_| format!("{name}: not text")))
                .transpose()
        };
        let millis = |name: &str, default: Duration| -> Result<Duration, String> {
            match text(name)? {
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name}: {value:?} is not a number of milliseconds")),
                None => Ok(default),
            }
        };
        let fault = text("x-mock-fault")?
            .map(|name| name.parse::<Fault>())
            .transpose()?;
        let mut quirks = config.quirks.clone();
        if let Some(list) = text("x-mock-quirks")? {
            for name in list.split(',').filter(|name| !name.trim().is_empty()) {
                quirks.push(name.parse()?);
            }
        }
        Ok(Options {
            fault,
            quirks,
            latency: millis("x-mock-latency-ms", config.latency)?,
            token_latency: millis("x-mock-token-latency-ms", config.token_latency)?,
            retry_after: millis("x-mock-retry-after-ms", config.retry_after)?,
        })
    }

    pub(crate) fn has(&self, quirk: Quirk) -> bool {
        self.quirks.contains(&quirk)
    }
}

/// The response of a fault answered with an HTTP error, or `None` for other faults.
pub(crate) fn error_response(shared: &Shared, fault: Fault, options: &Options) -> Option<Response> {
    let (status, message, kind, code) = match fault {
        Fault::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests (mock).",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        Fault::InsufficientQuota => (
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota, please check your plan and billing details (mock).",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        Fault::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request (mock).",
            "server_error",
            None,
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later (mock).",
            "server_error",
            None,
        ),
        Fault::HtmlError => {
            let body = "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
            return Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    body,
                )
                    .into_response(),
            );
        }
        Fault::Pass
        | Fault::Hang
        | Fault::Stall
        | Fault::Truncate
        | Fault::Malformed
        | Fault::HugeBody
        | Fault::Endless
        | Fault::HugeHeader
        | Fault::Echo => return None,
    };
    let mut headers = HeaderMap::new();
    let raw = if fault == Fault::RateLimited {
        shared.next_retry_after()
    } else {
        (None, None)
    };
    if let (Some(_), _) | (_, Some(_)) = raw {
        // Sent as configured, whatever they say (a value that is no valid header is skipped).
        for (name, value) in [("retry-after", raw.0), ("retry-after-ms", raw.1)] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
    } else if fault == Fault::RateLimited {
        let millis = options.retry_after.as_millis();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(millis.div_ceil(1000) as u64),
        );
        if !millis.is_multiple_of(1000) {
            headers.insert("retry-after-ms", HeaderValue::from(millis as u64));
        }
    }
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    Some((status, headers, Json(body)).into_response())
}

/// The `echo` fault's answer: a 400 whose message repeats the request's URL and
/// `Authorization` header.
pub(crate) fn echo_response(headers: &HeaderMap, path: &str) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    bad_request(format!(
        "cannot route http://{}{path} (Authorization: {})",
        text(header::HOST),
        text(header::AUTHORIZATION)
    ))
}

/// A 400 in OpenAI's error format.
pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": "invalid_request_error", "param": null, "code": null}});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// What a hung request answers once the server stops.
pub(crate) fn stopping_response() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "mock server stopping").into_response()
}

/// A body that sends `head` and then nothing until the server stops or the client leaves.
pub(crate) fn stalled_body(shared: Arc<Shared>, head: Bytes) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        if tx.send(head).await.is_ok() {
            tokio::select! {
                () = shared.stopping() => {}
                () = tx.closed() => {}
            }
        }
    });
    channel_body(rx)
}

/// `response` with a header value of [`HUGE_HEADER_BYTES`] (for the `huge_header` fault).
pub(crate) fn with_huge_header(mut response: Response) -> Response {
    let padding = "a".repeat(HUGE_HEADER_BYTES);
    if let Ok(value) = HeaderValue::from_str(&padding) {
        response.headers_mut().insert("x-mock-padding", value);
    }
    response
}

/// What hostile bodies are padded with, sent without copying.
static FILLER: [u8; 64 * 1024] = [b'a'; 64 * 1024];

/// A body of `head`, then `filler` bytes of `a` (`None`: without end), then `tail`, made as it
/// is sent, so that the mock holds at most a few chunks whatever the size. It ends early when
/// the client goes away or the server stops.
pub(crate) fn padded_body(
    shared: Arc<Shared>,
    head: String,
    filler: Option<u64>,
    tail: String,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            let shared = shared.clone();
            async move {
                tokio::select! {
                    sent = tx.send(bytes) => sent.is_ok(),
                    () = shared.stopping() => false,
                }
            }
        };
        if !send(Bytes::from(head)).await {
            return;
        }
        let mut left = filler;
        while left != Some(0) {
            let size = left.map_or(FILLER.len(), |n| n.min(FILLER.len() as u64) as usize);
            if !send(Bytes::from_static(&FILLER[..size])).await {
                return;
            }
            left = left.map(|n| n - size as u64);
        }
        let _ = send(Bytes::from(tail)).await;
    });
    channel_body(rx)
}

/// A body repeating `event` without end, until the client goes away or the server stops.
pub(crate) fn endless_body(shared: Arc<Shared>, event: Bytes) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                sent = tx.send(event.clone()) => if sent.is_err() { return },
                () = shared.stopping() => return,
            }
        }
    });
    channel_body(rx)
}

/// A body streaming what arrives on `rx`, ending when the sender is dropped.
pub(crate) fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    }))
}

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: Option<String>,
    input: serde_json::Value,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: Option<String>,
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(Endpoint::Embeddings, &headers, &body);
    let options = match Options::from_headers(&headers, &shared.config) {
        Ok(options) => options,
        Err(message) => return bad_request(message),
    };
    let request: EmbeddingRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(format!("invalid request body: {err}")),
    };
    let inputs: Vec<String> = match request.input {
        serde_json::Value::String(text) => vec![text],
        serde_json::Value::Array(items) => {
            let texts: Option<Vec<String>> = items
                .into_iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect();
            match texts {
                Some(texts) => texts,
                None => return bad_request("input: only strings are supported by the mock"),
            }
        }
        _ => return bad_request("input: a string or an array of strings"),
    };
    if request.encoding_format.as_deref() == Some("base64") {
        return bad_request("encoding_format: base64 is not supported by the mock");
    }
    let dimensions = request.dimensions.unwrap_or(shared.config.dimensions);
    if dimensions == 0 {
        return bad_request("dimensions: must be greater than 0");
    }
    let fault = shared.next_fault(options.fault);
    if !shared.sleep(options.latency).await {
        return stopping_response();
    }
    if fault == Some(Fault::Echo) {
        return echo_response(&headers, "/v1/embeddings");
    }
    // A huge header comes with the normal answer (below).
    if let Some(fault) = fault.filter(|fault| *fault != Fault::HugeHeader) {
        if let Some(response) = error_response(&shared, fault, &options) {
            return response;
        }
        if matches!(fault, Fault::Hang | Fault::Stall) {
            shared.stopping().await;
            return stopping_response();
        }
        if matches!(fault, Fault::HugeBody | Fault::Endless) {
            let filler = (fault == Fault::HugeBody).then_some(shared.config.huge_bytes);
            let body = padded_body(
                shared.clone(),
                r#"{"object":"list","model":""#.to_owned(),
                filler,
                r#"","data":[]}"#.to_owned(),
            );
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        // Truncate and Malformed: an invalid JSON body.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,"#,
        )
            .into_response();
    }
    let tokens = script::prompt_tokens(inputs.iter().map(String::as_str));
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": script::embed(text, dimensions)})
        })
        .collect();
    let mut body = json!({
        "object": "list",
        "data": data,
        "model": request.model.unwrap_or_else(|| shared.config.model.clone()),
    });
    if !options.has(Quirk::NoUsage) {
        body["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
        lock(&shared.stats).embedding_tokens += tokens;
    }
    if fault == Some(Fault::HugeHeader) {
        return with_huge_header(Json(body).into_response());
    }
    Json(body).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(lock(&shared.stats).clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFaults {
    faults: Vec<Fault>,
}

async fn queue_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<QueueFaults>(&body) {
        Ok(request) => {
            let mut queue = shared.queue();
            queue.extend(request.faults);
            Json(json!({"queued": queue.len()})).into_response()
        }
        Err(err) => bad_request(format!("expected {{\"faults\": [\"429\", ...]}}: {err}")),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    shared.queue().clear();
    Json(json!({"queued": 0}))
}
