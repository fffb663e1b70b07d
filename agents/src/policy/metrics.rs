//! Metrics of model calls: `troupe_model_seconds` (latency by outcome) and
//! `troupe_model_tokens` (input and output tokens), by configured model.

use std::time::Duration;

use async_trait::async_trait;
use troupe_runtime::metrics::{metrics, ModelLabels};
use troupe_runtime::store::Write;

use super::{Call, Layer, Outcome};

/// Counts every call's latency and tokens.
pub struct MetricsLayer;

#[async_trait]
impl Layer for MetricsLayer {
    async fn settle(&self, call: &Call<'_>, outcome: &Outcome<'_>, _: &mut Vec<Write>) {
        match outcome {
            Outcome::Answered(record) => {
                observe_latency(call.model, "ok", Duration::from_millis(record.latency_ms));
                for (kind, n) in [
                    ("input", record.input_tokens),
                    ("output", record.output_tokens),
                ] {
                    let labels = ModelLabels {
                        model: call.model.to_owned(),
                        kind,
                    };
                    metrics().model_tokens.get_or_create(&labels).inc_by(n);
                }
            }
            Outcome::Failed { latency, .. } => observe_latency(call.model, "error", *latency),
            Outcome::Refused => {}
        }
    }
}

fn observe_latency(model: &str, kind: &'static str, latency: Duration) {
    let labels = ModelLabels {
        model: model.to_owned(),
        kind,
    };
    metrics()
        .model_seconds
        .get_or_create(&labels)
        .observe(latency.as_secs_f64());
}
