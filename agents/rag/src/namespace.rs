//! A namespace's in-process index: its entries, chunk texts and vectors, a vector index and a
//! keyword index, loaded from the store on demand and reloaded when the namespace's version
//! in the store moves (another daemon, or this one, changed it). Entries whose version did
//! not change are reused, not read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use troupe_config::IndexKind;
use troupe_runtime::store::Store;

use super::error::RagError;
use super::index::{FlatIndex, HnswIndex, VectorIndex};
use super::store::{decode, decode_chunks, EntryRecord, Keys};
use super::text::TextIndex;

/// One entry's live version, in memory.
#[derive(Debug)]
pub(crate) struct LoadedEntry {
    pub record: EntryRecord,
    pub texts: Vec<String>,
    pub vectors: Vec<f32>,
}

/// A namespace as searched.
pub(crate) struct Loaded {
    /// The store version it reflects (-1: incomplete, reload at the next search).
    pub version: i64,
    /// Vector dimension (0 when empty).
    pub dim: usize,
    /// Entries by key order.
    pub entries: Vec<Arc<LoadedEntry>>,
    /// Entries whose chunk record was not found (replaced or deleted between the two reads,
    /// or expired): left out of the search.
    pub missing: Vec<EntryRecord>,
    /// Row -> (entry index, chunk index).
    pub rows: Vec<(u32, u32)>,
    /// Vectors of every row: the exact index, replaced by the approximate one once it is
    /// built in the background (`index = "auto"` above `approximate_above` rows).
    index: RwLock<Arc<dyn VectorIndex>>,
    /// Keywords of every row.
    pub text: TextIndex,
    /// Approximate heap bytes of all of the above (see [`weigh`]): what the index cache
    /// counts against `[rag] index_cache`.
    pub weight: usize,
}

impl Loaded {
    /// The vector index searches use now.
    pub fn index(&self) -> Arc<dyn VectorIndex> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a namespace's vector index is chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexChoice {
    pub kind: IndexKind,
    pub approximate_above: usize,
}

/// The cached index of one namespace, and the lock that lets one search at a time reload it.
#[derive(Default)]
pub(crate) struct Slot {
    current: Mutex<Option<Arc<Loaded>>>,
    loading: tokio::sync::Mutex<()>,
}

impl Slot {
    fn get(&self) -> Option<Arc<Loaded>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, loaded: Arc<Loaded>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(loaded);
    }

    /// The index at the store's current version, reloading it when it moved.
    pub(crate) async fn current(
        &self,
        store: &dyn Store,
        keys: &Keys,
        choice: IndexChoice,
    ) -> Result<Arc<Loaded>, RagError> {
        let version = version(store, keys).await?;
        if let Some(loaded) = self.get().filter(|l| l.version == version) {
            return Ok(loaded);
        }
        let _loading = self.loading.lock().await;
        let version = self::version(store, keys).await?;
        let previous = self.get();
        if let Some(loaded) = previous.as_ref().filter(|l| l.version == version) {
            return Ok(loaded.clone());
        }
        let loaded = load(store, keys, version, previous.as_deref(), choice).await?;
        self.set(loaded.clone());
        Ok(loaded)
    }
}

/// The namespace's version in the store (0 when never written).
pub(crate) async fn version(store: &dyn Store, keys: &Keys) -> Result<i64, RagError> {
    let key = keys.state();
    Ok(match store.hget(&key, "version").await? {
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| RagError::Corrupt {
                key,
                message: "version is not an integer".to_owned(),
            })?,
        None => 0,
    })
}

/// Bytes of the HNSW graph per row: its zero layer holds 64 links of 4 bytes (`M = 32` in
/// `instant-distance`); the upper layers hold about 1/32 of the rows and are left out.
const HNSW_BYTES_PER_ROW: usize = 64 * 4;
/// Bytes counted for one metadata field besides its name (a small JSON value).
const METADATA_FIELD_BYTES: usize = 64;

/// The approximate heap bytes of a loaded namespace: per entry its record (strings, filters,
/// metadata), chunk texts and f32 vectors; the row table; the exact index's copy of the
/// vectors (`floats` of them); the keyword index; and with the approximate index, its graph
/// and its two further copies of the vectors (the points and the exact fallback). Allocator
/// overhead and small fixed parts are left out, so the real size is somewhat larger.
fn weigh(
    entries: &[Arc<LoadedEntry>],
    rows: &[(u32, u32)],
    text: &TextIndex,
    floats: usize,
    approximate: bool,
) -> usize {
    const STRING: usize = std::mem::size_of::<String>();
    let entries: usize = entries
        .iter()
        .map(|entry| {
            let record = &entry.record;
            let strings = [
                &record.key,
                &record.version,
                &record.title,
                &record.hash,
                &record.embedder,
            ]
            .iter()
            .map(|s| s.capacity())
            .sum::<usize>();
            let filters: usize = record
                .filters
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity() + 2 * STRING)
                .sum();
            let metadata: usize = record
                .metadata
                .keys()
                .map(|k| k.capacity() + METADATA_FIELD_BYTES)
                .sum();
            let texts: usize = entry.texts.iter().map(|t| t.capacity() + STRING).sum();
            std::mem::size_of::<LoadedEntry>()
                + strings
                + filters
                + metadata
                + texts
                + entry.vectors.capacity() * 4
        })
        .sum();
    let vectors = floats * 4;
    let hnsw = if approximate {
        2 * vectors + rows.len() * (HNSW_BYTES_PER_ROW + STRING + 4)
    } else {
        0
    };
    entries + rows.len() * 8 + vectors + text.heap_bytes() + hnsw
}

/// Reads the namespace's entries (reusing those of `previous` whose version is unchanged)
/// and builds its indexes.
async fn load(
    store: &dyn Store,
    keys: &Keys,
    version: i64,
    previous: Option<&Loaded>,
    choice: IndexChoice,
) -> Result<Arc<Loaded>, RagError> {
    let entries_key = keys.entries();
    let mut records = Vec::new();
    for (field, value) in store.hgetall(&entries_key).await? {
        if value.is_empty() {
            continue;
        }
        let record: EntryRecord = decode(&format!("{entries_key}/{field}"), &value)?;
        records.push(record);
    }
    let known: HashMap<(&str, &str), &Arc<LoadedEntry>> = previous
        .map(|p| {
            p.entries
                .iter()
                .map(|e| ((e.record.key.as_str(), e.record.version.as_str()), e))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<String> = records
        .iter()
        .filter(|r| !known.contains_key(&(r.key.as_str(), r.version.as_str())))
        .map(|r| keys.chunks(&r.version))
        .collect();
    let mut fetched = if missing.is_empty() {
        Vec::new()
    } else {
        store.get_many(&missing).await?
    }
    .into_iter();
    let mut complete = true;
    let mut missing = Vec::new();
    let mut entries = Vec::with_capacity(records.len());
    let mut dim = 0;
    for record in records {
        let reused = known
            .get(&(record.key.as_str(), record.version.as_str()))
            .map(|e| Arc::clone(e));
        let entry = match reused {
            Some(entry) => entry,
            None => {
                let key = keys.chunks(&record.version);
                match fetched.next().flatten() {
                    Some(bytes) => {
                        let chunks = decode_chunks(&key, &bytes)?;
                        dim = chunks.dim;
                        Arc::new(LoadedEntry {
                            record,
                            texts: chunks.texts,
                            vectors: chunks.vectors,
                        })
                    }
                    // Replaced or deleted between the two reads: the next search reloads.
                    None => {
                        complete = false;
                        missing.push(record);
                        continue;
                    }
                }
            }
        };
        if dim == 0 && !entry.texts.is_empty() {
            dim = entry.vectors.len() / entry.texts.len();
        }
        entries.push(entry);
    }
    let mut rows = Vec::new();
    let mut data = Vec::new();
    for (e, entry) in entries.iter().enumerate() {
        if entry.texts.is_empty() || entry.vectors.len() != entry.texts.len() * dim {
            continue;
        }
        for c in 0..entry.texts.len() {
            rows.push((e as u32, c as u32));
        }
        data.extend_from_slice(&entry.vectors);
    }
    let text = TextIndex::build(
        rows.iter()
            .map(|&(e, c)| entries[e as usize].texts[c as usize].as_str()),
    );
    let rows_count = rows.len();
    let approximate =
        matches!(choice.kind, IndexKind::Auto) && rows_count > choice.approximate_above;
    let hnsw_data = approximate.then(|| data.clone());
    let weight = weigh(&entries, &rows, &text, data.len(), approximate);
    let loaded = Arc::new(Loaded {
        version: if complete { version } else { -1 },
        dim,
        entries,
        missing,
        rows,
        index: RwLock::new(Arc::new(FlatIndex::new(dim, data))),
        text,
        weight,
    });
    tracing::debug!(namespace = %keys.entries(), rows = rows_count, version, approximate, "namespace index loaded");
    if let Some(data) = hnsw_data {
        // The graph takes long to build (minutes at 100,000 rows): searches use the exact
        // index meanwhile, then this version's graph.
        let target = Arc::downgrade(&loaded);
        let namespace = keys.entries();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let graph = HnswIndex::build(dim, data);
            if let Some(loaded) = target.upgrade() {
                *loaded.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(graph);
                tracing::info!(namespace = %namespace, rows = rows_count, seconds = started.elapsed().as_secs_f64(), "approximate index ready");
            }
        });
    }
    Ok(loaded)
}
