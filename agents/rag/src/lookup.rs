//! Searches: [`Rag::search`] and [`Rag::search_in`] load a namespace's index, embed the query
//! if the search type needs a vector, and rank (`search.rs`); [`Rag::index_kind`] says which
//! vector index a search would use.

use tracing::Instrument as _;
use troupe_config::SearchType;

use crate::embed::Caller;
use crate::error::RagError;
use crate::handle::Rag;
use crate::reserved::public_namespace;
use crate::search::{self, Hit, Query, SearchRequest, IMPORTANCE_WEIGHT};

use crate::store::Keys;

impl Rag {
    /// Searches a namespace of `caller.group`. An empty or missing namespace gives no hit.
    pub async fn search(
        &self,
        caller: &Caller,
        request: SearchRequest,
    ) -> Result<Vec<Hit>, RagError> {
        let namespace = public_namespace(&caller.group, request.namespace.as_deref())?;
        self.search_in(caller, &namespace, &request).await
    }

    /// [`Rag::search`] in any namespace, reserved ones included (thread memory).
    pub async fn search_in(
        &self,
        caller: &Caller,
        namespace: &str,
        request: &SearchRequest,
    ) -> Result<Vec<Hit>, RagError> {
        let keys = Keys::new(&caller.group, namespace)?;
        let settings = &self.inner.settings;
        let span = tracing::info_span!("rag.search", group = %caller.group, namespace);
        async {
            let search_type = request.search_type.unwrap_or(settings.search_type);
            let loaded = self.loaded(&keys).await?;
            let plan = search::Plan {
                top_k: request.top_k.unwrap_or(settings.top_k),
                search_type,
                threshold: request
                    .vector_score_threshold
                    .unwrap_or(settings.vector_score_threshold),
                filters: &request.filters,
                chunk_context: request.chunk_context,
                importance_weight: request
                    .importance_weight
                    .unwrap_or(IMPORTANCE_WEIGHT)
                    .clamp(0.0, 1.0),
                weights: (settings.vector_weight, settings.text_weight),
            };
            if loaded.rows.is_empty() {
                return Ok(Vec::new());
            }
            let wants_vector = search_type != SearchType::Text;
            let wants_text = search_type != SearchType::Vector;
            let (vector, text) = match &request.query {
                Query::Vector(vector) if wants_vector => (Some(vector.clone()), None),
                Query::Vector(_) => {
                    return Err(RagError::Invalid {
                        what: "query",
                        message: "a keyword search needs a query text".to_owned(),
                    })
                }
                Query::Text(text) => {
                    let vector = if wants_vector {
                        let mut embedded = self
                            .inner
                            .embedder
                            .embed(caller, std::slice::from_ref(text))
                            .await?;
                        embedded.pop()
                    } else {
                        None
                    };
                    (vector, wants_text.then_some(text.as_str()))
                }
            };
            let hits = search::rank(namespace, &loaded, vector.as_deref(), text, &plan)?;
            tracing::debug!(hits = hits.len(), kind = loaded.index().kind(), "searched");
            Ok(hits)
        }
        .instrument(span)
        .await
    }

    /// The kind of vector index (`"exact"` or `"hnsw"`) a search of the namespace would use
    /// now (loading it if needed): with `index = "auto"`, large namespaces answer from the
    /// exact index until their graph is built in the background.
    pub async fn index_kind(
        &self,
        group: &str,
        namespace: Option<&str>,
    ) -> Result<&'static str, RagError> {
        let namespace = public_namespace(group, namespace)?;
        let loaded = self.loaded(&Keys::new(group, &namespace)?).await?;
        Ok(loaded.index().kind())
    }
}
