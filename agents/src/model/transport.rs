//! HTTP under async-openai: our own `reqwest` client (connect timeout), an endpoint config that
//! holds the API key as a sensitive header (never logged, never read from other variables), a
//! tower service that replaces async-openai's built-in retry layer (troupe retries itself,
//! bounded) and keeps the status, `Retry-After` and body of error responses, and the mapping of
//! every failure to a [`ModelError`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
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

/// Executes async-openai's requests with our client, without retries.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    client: reqwest::Client,
}

impl Transport {
    pub(super) fn new(client: reqwest::Client) -> Transport {
        Transport { client }
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
        Box::pin(async move {
            let request = factory.build().await?;
            let mut response = client.execute(request).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_LIMIT {
                match response.chunk().await {
                    Ok(Some(bytes)) => body.extend_from_slice(&bytes),
                    Ok(None) | Err(_) => break,
                }
            }
            Err(OpenAIError::Boxed(Box::new(HttpFailure {
                status,
                retry_after,
                body: String::from_utf8_lossy(&body).into_owned(),
            })))
        })
    }
}

/// `retry-after-ms` (OpenAI's precise variant) or `Retry-After` in seconds; HTTP dates are
/// ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    header(RETRY_AFTER.as_str())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
}

/// What a failed call means for troupe.
pub(super) fn classify(model: &str, connect_timeout: Duration, error: OpenAIError) -> ModelError {
    let model = model.to_owned();
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
            Ok(failure) => from_status(model, *failure),
            Err(other) => ModelError::Connection {
                model,
                message: other.to_string(),
            },
        },
        OpenAIError::Reqwest(err) => from_reqwest(model, connect_timeout, &err),
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

fn from_reqwest(model: String, connect_timeout: Duration, err: &reqwest::Error) -> ModelError {
    if err.is_connect() && err.is_timeout() {
        return ModelError::Timeout {
            model,
            phase: "connecting",
            after: connect_timeout,
        };
    }
    let message = err.to_string();
    let message = match std::error::Error::source(err) {
        Some(source) => format!("{message}: {source}"),
        None => message,
    };
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
mod tests {
    use super::*;

    fn failure(status: u16, body: &str) -> ModelError {
        from_status(
            "m".to_owned(),
            HttpFailure {
                status,
                retry_after: Some(Duration::from_secs(2)),
                body: body.to_owned(),
            },
        )
    }

    #[test]
    fn statuses_map_to_errors() {
        assert!(matches!(
            failure(429, "{}"),
            ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            failure(429, r#"{"error":{"code":"insufficient_quota","message":"pay"}}"#),
            ModelError::QuotaExceeded { message, .. } if message == "pay"
        ));
        assert!(matches!(
            failure(502, "<html><h1>Bad gateway</h1></html>"),
            ModelError::Provider { status: 502, body, .. } if body.contains("Bad gateway")
        ));
        assert!(matches!(
            failure(401, "nope"),
            ModelError::InvalidRequest { .. }
        ));
    }

    #[test]
    fn retry_after_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        headers.clear();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn keys_are_sensitive_and_not_in_debug() {
        let endpoint = match Endpoint::new("http://h/v1/", Some("sk-secret".into())) {
            Ok(endpoint) => endpoint,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(
            endpoint.url("/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert!(endpoint.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{endpoint:?}").contains("sk-secret"));
        let err = Endpoint::new("http://h", Some("bad\nkey".into()))
            .err()
            .unwrap_or_default();
        assert!(!err.contains("bad"));
        assert!(Endpoint::new("http://h", None).map(|e| e.headers().is_empty()) == Ok(true));
    }
}
