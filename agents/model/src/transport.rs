//! HTTP under async-openai: our own `reqwest` client (connect timeout), an endpoint config that
//! holds the API key as a sensitive header (never logged, never read from other variables), a
//! tower service that replaces async-openai's built-in retry layer (troupe retries itself,
//! bounded) and keeps the status, `Retry-After` and body of error responses, and the mapping of
//! every failure to a [`ModelError`].
//!
//! Hostile servers: `Retry-After` is parsed whatever it holds (seconds, an HTTP date, garbage)
//! and clamped to the model's `max_retry_time`; a successful response's body is read through
//! [`ResponseBound`] (at most `max_response_bytes` in a whole body, or in one SSE event), and
//! [`Redact`] keeps the base URL, any URL and the API key out of error messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use secrecy::SecretString;

use super::wire::excerpt;
use super::ModelError;

/// Largest error body read, in bytes.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Where requests go and how they authenticate.
pub(super) struct Endpoint {
    base: String,
    key: SecretString,
    headers: HeaderMap,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// `base_url` (trailing `/` ignored) with an optional bearer key. The error never contains
    /// the key.
    pub(super) fn new(base_url: &str, key: Option<String>) -> Result<Endpoint, String> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the API key contains characters not allowed in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Endpoint {
            base: base_url.trim_end_matches('/').to_owned(),
            key: SecretString::from(key.unwrap_or_default()),
            headers,
        })
    }
}

impl Config for Endpoint {
    fn headers(&self) -> HeaderMap {
        self.headers.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn query(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }

    fn api_base(&self) -> &str {
        &self.base
    }

    fn api_key(&self) -> &SecretString {
        &self.key
    }
}

/// The HTTP client of a model: connect timeout set, nothing else (the idle timeout is applied
/// around each read by the caller, so long healthy streams are never cut).
pub(super) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))
}

/// An error response, caught before async-openai parses (and loses the headers of) it.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
pub(super) struct HttpFailure {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

/// The bound on what one attempt reads from a successful response: at most `max_bytes` in
/// a whole body, or in each SSE event of a stream (the assembled answer is bounded by
/// [`super::wire::Assembly`]). Shared by the attempt and its transport: [`Self::exceeded`]
/// tells the attempt that a read failed because of the bound.
#[derive(Debug)]
pub(super) struct ResponseBound {
    max_bytes: usize,
    streamed: bool,
    exceeded: AtomicBool,
}

impl ResponseBound {
    /// A bound of `max_bytes` per body (`streamed = false`) or per SSE event.
    pub(super) fn new(max_bytes: usize, streamed: bool) -> Arc<ResponseBound> {
        Arc::new(ResponseBound {
            max_bytes,
            streamed,
            exceeded: AtomicBool::new(false),
        })
    }

    /// Whether the response went past the bound (and reading it was stopped).
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    fn trip(&self) -> TooLarge {
        self.exceeded.store(true, Ordering::Release);
        TooLarge {
            limit: self.max_bytes,
        }
    }

    /// `response` with its body read through this bound.
    fn wrap(self: &Arc<Self>, response: reqwest::Response) -> reqwest::Response {
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        let scan = if self.streamed {
            Scan::Events {
                event: 0,
                line: 0,
                after_cr: false,
            }
        } else {
            Scan::Body { seen: 0 }
        };
        let body = BoundedBody {
            inner: body,
            scan,
            bound: self.clone(),
        };
        reqwest::Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
    }
}

/// A body went past its [`ResponseBound`].
#[derive(Debug, thiserror::Error)]
#[error("the response is larger than {limit} bytes")]
struct TooLarge {
    limit: usize,
}

/// What a body sent so far, against the bound.
#[derive(Debug)]
enum Scan {
    /// A whole body: its bytes so far.
    Body { seen: usize },
    /// An SSE stream: the bytes of the event being received (its lines without their
    /// terminators) and of its current line; whether the last byte was a CR (of a CRLF).
    Events {
        event: usize,
        line: usize,
        after_cr: bool,
    },
}

impl Scan {
    /// Counts `data`; `false` once past `max` bytes.
    fn feed(&mut self, data: &[u8], max: usize) -> bool {
        match self {
            Scan::Body { seen } => {
                *seen = seen.saturating_add(data.len());
                *seen <= max
            }
            Scan::Events {
                event,
                line,
                after_cr,
            } => {
                for &byte in data {
                    match byte {
                        b'\n' if *after_cr => *after_cr = false,
                        b'\r' | b'\n' => {
                            // An empty line ends the event.
                            if *line == 0 {
                                *event = 0;
                            }
                            *line = 0;
                            *after_cr = byte == b'\r';
                        }
                        _ => {
                            *after_cr = false;
                            *line += 1;
                            *event += 1;
                            if *event > max {
                                return false;
                            }
                        }
                    }
                }
                true
            }
        }
    }
}

/// A response body that fails once it goes past its bound, so nothing beyond it is buffered.
struct BoundedBody {
    inner: reqwest::Body,
    scan: Scan,
    bound: Arc<ResponseBound>,
}

impl http_body::Body for BoundedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.bound.exceeded() {
            return Poll::Ready(Some(Err(Box::new(this.bound.trip()))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !this.scan.feed(data, this.bound.max_bytes) {
                        return Poll::Ready(Some(Err(Box::new(this.bound.trip()))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Executes async-openai's requests with our client, without retries: error responses keep
/// their status, clamped Retry-After and (bounded) body; successful ones are read through the
/// attempt's [`ResponseBound`].
#[derive(Debug, Clone)]
pub(super) struct Transport {
    client: reqwest::Client,
    bound: Arc<ResponseBound>,
    max_wait: Duration,
}

impl Transport {
    /// Requests on `client`; a Retry-After is clamped to `max_wait` (`max_retry_time`).
    pub(super) fn new(
        client: reqwest::Client,
        bound: Arc<ResponseBound>,
        max_wait: Duration,
    ) -> Transport {
        Transport {
            client,
            bound,
            max_wait,
        }
    }
}

type TransportFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let client = self.client.clone();
        let bound = self.bound.clone();
        let max_wait = self.max_wait;
        Box::pin(async move {
            let request = factory.build().await?;
            let mut response = client.execute(request).await?;
            if response.status().is_success() {
                // A whole body announced past the bound is not read at all (a smaller
                // announcement is not trusted either: the body is counted as it arrives).
                let announced = response.content_length().unwrap_or(0);
                if !bound.streamed && announced > bound.max_bytes as u64 {
                    return Err(OpenAIError::Boxed(Box::new(bound.trip())));
                }
                return Ok(bound.wrap(response));
            }
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers(), max_wait, SystemTime::now());
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_LIMIT {
                match response.chunk().await {
                    Ok(Some(bytes)) => body.extend_from_slice(&bytes),
                    Ok(None) | Err(_) => break,
                }
            }
            body.truncate(ERROR_BODY_LIMIT);
            Err(OpenAIError::Boxed(Box::new(HttpFailure {
                status,
                retry_after,
                body: String::from_utf8_lossy(&body).into_owned(),
            })))
        })
    }
}

/// How long the server asked to wait, at most `max`: `retry-after-ms` (OpenAI's precise
/// variant) or `Retry-After` in seconds or as an HTTP date (the delay from `now`; a past date
/// is zero). Huge and infinite values are `max`; negative, NaN and unreadable ones are
/// ignored (the backoff applies).
pub(super) fn retry_after(headers: &HeaderMap, max: Duration, now: SystemTime) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let seconds = |text: &str, scale: f64| {
        let value = text.trim().parse::<f64>().ok()? / scale;
        if value.is_nan() || value < 0.0 {
            return None;
        }
        // Too large for a Duration (or infinite): the most we wait anyway.
        Some(Duration::try_from_secs_f64(value).map_or(max, |wait| wait.min(max)))
    };
    if let Some(wait) = header("retry-after-ms").and_then(|ms| seconds(ms, 1000.0)) {
        return Some(wait);
    }
    let text = header(RETRY_AFTER.as_str())?;
    seconds(text, 1.0).or_else(|| {
        let at = httpdate::parse_http_date(text.trim()).ok()?;
        Some(
            at.duration_since(now)
                .map_or(Duration::ZERO, |wait| wait.min(max)),
        )
    })
}

/// Text that never goes into an error message: the model's base URL, its host, path and
/// credentials, the API key, and any URL at all (a provider's error body may echo the
/// request). Applied to every error an attempt returns.
#[derive(Debug, Clone, Default)]
pub(super) struct Redact {
    secrets: Vec<String>,
}

impl Redact {
    /// What to hide for `base_url` and `key`.
    pub(super) fn new(base_url: &str, key: Option<&str>) -> Redact {
        let mut secrets = vec![base_url.trim_end_matches('/').to_owned()];
        if let Ok(url) = reqwest::Url::parse(base_url) {
            if let Some(host) = url.host_str() {
                secrets.push(host.to_owned());
            }
            let path = url.path().trim_end_matches('/');
            if !path.is_empty() {
                secrets.push(path.to_owned());
            }
            if !url.username().is_empty() {
                secrets.push(url.username().to_owned());
            }
            if let Some(password) = url.password() {
                secrets.push(password.to_owned());
            }
        }
        secrets.extend(key.map(str::to_owned));
        secrets.retain(|secret| !secret.is_empty());
        // The longest first, so that a host inside the base URL does not split it.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Redact { secrets }
    }

    /// `text` without URLs (`[url]`) and secrets (`[redacted]`).
    pub(super) fn apply(&self, text: &str) -> String {
        let mut out = without_urls(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// `text` with every `http://` or `https://` URL replaced by `[url]`.
fn without_urls(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    while let Some(found) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| lower[rest..].find(scheme))
        .min()
    {
        let start = rest + found;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "\"'<>()[]{}`,;".contains(c))
            .map_or(text.len(), |len| start + len);
        out.push_str(&text[rest..start]);
        out.push_str("[url]");
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
}

/// What a failed call means for troupe.
pub(super) fn classify(model: &str, connect_timeout: Duration, error: OpenAIError) -> ModelError {
    let model = model.to_owned();
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
            Ok(failure) => from_status(model, *failure),
            Err(other) => match other.downcast::<TooLarge>() {
                Ok(too_large) => ModelError::ResponseTooLarge {
                    model,
                    limit: too_large.limit,
                },
                Err(other) => ModelError::Connection {
                    model,
                    message: other.to_string(),
                },
            },
        },
        OpenAIError::Reqwest(err) => from_reqwest(model, connect_timeout, err),
        OpenAIError::ApiError(api) => from_status(
            model,
            HttpFailure {
                status: api.status_code.as_u16(),
                retry_after: None,
                body: api.api_error.message,
            },
        ),
        OpenAIError::JSONDeserialize(err, content) => ModelError::MalformedResponse {
            model,
            message: format!("{err} in: {}", excerpt(&content)),
        },
        OpenAIError::StreamError(err) => ModelError::Connection {
            model,
            message: format!("stream failed: {err}"),
        },
        OpenAIError::InvalidArgument(message) => ModelError::InvalidRequest { model, message },
        other => ModelError::InvalidRequest {
            model,
            message: other.to_string(),
        },
    }
}

/// A client-side failure, without the request URL reqwest puts in its messages.
fn from_reqwest(model: String, connect_timeout: Duration, err: reqwest::Error) -> ModelError {
    if err.is_connect() && err.is_timeout() {
        return ModelError::Timeout {
            model,
            phase: "connecting",
            after: connect_timeout,
        };
    }
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    ModelError::Connection { model, message }
}

fn from_status(model: String, failure: HttpFailure) -> ModelError {
    let HttpFailure {
        status,
        retry_after,
        body,
    } = failure;
    let error = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value.get("error").cloned());
    let field = |name: &str| {
        error
            .as_ref()
            .and_then(|error| error.get(name))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    let quota = field("code").as_deref() == Some("insufficient_quota")
        || field("type").as_deref() == Some("insufficient_quota");
    match status {
        429 if quota => ModelError::QuotaExceeded {
            model,
            message: field("message").unwrap_or_else(|| excerpt(&body)),
        },
        429 => ModelError::RateLimited { model, retry_after },
        400..=499 => ModelError::InvalidRequest {
            model,
            message: format!(
                "HTTP {status}: {}",
                field("message").unwrap_or_else(|| excerpt(&body))
            ),
        },
        _ => ModelError::Provider {
            model,
            status,
            body: excerpt(&body),
        },
    }
}

#[cfg(test)]
mod tests;
