//! The `/_mock/*` control endpoints: `GET /_mock/stats`, and `POST`/`DELETE /_mock/faults`
//! to queue or clear faults.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::config::Fault;
use crate::respond::bad_request;
use crate::state::{lock, Shared};
use crate::stats::Stats;

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(lock(&shared.stats).clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFaults {
    faults: Vec<Fault>,
}

pub(crate) async fn queue_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<QueueFaults>(&body) {
        Ok(request) => {
            let mut queue = shared.queue();
            queue.extend(request.faults);
            Json(json!({"queued": queue.len()})).into_response()
        }
        Err(err) => bad_request(format!("expected {{\"faults\": [\"429\", ...]}}: {err}")),
    }
}

pub(crate) async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    shared.queue().clear();
    Json(json!({"queued": 0}))
}
