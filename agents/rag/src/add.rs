//! Adding documents: [`NewDocument`] in, chunked, embedded and written as a new version of its
//! entry ([`Rag::add`], [`Rag::add_in`]); [`AddOutcome`] out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use troupe_runtime::store::Write;

use crate::chunk::{chunk, ChunkOptions};
use crate::embed::Caller;
use crate::error::RagError;
use crate::handle::Rag;
use crate::reserved::{expiring, is_reserved, public_namespace};

use crate::store::{content_hash, decode, encode_chunks, EntryRecord, Keys};

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

impl Rag {
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
    #[tracing::instrument(
        name = "rag.ingest",
        level = "info",
        skip_all,
        fields(group = %caller.group, namespace = namespace, key = %doc.key)
    )]
    pub async fn add_in(
        &self,
        caller: &Caller,
        namespace: &str,
        doc: NewDocument,
        ttl: Option<Duration>,
    ) -> Result<AddOutcome, RagError> {
        let keys = Keys::new(&caller.group, namespace)?;
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
                key: keys.group_namespaces(),
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
}
