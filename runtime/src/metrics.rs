//! The daemon's Prometheus metrics: one process-wide registry, written to by every component
//! and encoded (text exposition format) by the daemon's `/metrics` endpoint.
//!
//! Names and labels are fixed here, in one place:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `troupe_tasks_total` | counter | `target` (agent, workflow, none), `name`, `outcome` (received, ok, error, dead_lettered) |
//! | `troupe_tasks_in_flight` | gauge | |
//! | `troupe_ingress_lag`, `troupe_ingress_pending` | gauge | |
//! | `troupe_model_call_seconds` | histogram | `model`, `outcome` (ok, error) |
//! | `troupe_model_tokens_total` | counter | `model`, `kind` (input, output) |
//! | `troupe_rate_limit_total` | counter | `limit`, `outcome` (waited, rejected) |
//! | `troupe_pool_items` | gauge | `pool`, `state` (running, ready, delayed) |
//! | `troupe_actor_restarts_total` | counter | `actor` |
//! | `troupe_store_errors_total` | counter | `kind` (unavailable, timeout, other) |
//! | `troupe_store_reconnects_total` | counter | |
//! | `troupe_rag_index_cache_bytes`, `troupe_rag_index_cache_namespaces` | gauge | |

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `troupe_tasks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// `agent`, `workflow`, or `none` (an entry refused before naming one).
    pub target: &'static str,
    /// The agent or workflow (empty when unknown).
    pub name: String,
    /// `received`, `ok`, `error` or `dead_lettered`.
    pub outcome: &'static str,
}

/// Labels of model metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The configured model name.
    pub model: String,
    /// `ok` or `error` (latency), `input` or `output` (tokens).
    pub kind: &'static str,
}

/// Labels of `troupe_rate_limit_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit.
    pub limit: String,
    /// `waited` or `rejected`.
    pub outcome: &'static str,
}

/// Labels of `troupe_pool_items`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The pool.
    pub pool: String,
    /// `running`, `ready` or `delayed`.
    pub state: &'static str,
}

/// Labels naming one thing (`actor`, store error `kind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    /// The name.
    pub name: String,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Tasks by target, name and outcome.
    pub tasks: Family<TaskLabels, Counter>,
    /// Tasks running now.
    pub tasks_in_flight: Gauge,
    /// Ingress entries not yet delivered to the consumer group.
    pub ingress_lag: Gauge,
    /// Ingress entries delivered and not yet acknowledged.
    pub ingress_pending: Gauge,
    /// Model call latency by model and outcome.
    pub model_seconds: Family<ModelLabels, Histogram>,
    /// Tokens by model and kind.
    pub model_tokens: Family<ModelLabels, Counter>,
    /// Rate-limit waits and rejections.
    pub rate_limits: Family<LimitLabels, Counter>,
    /// Work items per pool and state.
    pub pool_items: Family<PoolLabels, Gauge>,
    /// Restarts per supervised actor.
    pub actor_restarts: Family<NameLabel, Counter>,
    /// Store calls that failed, by kind.
    pub store_errors: Family<NameLabel, Counter>,
    /// Redis connections re-established.
    pub store_reconnects: Counter,
    /// Approximate bytes of the RAG namespace indexes held in process.
    pub rag_index_cache_bytes: Gauge,
    /// RAG namespace indexes held in process.
    pub rag_index_cache_namespaces: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let tasks = Family::<TaskLabels, Counter>::default();
        registry.register(
            "troupe_tasks",
            "Tasks by target, name and outcome",
            tasks.clone(),
        );
        let tasks_in_flight = Gauge::default();
        registry.register(
            "troupe_tasks_in_flight",
            "Tasks running now",
            tasks_in_flight.clone(),
        );
        let ingress_lag = Gauge::default();
        registry.register(
            "troupe_ingress_lag",
            "Ingress entries not yet delivered to the consumer group",
            ingress_lag.clone(),
        );
        let ingress_pending = Gauge::default();
        registry.register(
            "troupe_ingress_pending",
            "Ingress entries delivered and not yet acknowledged",
            ingress_pending.clone(),
        );
        let model_seconds = Family::<ModelLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "troupe_model_call_seconds",
            "Model call latency by model and outcome (kind)",
            model_seconds.clone(),
        );
        let model_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "troupe_model_tokens",
            "Tokens by model and kind (input, output)",
            model_tokens.clone(),
        );
        let rate_limits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "troupe_rate_limit",
            "Rate-limit waits and rejections",
            rate_limits.clone(),
        );
        let pool_items = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "troupe_pool_items",
            "Work items of this daemon's pools by state",
            pool_items.clone(),
        );
        let actor_restarts = Family::<NameLabel, Counter>::default();
        registry.register(
            "troupe_actor_restarts",
            "Restarts of supervised actors",
            actor_restarts.clone(),
        );
        let store_errors = Family::<NameLabel, Counter>::default();
        registry.register(
            "troupe_store_errors",
            "Store calls that failed, by kind",
            store_errors.clone(),
        );
        let store_reconnects = Counter::default();
        registry.register(
            "troupe_store_reconnects",
            "Redis connections re-established",
            store_reconnects.clone(),
        );
        let rag_index_cache_bytes = Gauge::default();
        registry.register(
            "troupe_rag_index_cache_bytes",
            "Approximate bytes of the RAG namespace indexes held in process",
            rag_index_cache_bytes.clone(),
        );
        let rag_index_cache_namespaces = Gauge::default();
        registry.register(
            "troupe_rag_index_cache_namespaces",
            "RAG namespace indexes held in process",
            rag_index_cache_namespaces.clone(),
        );
        Metrics {
            registry,
            tasks,
            tasks_in_flight,
            ingress_lag,
            ingress_pending,
            model_seconds,
            model_tokens,
            rate_limits,
            pool_items,
            actor_restarts,
            store_errors,
            store_reconnects,
            rag_index_cache_bytes,
            rag_index_cache_namespaces,
        }
    }

    /// Counts one task event.
    pub fn task(&self, target: &'static str, name: &str, outcome: &'static str) {
        self.tasks
            .get_or_create(&TaskLabels {
                target,
                name: name.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts one failed store call.
    pub fn store_error(&self, kind: &str) {
        self.store_errors
            .get_or_create(&NameLabel {
                name: kind.to_owned(),
            })
            .inc();
    }

    /// The text exposition of every metric (`/metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}
