//! Embeddings from a configured model (`[rag] embedder = "NAME"`) for the knowledge bases,
//! and the knowledge bases as `[rag]` configures them. Here rather than in `troupe-rag`
//! because an embedding call is a model call: it goes through the same [`Policies`] as a
//! chat call (budget, metrics, usage and audit).

use std::sync::Arc;

use async_trait::async_trait;
use troupe_config::Config;
use troupe_rag::{normalize, Caller, Embedder, LocalEmbedder, Rag, RagError};
use troupe_runtime::store::Store;

use crate::error::AgentError;
use crate::model::{ModelService, Usage};
use crate::policy::{Call, Policies};
use crate::usage::Prices;

/// Knowledge bases as `[rag]` configures them: the local embedder, or the named model's
/// embeddings through `policies`.
pub fn rag_from_config(
    config: &Config,
    store: Arc<dyn Store>,
    policies: Policies,
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
            Arc::new(ModelEmbedder::new(model, prices, policies))
        }
    };
    Ok(Rag::new(store, settings, embedder))
}

/// Embeddings from a configured model (`[rag] embedder = "NAME"`), each call through the
/// daemon's [`Policies`] under the caller's group, user and agent: the group's budget is
/// checked first, and its usage and audit event are recorded like a chat call's.
pub struct ModelEmbedder {
    model: Arc<dyn ModelService>,
    prices: Prices,
    policies: Policies,
    name: String,
}

impl ModelEmbedder {
    /// An embedder over `model` at `prices`, its calls through `policies`.
    pub fn new(model: Arc<dyn ModelService>, prices: Prices, policies: Policies) -> Self {
        let name = format!("model:{}", model.name());
        ModelEmbedder {
            model,
            prices,
            policies,
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
        let call = Call {
            group: &caller.group,
            user: &caller.user,
            agent: &caller.agent,
            thread: "",
            model: self.model.name(),
            prices: self.prices,
            // Embedding calls are not rate-limited (no `[rag]` limits).
            limits: &[],
            estimated_tokens: 0,
            hold: None,
        };
        let embed = async {
            let embeddings = self.model.embed(texts).await?;
            let usage = embeddings.usage.unwrap_or_else(|| Usage {
                input_tokens: texts.iter().map(|t| t.len().div_ceil(4) as u64).sum(),
                output_tokens: 0,
            });
            // Embeddings generate no tokens.
            let usage = Usage {
                output_tokens: 0,
                ..usage
            };
            Ok((embeddings, usage))
        };
        let embeddings = self.policies.call(&call, embed).await.map_err(rag_error)?;
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

/// A refused or failed embedding call, as the knowledge bases' error.
fn rag_error(err: AgentError) -> RagError {
    match err {
        AgentError::Model(err) => RagError::Model(err),
        AgentError::Store(err) => RagError::Store(err),
        other => RagError::Invalid {
            what: "budget",
            message: other.to_string(),
        },
    }
}
