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
//! - Reserved namespaces (`_…`) are reached only through the `…_in` methods, [`Rag::store`],
//!   [`Rag::records`] and [`expiring`]: their owner (thread memory) bounds their keys; public
//!   namespaces are operator data and never expire.
//!
//! Every key is listed with its bound in ARCHITECTURE.md, "Key map".

mod cache;
mod chunk;
mod embed;
mod error;
mod index;
mod namespace;
mod search;
mod store;
mod text;
mod tool;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use troupe_config::{RagSettings, SearchType};
use troupe_runtime::store::{Store, Write};

use self::cache::IndexCache;
pub use self::cache::IndexCacheStats;
pub use self::chunk::{chunk, Chunk, ChunkOptions};
pub use self::embed::{normalize, Caller, Embedder, LocalEmbedder};
pub use self::error::RagError;
pub use self::index::{dot, FlatIndex, HnswIndex, VectorIndex};
use self::namespace::IndexChoice;
pub use self::search::{
    format_hits, format_sources, knowledge_branches, Hit, Query, SearchRequest, IMPORTANCE_WEIGHT,
    NO_PASSAGE,
};
use self::store::encode_chunks;
pub use self::store::{check_name, content_hash, decode, EntryRecord, Keys, NamespaceInfo};
pub use self::tool::{check_options, RagSearchTool, RAG_SEARCH_KIND};

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default importance of a document.
pub const DEFAULT_IMPORTANCE: f32 = 0.5;

/// A document to add.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewDocument {
    /// The namespace; [`DEFAULT_NAMESPACE`] when `None`.
    pub namespace: Option<String>,
    /// The entry key: adding the same key again replaces the entry.
    pub key: String,
    /// Title (the key when empty).
    pub title: String,
    /// The text.
    pub content: String,
    /// Free metadata returned with hits.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Filter values: name -> value.
    pub filters: BTreeMap<String, String>,
    /// 0..=1; [`DEFAULT_IMPORTANCE`] when `None`.
    pub importance: Option<f32>,
}

/// What adding a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddStatus {
    /// A new entry.
    Added,
    /// A new version of an existing entry replaced the old one.
    Replaced,
    /// The same document was already there: nothing was written.
    Unchanged,
}

/// The outcome of adding a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// The namespace.
    pub namespace: String,
    /// The entry key.
    pub key: String,
    /// The live version.
    pub version: String,
    /// Its chunks.
    pub chunks: usize,
    /// What happened.
    pub status: AddStatus,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: RagSettings,
    embedder: Arc<dyn Embedder>,
    cache: IndexCache,
}

/// Knowledge bases over a store. Cheap to clone; clones share the in-process indexes.
#[derive(Clone)]
pub struct Rag {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rag")
            .field("embedder", &self.inner.embedder.name())
            .finish_non_exhaustive()
    }
}

impl Rag {
    /// Knowledge bases in `store` with `settings`, embedding with `embedder`.
    pub fn new(store: Arc<dyn Store>, settings: RagSettings, embedder: Arc<dyn Embedder>) -> Self {
        let cache = IndexCache::new(settings.index_cache);
        Rag {
            inner: Arc::new(Inner {
                store,
                settings,
                embedder,
                cache,
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RagSettings {
        &self.inner.settings
    }

    /// The embedder's name.
    pub fn embedder(&self) -> &str {
        self.inner.embedder.name()
    }

    /// What the in-process index cache holds now (shared by every clone).
    pub fn index_cache(&self) -> IndexCacheStats {
        self.inner.cache.stats()
    }

    /// Adds `doc` to a namespace of `caller.group`. Re-adding a key replaces its entry
    /// atomically: the new version's chunks are written first, then the entry's pointer is
    /// switched in one batch (searches see the old version until then), then the old chunks
    /// are deleted. The same document again is [`AddStatus::Unchanged`] and writes nothing.
    pub async fn add(&self, caller: &Caller, doc: NewDocument) -> Result<AddOutcome, RagError> {
        let namespace = public_namespace(&caller.group, doc.namespace.as_deref())?;
        self.add_in(caller, &namespace, doc, None).await
    }

    /// [`Rag::add`] to any namespace, reserved ones included. With `ttl`, the entry's chunks,
    /// the namespace's entries, state and dimension expire `ttl` after this write (thread
    /// memory); without, nothing expires.
    pub async fn add_in(
        &self,
        caller: &Caller,
        namespace: &str,
        doc: NewDocument,
        ttl: Option<Duration>,
    ) -> Result<AddOutcome, RagError> {
        check_name("group", &caller.group)?;
        check_name("namespace", namespace)?;
        let span =
            tracing::info_span!("rag.ingest", group = %caller.group, namespace, key = %doc.key);
        self.ingest(caller, namespace, doc, ttl)
            .instrument(span)
            .await
    }

    async fn ingest(
        &self,
        caller: &Caller,
        namespace: &str,
        doc: NewDocument,
        ttl: Option<Duration>,
    ) -> Result<AddOutcome, RagError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        if doc.key.is_empty() || doc.key.len() > 512 {
            return Err(RagError::Invalid {
                what: "key",
                message: "an entry key has 1-512 bytes".to_owned(),
            });
        }
        if doc.content.trim().is_empty() {
            return Err(RagError::Invalid {
                what: "document",
                message: format!("{:?} has no text", doc.key),
            });
        }
        let importance = doc.importance.unwrap_or(DEFAULT_IMPORTANCE);
        if !(0.0..=1.0).contains(&importance) {
            return Err(RagError::Invalid {
                what: "importance",
                message: format!("{importance} is not between 0 and 1"),
            });
        }
        for name in doc.filters.keys() {
            if name.is_empty() {
                return Err(RagError::Invalid {
                    what: "filter",
                    message: "a filter needs a name".to_owned(),
                });
            }
        }
        let title = if doc.title.is_empty() {
            doc.key.clone()
        } else {
            doc.title.clone()
        };
        let options = ChunkOptions::from(settings);
        let metadata = serde_json::Value::Object(doc.metadata.clone()).to_string();
        let filters = serde_json::to_string(&doc.filters).unwrap_or_default();
        let shape = format!(
            "{}/{}/{}/{}",
            options.size,
            options.overlap,
            options.max,
            inner.embedder.name()
        );
        let hash = content_hash(&[
            doc.content.as_bytes(),
            title.as_bytes(),
            metadata.as_bytes(),
            filters.as_bytes(),
            &importance.to_le_bytes(),
            shape.as_bytes(),
        ]);
        let keys = Keys::new(&caller.group, namespace);
        let store = &inner.store;
        let previous: Option<EntryRecord> = match store.hget(&keys.entries(), &doc.key).await? {
            Some(bytes) if !bytes.is_empty() => Some(decode(&keys.entries(), &bytes)?),
            _ => None,
        };
        if let Some(previous) = previous.as_ref().filter(|p| p.hash == hash) {
            tracing::debug!("unchanged document: nothing written");
            return Ok(AddOutcome {
                namespace: namespace.to_owned(),
                key: doc.key,
                version: previous.version.clone(),
                chunks: previous.chunks,
                status: AddStatus::Unchanged,
            });
        }
        let chunks = chunk(&doc.content, &options);
        let texts: Vec<String> = chunks.into_iter().map(|c| c.text).collect();
        let vectors = self.embed_all(caller, &texts).await?;
        let dim = vectors.first().map_or(0, Vec::len);
        if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
            return Err(RagError::Invalid {
                what: "embeddings",
                message: format!(
                    "{} returned vectors of unequal or zero length",
                    inner.embedder.name()
                ),
            });
        }
        self.fix_dimension(&keys, namespace, dim, ttl).await?;
        let version = format!(
            "{:x}-{:08x}",
            troupe_runtime::clock::now_ms(),
            rand::random::<u32>()
        );
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        store
            .set(
                &keys.chunks(&version),
                &encode_chunks(dim, &flat, &texts),
                ttl,
            )
            .await?;
        let record = EntryRecord {
            key: doc.key.clone(),
            version: version.clone(),
            title,
            metadata: doc.metadata,
            filters: doc.filters,
            importance,
            hash,
            chunks: texts.len(),
            chars: doc.content.chars().count(),
            embedder: inner.embedder.name().to_owned(),
            added_ms: troupe_runtime::clock::now_ms(),
        };
        let encoded = serde_json::to_vec(&record).map_err(|err| RagError::Invalid {
            what: "metadata",
            message: err.to_string(),
        })?;
        let mut writes = vec![
            Write::HSet {
                key: keys.entries(),
                fields: vec![(doc.key.clone(), encoded)],
            },
            Write::HIncrBy {
                key: keys.state(),
                field: "version".to_owned(),
                delta: 1,
            },
        ];
        // Reserved namespaces are not listed: their keys can all expire.
        if !is_reserved(namespace) {
            writes.push(Write::HSet {
                key: Keys::namespaces(&caller.group),
                fields: vec![(namespace.to_owned(), dim.to_string().into_bytes())],
            });
        }
        if let Some(ttl) = ttl {
            writes.extend(expiring(&keys, ttl));
        }
        store.apply(writes).await?;
        if let Some(previous) = &previous {
            store.del(&[keys.chunks(&previous.version)]).await?;
        }
        tracing::info!(chunks = texts.len(), dim, "document added");
        Ok(AddOutcome {
            namespace: namespace.to_owned(),
            key: doc.key,
            version,
            chunks: texts.len(),
            status: if previous.is_some() {
                AddStatus::Replaced
            } else {
                AddStatus::Added
            },
        })
    }

    /// Embeds `texts` in batches of `embed_batch`, at most `embed_parallelism` in flight.
    async fn embed_all(
        &self,
        caller: &Caller,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, RagError> {
        let settings = &self.inner.settings;
        let calls = texts
            .chunks(settings.embed_batch)
            .map(<[String]>::to_vec)
            .map(|batch| {
                let embedder = Arc::clone(&self.inner.embedder);
                let caller = caller.clone();
                async move { embedder.embed(&caller, &batch).await }
            })
            .collect::<Vec<_>>();
        let batches: Vec<Vec<Vec<f32>>> = futures::stream::iter(calls)
            .buffered(settings.embed_parallelism)
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Fixes the namespace's dimension to `dim` if it has none (expiring after `ttl` if
    /// given), else checks it.
    async fn fix_dimension(
        &self,
        keys: &Keys,
        namespace: &str,
        dim: usize,
        ttl: Option<Duration>,
    ) -> Result<(), RagError> {
        let store = &self.inner.store;
        if store
            .set_nx(&keys.dim(), dim.to_string().as_bytes(), ttl)
            .await?
        {
            return Ok(());
        }
        let expected = self.dimension(keys).await?.unwrap_or(dim);
        if expected != dim {
            return Err(RagError::DimensionMismatch {
                namespace: namespace.to_owned(),
                expected,
                actual: dim,
            });
        }
        Ok(())
    }

    async fn dimension(&self, keys: &Keys) -> Result<Option<usize>, RagError> {
        let key = keys.dim();
        match self.inner.store.get(&key).await? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or(RagError::Corrupt {
                    key,
                    message: "dimension is not an integer".to_owned(),
                }),
        }
    }

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
        check_name("group", &caller.group)?;
        check_name("namespace", namespace)?;
        let settings = &self.inner.settings;
        let span = tracing::info_span!("rag.search", group = %caller.group, namespace);
        async {
            let search_type = request.search_type.unwrap_or(settings.search_type);
            let keys = Keys::new(&caller.group, namespace);
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
        check_name("group", group)?;
        let loaded = self.loaded(&Keys::new(group, &namespace)).await?;
        Ok(loaded.index().kind())
    }

    /// The store the knowledge bases live in (for the keys of a reserved namespace that its
    /// owner keeps beside the entries, e.g. thread memory's cursors).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The records of every entry of the namespace `keys`, at its current version (those
    /// whose chunks could not be read included).
    pub async fn records(&self, keys: &Keys) -> Result<Vec<EntryRecord>, RagError> {
        let loaded = self.loaded(keys).await?;
        Ok(loaded
            .entries
            .iter()
            .map(|e| e.record.clone())
            .chain(loaded.missing.iter().cloned())
            .collect())
    }

    /// The namespace's index at its current version (loaded or reloaded as needed), weighed
    /// into the index cache (which may evict other namespaces).
    async fn loaded(&self, keys: &Keys) -> Result<Arc<namespace::Loaded>, RagError> {
        let cache = &self.inner.cache;
        let slot = cache.slot(keys);
        let settings = &self.inner.settings;
        let choice = IndexChoice {
            kind: settings.index,
            approximate_above: settings.approximate_above,
        };
        let loaded = slot
            .current(self.inner.store.as_ref(), keys, choice)
            .await?;
        cache.weigh(keys, &slot, loaded.weight);
        Ok(loaded)
    }

    /// Deletes the entry `key`; returns whether it existed.
    pub async fn delete_entry(
        &self,
        group: &str,
        namespace: Option<&str>,
        key: &str,
    ) -> Result<bool, RagError> {
        let namespace = public_namespace(group, namespace)?;
        self.delete_entry_in(group, &namespace, key).await
    }

    /// [`Rag::delete_entry`] in any namespace, reserved ones included.
    pub async fn delete_entry_in(
        &self,
        group: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, RagError> {
        check_name("group", group)?;
        let keys = Keys::new(group, namespace);
        let store = &self.inner.store;
        let record: EntryRecord = match store.hget(&keys.entries(), key).await? {
            Some(bytes) if !bytes.is_empty() => decode(&keys.entries(), &bytes)?,
            _ => return Ok(false),
        };
        store
            .apply(vec![
                Write::HSet {
                    key: keys.entries(),
                    fields: vec![(key.to_owned(), Vec::new())],
                },
                Write::HIncrBy {
                    key: keys.state(),
                    field: "version".to_owned(),
                    delta: 1,
                },
            ])
            .await?;
        store.del(&[keys.chunks(&record.version)]).await?;
        store.hdel(&keys.entries(), &[key]).await?;
        tracing::info!(group, namespace, key, "entry deleted");
        Ok(true)
    }

    /// Deletes `records` of the namespace `keys` in one batch with `also` (each marked deleted,
    /// the version bumped, their chunks removed), then drops their fields.
    pub async fn delete_records(
        &self,
        keys: &Keys,
        records: &[&EntryRecord],
        also: Vec<Write>,
    ) -> Result<(), RagError> {
        let store = &self.inner.store;
        let mut writes = Vec::with_capacity(records.len() + also.len() + 2);
        if !records.is_empty() {
            writes.push(Write::HSet {
                key: keys.entries(),
                fields: records
                    .iter()
                    .map(|r| (r.key.clone(), Vec::new()))
                    .collect(),
            });
            writes.push(Write::HIncrBy {
                key: keys.state(),
                field: "version".to_owned(),
                delta: 1,
            });
            writes.extend(records.iter().map(|r| Write::Del {
                key: keys.chunks(&r.version),
            }));
        }
        writes.extend(also);
        if writes.is_empty() {
            return Ok(());
        }
        store.apply(writes).await?;
        if !records.is_empty() {
            let fields: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
            store.hdel(&keys.entries(), &fields).await?;
        }
        Ok(())
    }

    /// Deletes a namespace of `group` with every entry; returns how many entries it had.
    pub async fn delete_namespace(&self, group: &str, namespace: &str) -> Result<usize, RagError> {
        let namespace = public_namespace(group, Some(namespace))?;
        check_name("group", group)?;
        let keys = Keys::new(group, &namespace);
        let store = &self.inner.store;
        let entries = self.entries_in(group, &namespace).await?;
        let mut writes: Vec<Write> = entries
            .iter()
            .map(|e| Write::Del {
                key: keys.chunks(&e.version),
            })
            .collect();
        writes.push(Write::Del {
            key: keys.entries(),
        });
        writes.push(Write::Del { key: keys.dim() });
        writes.push(Write::HIncrBy {
            key: keys.state(),
            field: "version".to_owned(),
            delta: 1,
        });
        store.apply(writes).await?;
        store
            .hdel(&Keys::namespaces(group), &[namespace.as_str()])
            .await?;
        tracing::info!(group, namespace = %namespace, entries = entries.len(), "namespace deleted");
        Ok(entries.len())
    }

    /// The entries of a namespace of `group`, by key.
    pub async fn entries(
        &self,
        group: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<EntryRecord>, RagError> {
        let namespace = public_namespace(group, namespace)?;
        self.entries_in(group, &namespace).await
    }

    async fn entries_in(&self, group: &str, namespace: &str) -> Result<Vec<EntryRecord>, RagError> {
        check_name("group", group)?;
        let keys = Keys::new(group, namespace);
        let mut out = Vec::new();
        for (field, value) in self.inner.store.hgetall(&keys.entries()).await? {
            if !value.is_empty() {
                out.push(decode(&format!("{}/{field}", keys.entries()), &value)?);
            }
        }
        Ok(out)
    }

    /// The namespaces of `group` (reserved ones left out), by name.
    pub async fn namespaces(&self, group: &str) -> Result<Vec<NamespaceInfo>, RagError> {
        check_name("group", group)?;
        let mut out = Vec::new();
        for (name, _) in self.inner.store.hgetall(&Keys::namespaces(group)).await? {
            if is_reserved(&name) {
                continue;
            }
            let entries = self.entries_in(group, &name).await?;
            let dim = self.dimension(&Keys::new(group, &name)).await?.unwrap_or(0);
            out.push(NamespaceInfo {
                chunks: entries.iter().map(|e| e.chunks).sum(),
                entries: entries.len(),
                dim,
                name,
            });
        }
        Ok(out)
    }
}

/// The writes that make a namespace's entries, state and dimension expire after `ttl`.
pub fn expiring(keys: &Keys, ttl: Duration) -> [Write; 3] {
    [keys.entries(), keys.state(), keys.dim()].map(|key| Write::Expire { key, ttl })
}

/// Whether `namespace` is reserved for troupe's own use (thread memory).
pub fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with('_')
}

/// The namespace a caller from outside names (the default when none), refusing reserved ones.
fn public_namespace(group: &str, namespace: Option<&str>) -> Result<String, RagError> {
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
    check_name("namespace", namespace)?;
    if is_reserved(namespace) {
        return Err(RagError::Forbidden {
            group: group.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    Ok(namespace.to_owned())
}
