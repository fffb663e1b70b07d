//! `[rag]`: retrieval — the embedder, chunking, search defaults and the index kind — and
//! `[agents.X.memory]`, an agent's recall of earlier thread messages.

/// How a search ranks chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchType {
    /// Cosine similarity of embeddings.
    Vector,
    /// Keyword (BM25) match.
    Text,
    /// Both, fused by weighted reciprocal rank.
    Hybrid,
}

impl SearchType {
    /// Every name, as written in the file.
    pub const NAMES: &'static [&'static str] = &["vector", "text", "hybrid"];

    /// The type called `name`.
    pub fn parse(name: &str) -> Option<SearchType> {
        match name {
            "vector" => Some(SearchType::Vector),
            "text" => Some(SearchType::Text),
            "hybrid" => Some(SearchType::Hybrid),
            _ => None,
        }
    }
}

/// Which vector index a namespace uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Exact search over contiguous f32 vectors, always.
    Exact,
    /// Exact up to `approximate_above` chunks, approximate (HNSW) above.
    Auto,
}

/// `[rag]`
#[derive(Debug, Clone, PartialEq)]
pub struct RagSettings {
    /// `None`: the local lexical embedder; `Some(name)`: the `[models.X]` whose embeddings
    /// endpoint is used.
    pub embedder: Option<String>,
    /// Dimensions of the local embedder (> 0).
    pub dimensions: usize,
    /// Target chunk length in characters (> 0).
    pub chunk_size: usize,
    /// Characters carried over between consecutive chunks (< chunk_size).
    pub chunk_overlap: usize,
    /// Hard cap of a chunk in characters (>= chunk_size).
    pub max_chunk: usize,
    /// Chunks per embedding request (> 0).
    pub embed_batch: usize,
    /// Embedding requests of one ingestion in flight at once (> 0).
    pub embed_parallelism: usize,
    /// Default number of hits (> 0).
    pub top_k: usize,
    /// Default minimum cosine similarity of a vector hit.
    pub vector_score_threshold: f32,
    /// Default search type.
    pub search_type: SearchType,
    /// Weight of the vector ranking in hybrid search (>= 0).
    pub vector_weight: f32,
    /// Weight of the keyword ranking in hybrid search (>= 0).
    pub text_weight: f32,
    /// Index kind.
    pub index: IndexKind,
    /// Chunks above which `index = "auto"` builds the approximate index.
    pub approximate_above: usize,
    /// Bytes of loaded namespace indexes kept in process (> 0); the least recently
    /// searched are dropped past it (one namespace larger than this is still kept alone).
    pub index_cache: usize,
}

/// `[agents.X.memory]`: before each turn, the agent recalls the earlier messages of the
/// thread (and optionally of the user's other threads) most relevant to the new message.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySettings {
    /// Messages recalled (> 0).
    pub limit: usize,
    /// Messages before and after each recalled one, included with it.
    pub range: usize,
    /// Also search the same user's other threads of the group.
    pub other_threads: bool,
    /// Recalled messages scoring below this are dropped.
    pub min_score: f32,
}
