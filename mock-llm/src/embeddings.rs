//! `POST /v1/embeddings`: deterministic vectors ([`script::embed`]) with usage, faults and
//! quirks applied.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Fault, Quirk};
use crate::respond::{
    bad_request, echo_response, error_response, padded_body, stopping_response, with_huge_header,
};
use crate::script;
use crate::state::{lock, Endpoint, Options, Shared};

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

pub(crate) async fn embeddings(
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
