//! Response bodies shared by the handlers: error answers for faults (`429`, `5xx`, HTML,
//! `echo`), `400`s, the stopping answer, and the bodies of hostile answers (stalled, padded,
//! endless, a huge header), streamed through a channel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::{Fault, HUGE_HEADER_BYTES};
use crate::state::{Options, Shared};

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
