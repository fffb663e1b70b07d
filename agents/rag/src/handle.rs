//! [`Rag`], the handle on the knowledge bases: what every operation shares (store, settings,
//! embedder, the in-process index cache) and the reads they are built on. The operations are
//! in `add.rs`, `lookup.rs` and `entries.rs`.

use std::sync::Arc;

use troupe_config::RagSettings;
use troupe_runtime::store::Store;

use crate::cache::{IndexCache, IndexCacheStats};
use crate::embed::Embedder;
use crate::error::RagError;
use crate::namespace::{IndexChoice, Loaded};
use crate::store::Keys;

/// What every clone of a [`Rag`] shares.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) settings: RagSettings,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) cache: IndexCache,
}

/// Knowledge bases over a store. Cheap to clone; clones share the in-process indexes.
#[derive(Clone)]
pub struct Rag {
    pub(crate) inner: Arc<Inner>,
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

    /// The store the knowledge bases live in (for the keys of a reserved namespace that its
    /// owner keeps beside the entries, e.g. thread memory's cursors).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The namespace's index at its current version (loaded or reloaded as needed), weighed
    /// into the index cache (which may evict other namespaces).
    pub(crate) async fn loaded(&self, keys: &Keys) -> Result<Arc<Loaded>, RagError> {
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

    /// The namespace's dimension, if it has one.
    pub(crate) async fn dimension(&self, keys: &Keys) -> Result<Option<usize>, RagError> {
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
}
