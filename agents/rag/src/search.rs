//! Search requests and hits: vector, keyword (BM25) and hybrid search (weighted reciprocal
//! rank fusion), filters, importance weighting, the chunks around each hit, and the text a
//! prompt is given.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use troupe_config::SearchType;

use super::error::RagError;
use super::namespace::Loaded;

/// The rank constant of reciprocal rank fusion (the usual 60).
const RRF_K: f32 = 60.0;
/// How much importance moves a score by default: `score * (1 - w + w * importance)`.
pub const IMPORTANCE_WEIGHT: f32 = 0.25;
/// Candidates taken from each ranking before fusion and reweighting, per hit asked for.
const CANDIDATES_PER_HIT: usize = 4;
/// Candidates taken from each ranking at least.
const MIN_CANDIDATES: usize = 32;

/// What to search with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// A text: embedded for vector search, tokenized for keyword search.
    Text(String),
    /// A vector of the namespace's dimension (vector search only).
    Vector(Vec<f32>),
}

/// One search. Unset fields take the `[rag]` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The namespace; the group's `default` one when `None`.
    pub namespace: Option<String>,
    /// The query.
    pub query: Query,
    /// Hits wanted.
    pub top_k: Option<usize>,
    /// Vector, text or hybrid.
    pub search_type: Option<SearchType>,
    /// Vector hits below this cosine similarity are dropped.
    pub vector_score_threshold: Option<f32>,
    /// Filter name -> accepted values: an entry matches when, for every name, its value is
    /// one of the accepted ones.
    pub filters: BTreeMap<String, Vec<String>>,
    /// Chunks of the same entry before and after each hit included in its text.
    pub chunk_context: usize,
    /// How much an entry's importance weighs (0 ignores it); [`IMPORTANCE_WEIGHT`] by default.
    pub importance_weight: Option<f32>,
}

impl SearchRequest {
    /// A text search with every other field at its default.
    pub fn text(query: impl Into<String>) -> Self {
        SearchRequest {
            namespace: None,
            query: Query::Text(query.into()),
            top_k: None,
            search_type: None,
            vector_score_threshold: None,
            filters: BTreeMap::new(),
            chunk_context: 0,
            importance_weight: None,
        }
    }
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The namespace.
    pub namespace: String,
    /// The entry key.
    pub key: String,
    /// The entry title.
    pub title: String,
    /// The entry metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The entry's filter values.
    pub filters: BTreeMap<String, String>,
    /// Position of the chunk in its entry.
    pub chunk: usize,
    /// The final score (cosine, BM25 or fused, times the importance factor).
    pub score: f32,
    /// Cosine similarity, when the vector ranking found it.
    pub vector_score: Option<f32>,
    /// BM25 score, when the keyword ranking found it.
    pub text_score: Option<f32>,
    /// The entry's importance.
    pub importance: f32,
    /// The text to paste into a prompt: the chunk with its context chunks.
    pub text: String,
}

/// Resolved search parameters.
pub(crate) struct Plan<'a> {
    pub top_k: usize,
    pub search_type: SearchType,
    pub threshold: f32,
    pub filters: &'a BTreeMap<String, Vec<String>>,
    pub chunk_context: usize,
    pub importance_weight: f32,
    /// Hybrid weights: (vector, text).
    pub weights: (f32, f32),
}

/// Ranks `loaded`'s rows for the query (`vector`: the embedded query, when vector search
/// runs; `text`: the query text, when keyword search runs).
pub(crate) fn rank(
    namespace: &str,
    loaded: &Loaded,
    vector: Option<&[f32]>,
    text: Option<&str>,
    plan: &Plan<'_>,
) -> Result<Vec<Hit>, RagError> {
    if loaded.rows.is_empty() || plan.top_k == 0 {
        return Ok(Vec::new());
    }
    let allow = allow_mask(loaded, plan.filters);
    let allow = allow.as_deref();
    let candidates = (plan.top_k * CANDIDATES_PER_HIT).max(MIN_CANDIDATES);
    let vector_hits = match vector {
        Some(query) => {
            if query.len() != loaded.dim {
                return Err(RagError::DimensionMismatch {
                    namespace: namespace.to_owned(),
                    expected: loaded.dim,
                    actual: query.len(),
                });
            }
            let mut hits = loaded.index().search(query, candidates, allow);
            hits.retain(|&(_, score)| score >= plan.threshold);
            hits
        }
        None => Vec::new(),
    };
    let text_hits = match text {
        Some(query) => loaded.text.search(query, candidates, allow),
        None => Vec::new(),
    };
    // row -> (vector score, text score, fused score)
    let mut scored: HashMap<usize, (Option<f32>, Option<f32>, f32)> = HashMap::new();
    let (wv, wt) = match plan.search_type {
        SearchType::Vector => (1.0, 0.0),
        SearchType::Text => (0.0, 1.0),
        SearchType::Hybrid => plan.weights,
    };
    for (rank, &(row, score)) in vector_hits.iter().enumerate() {
        let entry = scored.entry(row).or_insert((None, None, 0.0));
        entry.0 = Some(score);
        entry.2 += match plan.search_type {
            SearchType::Hybrid => wv / (RRF_K + rank as f32 + 1.0),
            _ => score,
        };
    }
    for (rank, &(row, score)) in text_hits.iter().enumerate() {
        let entry = scored.entry(row).or_insert((None, None, 0.0));
        entry.1 = Some(score);
        entry.2 += match plan.search_type {
            SearchType::Hybrid => wt / (RRF_K + rank as f32 + 1.0),
            _ => score,
        };
    }
    let mut hits: Vec<(usize, Option<f32>, Option<f32>, f32)> = scored
        .into_iter()
        .map(|(row, (v, t, fused))| {
            let (entry, _) = loaded.rows[row];
            let importance = loaded.entries[entry as usize].record.importance;
            let w = plan.importance_weight;
            (row, v, t, fused * (1.0 - w + w * importance))
        })
        .collect();
    hits.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
    hits.truncate(plan.top_k);
    Ok(hits
        .into_iter()
        .map(|(row, vector_score, text_score, score)| {
            let (entry, chunk) = loaded.rows[row];
            let entry = &loaded.entries[entry as usize];
            let chunk = chunk as usize;
            let from = chunk.saturating_sub(plan.chunk_context);
            let to = (chunk + plan.chunk_context).min(entry.texts.len().saturating_sub(1));
            Hit {
                namespace: namespace.to_owned(),
                key: entry.record.key.clone(),
                title: entry.record.title.clone(),
                metadata: entry.record.metadata.clone(),
                filters: entry.record.filters.clone(),
                chunk,
                score,
                vector_score,
                text_score,
                importance: entry.record.importance,
                text: entry.texts[from..=to].join("\n"),
            }
        })
        .collect())
}

/// Which rows pass the filters (`None`: no filter, all do).
fn allow_mask(loaded: &Loaded, filters: &BTreeMap<String, Vec<String>>) -> Option<Vec<bool>> {
    if filters.is_empty() {
        return None;
    }
    let passes: Vec<bool> = loaded
        .entries
        .iter()
        .map(|entry| {
            filters.iter().all(|(name, accepted)| {
                entry
                    .record
                    .filters
                    .get(name)
                    .is_some_and(|value| accepted.contains(value))
            })
        })
        .collect();
    Some(
        loaded
            .rows
            .iter()
            .map(|&(entry, _)| passes[entry as usize])
            .collect(),
    )
}

/// The hits as prompt text: numbered passages, then the numbered sources (title and key).
/// Empty when there is no hit.
pub fn format_hits(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for (i, hit) in hits.iter().enumerate() {
        out.push_str(&format!(
            "[{}] {}\n{}\n\n",
            i + 1,
            hit.title,
            hit.text.trim()
        ));
    }
    out.push_str("Sources:\n");
    out.push_str(&format_sources(hits));
    out
}

/// One line per hit: `[n] title (namespace/key)`.
pub fn format_sources(hits: &[Hit]) -> String {
    hits.iter()
        .enumerate()
        .map(|(i, hit)| format!("[{}] {} ({}/{})", i + 1, hit.title, hit.namespace, hit.key))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a `knowledge` step says when nothing matched.
pub const NO_PASSAGE: &str = "No passage of the knowledge base matches.";

/// The branches of a `knowledge` step's output (see [`format_hits`]), for templates:
/// `passages` (the numbered passages) and `sources` (the numbered sources, `(none)` when
/// nothing matched). Derived from the output text, so a replayed step has them too.
pub fn knowledge_branches(output: &str) -> std::collections::BTreeMap<String, String> {
    let (passages, sources) = match output.rsplit_once("\nSources:\n") {
        Some((passages, sources)) => (passages.trim_end(), sources),
        None => (output, "(none)"),
    };
    [
        ("passages".to_owned(), passages.to_owned()),
        ("sources".to_owned(), sources.to_owned()),
    ]
    .into()
}
