//! The persisted form of a knowledge base. Every key starts with `rag:{group}:`, so no
//! operation of one group can name another group's data.
//!
//! - `rag:{group}:namespaces` — hash: public namespace -> its dimension (reserved `_…`
//!   namespaces are not listed).
//! - `rag:{group}:{ns}:dim` — the namespace's dimension, fixed by its first document
//!   (`SET NX`).
//! - `rag:{group}:{ns}:entries` — hash: entry key -> JSON [`EntryRecord`] (the pointer to
//!   the entry's current version; an empty value is a deleted entry on its way out).
//! - `rag:{group}:{ns}:chunks:{version}` — one version's chunks: texts and vectors (binary,
//!   see [`encode_chunks`]).
//! - `rag:{group}:{ns}:state` — hash with `version`, incremented by every change: daemons
//!   compare it with the version of their in-process index and reload on change.
//!
//! Thread memory's namespaces (`_mem-…`) also have, per namespace:
//!
//! - `rag:{group}:{ns}:threads` — sorted set: thread -> when its messages were last indexed
//!   (ms since the epoch); threads past the retention are pruned with their entries.
//! - `rag:{group}:{ns}:cursor:{thread}` — the next message of the thread to index.
//!
//! Every key of a memory namespace expires after `[daemon] thread_retention` without use (see
//! `memory.rs`); public namespaces are operator data and never expire.

use std::collections::BTreeMap;
use std::hash::Hasher as _;

use fnv::FnvHasher;

use serde::{Deserialize, Serialize};
use troupe_runtime::key_name::{InvalidKeyName, KeyName};

use super::error::RagError;

/// A namespace as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Vector dimension (0 until the first document).
    #[serde(default)]
    pub dim: usize,
    /// Entries in it.
    #[serde(default)]
    pub entries: usize,
    /// Chunks in it.
    #[serde(default)]
    pub chunks: usize,
}

/// One document's current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// The entry key (unique in its namespace).
    pub key: String,
    /// The version whose chunks are live (`rag:{group}:{ns}:chunks:{version}`).
    pub version: String,
    /// Title.
    pub title: String,
    /// Free metadata handed back with hits.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Filter values: name -> value.
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
    /// Importance, 0..=1.
    pub importance: f32,
    /// Hash of everything that went into the version (content, title, metadata, filters,
    /// importance, chunking and embedder): the same hash is a no-op.
    pub hash: String,
    /// Number of chunks.
    pub chunks: usize,
    /// Characters of content.
    pub chars: usize,
    /// The embedder that made the vectors.
    pub embedder: String,
    /// When this version was added, ms since the epoch.
    pub added_ms: u64,
}

/// The keys of one namespace of one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keys {
    group: KeyName,
    namespace: KeyName,
}

impl Keys {
    /// The keys of `namespace` in `group`, or an error naming the one that cannot be part of
    /// a key.
    pub fn new(group: &str, namespace: &str) -> Result<Self, InvalidKeyName> {
        Ok(Keys {
            group: KeyName::new("group", group)?,
            namespace: KeyName::new("namespace", namespace)?,
        })
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace index of `group`.
    pub fn namespaces(group: &KeyName) -> String {
        format!("rag:{group}:namespaces")
    }

    /// The namespace index of this namespace's group.
    pub fn group_namespaces(&self) -> String {
        Keys::namespaces(&self.group)
    }

    /// The namespace's dimension.
    pub fn dim(&self) -> String {
        format!("rag:{}:{}:dim", self.group, self.namespace)
    }

    /// The entries hash.
    pub fn entries(&self) -> String {
        format!("rag:{}:{}:entries", self.group, self.namespace)
    }

    /// The state hash (field `version`).
    pub fn state(&self) -> String {
        format!("rag:{}:{}:state", self.group, self.namespace)
    }

    /// One version's chunks.
    pub fn chunks(&self, version: &str) -> String {
        format!("rag:{}:{}:chunks:{version}", self.group, self.namespace)
    }

    /// Thread memory: the threads indexed, by when they were last indexed.
    pub fn threads(&self) -> String {
        format!("rag:{}:{}:threads", self.group, self.namespace)
    }

    /// Thread memory: the next message of `thread` to index.
    pub fn cursor(&self, thread: &str) -> String {
        format!("rag:{}:{}:cursor:{thread}", self.group, self.namespace)
    }
}

const MAGIC: &[u8; 4] = b"RAG1";

/// Encodes a version's chunks: `RAG1`, count and dimension (u32 LE), the vectors (f32 LE,
/// row after row), then the texts as a JSON array.
pub fn encode_chunks(dim: usize, vectors: &[f32], texts: &[String]) -> Vec<u8> {
    let json = serde_json::to_vec(texts).unwrap_or_else(|_| b"[]".to_vec());
    let mut out = Vec::with_capacity(12 + vectors.len() * 4 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    for value in vectors {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&json);
    out
}

/// Decoded chunks of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunks {
    /// Dimension.
    pub dim: usize,
    /// `texts.len() * dim` values.
    pub vectors: Vec<f32>,
    /// Chunk texts in document order.
    pub texts: Vec<String>,
}

/// Decodes what [`encode_chunks`] wrote; `key` names the record in errors.
pub fn decode_chunks(key: &str, bytes: &[u8]) -> Result<StoredChunks, RagError> {
    let corrupt = |message: &str| RagError::Corrupt {
        key: key.to_owned(),
        message: message.to_owned(),
    };
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return Err(corrupt("not a chunk record"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (count, dim) = (word(4) as usize, word(8) as usize);
    let floats = count
        .checked_mul(dim)
        .ok_or_else(|| corrupt("size overflow"))?;
    let end = 12 + floats * 4;
    if bytes.len() < end {
        return Err(corrupt("truncated vectors"));
    }
    let vectors = bytes[12..end]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let texts: Vec<String> =
        serde_json::from_slice(&bytes[end..]).map_err(|err| corrupt(&err.to_string()))?;
    if texts.len() != count {
        return Err(corrupt("text count differs from vector count"));
    }
    Ok(StoredChunks {
        dim,
        vectors,
        texts,
    })
}

/// Decodes a JSON record.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RagError> {
    serde_json::from_slice(bytes).map_err(|err| RagError::Corrupt {
        key: key.to_owned(),
        message: err.to_string(),
    })
}

/// 128-bit FNV-1a of `parts` (two 64-bit lanes with different seeds), as hex.
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut lanes = [
        FnvHasher::default(),
        FnvHasher::with_key(0x6c62_272e_07bb_0142),
    ];
    for part in parts {
        for lane in &mut lanes {
            lane.write(&(part.len() as u64).to_le_bytes());
            lane.write(part);
        }
        lanes[1] = FnvHasher::with_key(lanes[1].finish().rotate_left(17));
    }
    format!("{:016x}{:016x}", lanes[0].finish(), lanes[1].finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let texts = vec!["a".to_owned(), "b é".to_owned()];
        let bytes = encode_chunks(3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5], &texts);
        let decoded = decode_chunks("k", &bytes).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(decoded.texts, texts);
        assert_eq!(decoded.vectors[5], 6.5);
        assert!(decode_chunks("k", &bytes[..20]).is_err());
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
        assert_eq!(content_hash(&[b"x"]), content_hash(&[b"x"]));
        // Stored: entries are matched by it, so it must not change between builds.
        assert_eq!(content_hash(&[b"x"]), "529a64dc8ff592d4a6d188cbb242e061");
        assert_eq!(
            content_hash(&[b"ab", b"c"]),
            "7e60470bf599cad64ab0a383d4475491"
        );
    }
}
