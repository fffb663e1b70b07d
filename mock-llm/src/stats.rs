//! What the mock server counts and records, so tests can assert how many calls were made and
//! what usage was reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Request counters and the sum of the usage the server reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to `/v1/*` endpoints.
    pub requests: u64,
    /// Requests to `/v1/chat/completions`.
    pub chat_completions: u64,
    /// Requests to `/v1/embeddings`.
    pub embeddings: u64,
    /// Faults served (a `pass` slot is not a fault).
    pub faults: u64,
    /// Faults served, by name.
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Sum of `usage.prompt_tokens` reported by chat completions.
    pub prompt_tokens: u64,
    /// Sum of `usage.completion_tokens` reported by chat completions.
    pub completion_tokens: u64,
    /// Sum of `usage.prompt_tokens` reported by embeddings.
    pub embedding_tokens: u64,
}

/// One request as received (kept in memory by [`crate::MockHandle::requests`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `"chat_completions"` or `"embeddings"`.
    pub endpoint: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body (`null` when it was not JSON).
    pub body: serde_json::Value,
}
