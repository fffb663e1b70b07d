//! The serde image of the configuration file: every key optional, no validation beyond types.
//! Unknown keys are rejected everywhere except `[tools.X.options]`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub ingress: RawIngress,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub agents: BTreeMap<String, RawAgent>,
    #[serde(default)]
    pub tools: BTreeMap<String, RawTool>,
    #[serde(default)]
    pub limits: BTreeMap<String, RawLimit>,
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    pub workflows: BTreeMap<String, RawWorkflow>,
    #[serde(default)]
    pub crons: BTreeMap<String, RawCron>,
    #[serde(default)]
    pub budgets: BTreeMap<String, RawBudget>,
    #[serde(default)]
    pub rag: RawRag,
}

/// `[rag]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRag {
    pub embedder: Option<String>,
    pub dimensions: Option<usize>,
    pub chunk_size: Option<usize>,
    pub chunk_overlap: Option<usize>,
    pub max_chunk: Option<usize>,
    pub embed_batch: Option<usize>,
    pub embed_parallelism: Option<usize>,
    pub top_k: Option<usize>,
    pub vector_score_threshold: Option<f32>,
    pub search_type: Option<String>,
    pub vector_weight: Option<f32>,
    pub text_weight: Option<f32>,
    pub index: Option<String>,
    pub approximate_above: Option<usize>,
    pub index_cache: Option<usize>,
}

/// `[agents.X.memory]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMemory {
    pub limit: Option<usize>,
    pub range: Option<usize>,
    pub other_threads: Option<bool>,
    pub min_score: Option<f32>,
}

/// `[budgets.GROUP]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub tokens_per_day: Option<u64>,
    pub cost_per_day: Option<f64>,
}

/// `[daemon]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    pub name: Option<String>,
    pub shutdown_grace: Option<String>,
    pub passivate_after: Option<String>,
    pub thread_retention: Option<String>,
    pub run_retention: Option<String>,
    pub mailbox_capacity: Option<usize>,
    pub max_restarts: Option<u32>,
    pub restart_window: Option<String>,
    pub workers: Option<usize>,
    pub max_runs: Option<usize>,
    pub max_runs_per_group: Option<usize>,
    pub metrics_addr: Option<String>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub reconnect_max_delay: Option<String>,
}

/// `[ingress]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub stream: Option<String>,
    pub results: Option<String>,
    pub dead: Option<String>,
    pub group: Option<String>,
    pub batch: Option<usize>,
    pub block: Option<String>,
    pub claim_idle: Option<String>,
    pub max_deliveries: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub max_in_flight_per_group: Option<usize>,
    pub max_input_bytes: Option<usize>,
    pub max_entry_bytes: Option<usize>,
    pub max_len: Option<u64>,
    pub reply_retention: Option<String>,
    pub consumer_expiry: Option<String>,
    pub abandoned_group_after: Option<String>,
    #[serde(default)]
    pub auth: RawIngressAuth,
}

/// `[ingress.auth]`: producer authentication.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngressAuth {
    pub mode: Option<String>,
    pub max_expiry: Option<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, RawIngressAuthGroup>,
}

/// `[ingress.auth.groups.GROUP]`: one producer secret per group.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngressAuthGroup {
    pub secret_env: Option<String>,
}

/// `[models.X]`: keys of every provider; validation rejects another provider's keys.
/// There is deliberately no `api_key`: secrets are only named (`api_key_env`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_retries: Option<u32>,
    pub max_retry_time: Option<String>,
    pub initial_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub input_cost_per_million: Option<f64>,
    pub output_cost_per_million: Option<f64>,
    pub max_response_bytes: Option<usize>,
    pub record: Option<String>,
    pub script: Option<String>,
    pub cassette: Option<String>,
    pub latency: Option<String>,
}

/// `[agents.X]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub tools: Option<Vec<String>>,
    pub limits: Option<Vec<String>>,
    pub pool: Option<String>,
    pub max_steps: Option<u32>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub context_messages: Option<usize>,
    pub max_tool_calls: Option<usize>,
    pub tool_concurrency: Option<usize>,
    pub memory: Option<RawMemory>,
}

/// `[tools.X]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTool {
    pub kind: Option<String>,
    pub timeout: Option<String>,
    pub requires_approval: Option<bool>,
    pub options: Option<toml::Table>,
}

/// `[limits.X]`: keys of both kinds; validation rejects the other kind's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub kind: Option<String>,
    pub rate: Option<u64>,
    pub period: Option<String>,
    pub capacity: Option<u64>,
    pub start: Option<String>,
    pub key: Option<String>,
    pub unit: Option<String>,
    pub backend: Option<String>,
    pub shards: Option<u32>,
    pub on_store_error: Option<String>,
    pub max_wait: Option<String>,
    pub max_reserved: Option<u64>,
}

/// `[pools.X]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub max_parallelism: Option<usize>,
    pub max_attempts: Option<u32>,
    pub initial_backoff: Option<String>,
    pub backoff_base: Option<f64>,
    pub max_backoff: Option<String>,
    pub jitter: Option<bool>,
    pub retention: Option<String>,
}

/// `[workflows.X]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkflow {
    pub description: Option<String>,
    pub steps: Option<Vec<RawStep>>,
}

/// `[[workflows.X.steps]]`: keys of every step kind; validation rejects another kind's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub input: Option<String>,
    pub timeout: Option<String>,
    pub pool: Option<String>,
    pub retries: Option<u32>,
    pub agent: Option<String>,
    pub agents: Option<Vec<String>>,
    pub max_concurrency: Option<usize>,
    pub on: Option<String>,
    pub routes: Option<BTreeMap<String, String>>,
    pub default: Option<String>,
    pub limits: Option<Vec<String>>,
    pub scorers: Option<Vec<String>>,
    pub until_score: Option<f64>,
    pub max_iterations: Option<u32>,
    pub duration: Option<String>,
    pub event: Option<String>,
    pub workflow: Option<String>,
    pub namespace: Option<String>,
    pub top_k: Option<usize>,
}

/// `[crons.X]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCron {
    pub schedule: Option<String>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub agent: Option<String>,
    pub workflow: Option<String>,
    pub input: Option<String>,
}
