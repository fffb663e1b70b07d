//! troupe-rag: knowledge bases of a group — documents chunked, embedded and searched by
//! vector, keyword or both — used by agents as the `rag_search` tool, by workflows as the
//! `knowledge` step, by the `troupe rag` CLI, and by thread memory (`troupe_agents::memory`,
//! in a reserved namespace per user). It knows no agent, thread or usage ledger: embeddings
//! come through the [`Embedder`] trait (`troupe_agents::embedder::ModelEmbedder` is the one
//! that calls a model and records its usage).
//!
//! [`Rag`] is the one handle (cheap to clone). Every operation takes the caller's group and
//! touches only keys under `rag:{group}:` (see [`Keys`]), so a group can never read, list,
//! replace or delete another group's documents. Namespaces whose name starts with `_` are
//! reserved (thread memory) and refused to callers from outside.
//!
//! - `chunk.rs`: paragraph- and sentence-aware chunking; `embed.rs`: the `Embedder` trait
//!   and the local lexical embedder; `text.rs`: tokenizer, BM25.
//! - `index.rs`: exact search on contiguous f32 rows and the HNSW index, one trait.
//! - `store.rs`: the persisted layout; `namespace.rs`: the in-process index per namespace,
//!   loaded on demand and reloaded when the namespace's version in the store moves.
//! - `cache.rs`: those indexes, at most `[rag] index_cache` bytes of them (by approximate
//!   heap size), the least recently searched dropped first and loaded again at their next
//!   search (a search in progress keeps its own).
//! - `search.rs`: ranking, fusion, filters, importance, context; `tool.rs`: `rag_search`.
//! - `handle.rs`: [`Rag`] itself; its operations by kind: `add.rs` (adding documents),
//!   `lookup.rs` (searches), `entries.rs` (listing and deleting entries and namespaces);
//!   `reserved.rs`: the default namespace, and which ones are reserved.
//! - Reserved namespaces (`_…`) are reached only through the `…_in` methods, [`Rag::store`],
//!   [`Rag::records`] and [`expiring`]: their owner (thread memory) bounds their keys; public
//!   namespaces are operator data and never expire.
//!
//! Every key is listed with its bound in ARCHITECTURE.md, "Key map".

#![warn(missing_docs)]

mod add;
mod cache;
mod chunk;
mod embed;
mod entries;
mod error;
mod handle;
mod index;
mod lookup;
mod namespace;
mod reserved;
mod search;
mod store;
mod text;
mod tool;

pub use self::add::{AddOutcome, AddStatus, NewDocument, DEFAULT_IMPORTANCE};
pub use self::cache::IndexCacheStats;
pub use self::chunk::{chunk, Chunk, ChunkOptions};
pub use self::embed::{normalize, Caller, Embedder, LocalEmbedder};
pub use self::error::RagError;
pub use self::handle::Rag;
pub use self::index::{dot, FlatIndex, HnswIndex, VectorIndex};
pub use self::reserved::{expiring, is_reserved, DEFAULT_NAMESPACE};
pub use self::search::{
    format_hits, format_sources, knowledge_branches, Hit, Query, SearchRequest, IMPORTANCE_WEIGHT,
    NO_PASSAGE,
};
pub use self::store::{content_hash, decode, EntryRecord, Keys, NamespaceInfo};
pub use self::tool::{check_options, RagSearchTool, RAG_SEARCH_KIND};
