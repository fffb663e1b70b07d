//! Embeddings from a configured model (`[rag] embedder = "NAME"`) for the knowledge bases,
//! and the knowledge bases as `[rag]` configures them. Here rather than in `troupe-rag`
//! because an embedding call is a model call: budget, usage and audit like a chat call's.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use troupe_config::Config;
use troupe_rag::{normalize, Caller, Embedder, LocalEmbedder, Rag, RagError};
use troupe_runtime::clock::now_ms;
use troupe_runtime::store::Store;

use crate::events::{EventKind, EventLog};
use crate::model::{ModelService, Usage};
use crate::usage::{Prices, UsageLedger, UsageRecord};

/// Knowledge bases as `[rag]` configures them: the local embedder, or the named model's
/// embeddings with usage recorded in `usage`.
pub fn rag_from_config(
    config: &Config,
    store: Arc<dyn Store>,
    usage: UsageLedger,
) -> Result<Rag, RagError> {
    let settings = config.rag.clone();
    let embedder: Arc<dyn Embedder> = match &settings.embedder {
        None => Arc::new(LocalEmbedder::new(settings.dimensions)),
        Some(name) => {
            let model_settings = config.models.get(name).ok_or_else(|| RagError::Invalid {
                what: "embedder",
                message: format!("no model named {name:?}"),
            })?;
            let model = crate::model::build(name, model_settings)?;
            let prices = Prices {
                input_per_million: model_settings.input_cost_per_million,
                output_per_million: model_settings.output_cost_per_million,
            };
            Arc::new(ModelEmbedder::new(model, prices, usage, store.clone()))
        }
    };
    Ok(Rag::new(store, settings, embedder))
}

/// Embeddings from a configured model (`[rag] embedder = "NAME"`): the group's budget is
/// checked first and every call's usage is recorded (with its audit event) like a chat
/// call's, under the caller's agent.
pub struct ModelEmbedder {
    model: Arc<dyn ModelService>,
    prices: Prices,
    usage: UsageLedger,
    store: Arc<dyn Store>,
    name: String,
}

impl ModelEmbedder {
    /// An embedder over `model`, recording usage in `usage`.
    pub fn new(
        model: Arc<dyn ModelService>,
        prices: Prices,
        usage: UsageLedger,
        store: Arc<dyn Store>,
    ) -> Self {
        let name = format!("model:{}", model.name());
        ModelEmbedder {
            model,
            prices,
            usage,
            store,
            name,
        }
    }
}

#[async_trait]
impl Embedder for ModelEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn embed(&self, caller: &Caller, texts: &[String]) -> Result<Vec<Vec<f32>>, RagError> {
        if let Err(err) = self.usage.check_budget(&caller.group).await {
            return Err(match err {
                crate::AgentError::Model(err) => RagError::Model(err),
                crate::AgentError::Store(err) => RagError::Store(err),
                other => RagError::Invalid {
                    what: "budget",
                    message: other.to_string(),
                },
            });
        }
        let started = Instant::now();
        let embeddings = self.model.embed(texts).await?;
        let usage = embeddings.usage.unwrap_or_else(|| Usage {
            input_tokens: texts.iter().map(|t| t.len().div_ceil(4) as u64).sum(),
            output_tokens: 0,
        });
        let record = UsageRecord {
            group: caller.group.clone(),
            user: caller.user.clone(),
            agent: caller.agent.clone(),
            thread: String::new(),
            model: self.model.name().to_owned(),
            input_tokens: usage.input_tokens,
            output_tokens: 0,
            latency_ms: started.elapsed().as_millis() as u64,
            cost: self.prices.cost(&usage),
            at_ms: now_ms(),
        };
        let mut writes = self.usage.writes(&record);
        let data = serde_json::to_value(&record).unwrap_or_default();
        writes.push(EventLog::write(&record.group, EventKind::Usage, &data));
        if let Err(err) = self.store.apply(writes).await {
            tracing::warn!(error = %err, "could not record embedding usage");
        }
        if embeddings.vectors.len() != texts.len() {
            return Err(RagError::Invalid {
                what: "embeddings",
                message: format!(
                    "{} vectors for {} texts from {}",
                    embeddings.vectors.len(),
                    texts.len(),
                    self.name
                ),
            });
        }
        let mut vectors = embeddings.vectors;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}
