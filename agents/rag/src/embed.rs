//! Embedders: the local lexical embedder (no network, deterministic) and the model-service
//! embedder (any OpenAI-compatible embeddings endpoint, usage recorded like chat usage).

use std::hash::Hasher as _;

use async_trait::async_trait;
use fnv::FnvHasher;

use super::error::RagError;
use super::text::{tokens, words};

/// On whose behalf texts are embedded: usage is recorded for this group, user and agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant group; every read and write is confined to it.
    pub group: String,
    /// End user (or `cli`).
    pub user: String,
    /// The agent, tool or command that asked (`rag_search`, `cli`, a workflow step).
    pub agent: String,
}

impl Caller {
    /// A caller of `group` acting as `user` through `agent`.
    pub fn new(group: &str, user: &str, agent: &str) -> Self {
        Caller {
            group: group.to_owned(),
            user: user.to_owned(),
            agent: agent.to_owned(),
        }
    }
}

/// Turns texts into vectors of one dimension.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// A name saying what made the vectors (`local-lexical-384`, `model:NAME`); stored with
    /// each entry.
    fn name(&self) -> &str;
    /// One vector per text, in order, all of the same dimension.
    async fn embed(&self, caller: &Caller, texts: &[String]) -> Result<Vec<Vec<f32>>, RagError>;
}

/// The embedded default: hashed word, word-bigram and character-trigram features, signed,
/// L2-normalised. Honestly lexical: texts that share words (or word pieces) are close;
/// synonyms are not. Deterministic and free, so it records no usage.
#[derive(Debug, Clone)]
pub struct LocalEmbedder {
    dimensions: usize,
    name: String,
}

impl LocalEmbedder {
    /// A local embedder of `dimensions` (> 0) dimensions.
    pub fn new(dimensions: usize) -> Self {
        let dimensions = dimensions.max(1);
        LocalEmbedder {
            dimensions,
            name: format!("local-lexical-{dimensions}"),
        }
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let dims = self.dimensions;
        let mut vector = vec![0.0_f32; dims];
        let mut add = |feature: &[u8], seed: u64, weight: f32| {
            let hash = fnv1a(seed, feature);
            let slot = (hash % dims as u64) as usize;
            vector[slot] += if hash >> 63 == 1 { -weight } else { weight };
        };
        let content = tokens(text);
        for word in &content {
            add(word.as_bytes(), 1, 1.0);
            let padded: Vec<char> = format!(" {word} ").chars().collect();
            if padded.len() > 4 {
                for gram in padded.windows(3) {
                    let gram: String = gram.iter().collect();
                    add(gram.as_bytes(), 3, 0.25);
                }
            }
        }
        for pair in content.windows(2) {
            add(format!("{} {}", pair[0], pair[1]).as_bytes(), 2, 0.5);
        }
        if content.is_empty() {
            // Stop words only: fall back to every word, so the text still has a direction.
            for word in words(text) {
                add(word.as_bytes(), 1, 1.0);
            }
        }
        normalize(&mut vector);
        vector
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn embed(&self, _: &Caller, texts: &[String]) -> Result<Vec<Vec<f32>>, RagError> {
        Ok(texts.iter().map(|text| self.vector(text)).collect())
    }
}

/// Scales `vector` to unit length (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// FNV-1a of `bytes` from an offset basis moved by `seed` (one hash family per feature kind).
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let basis = FnvHasher::default().finish() ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut hasher = FnvHasher::with_key(basis);
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_hashes_stay_what_they_were() {
        // Stored vectors depend on them: they must not change between builds.
        assert_eq!(fnv1a(3, b" ab "), 0x49f1_dffe_0c91_aab7);
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn local_vectors_are_deterministic_normalised_and_lexical() {
        let e = LocalEmbedder::new(384);
        let a = e.vector("Restart the router to fix dropped Wi-Fi connections");
        assert_eq!(
            a,
            e.vector("Restart the router to fix dropped Wi-Fi connections")
        );
        assert_eq!(a.len(), 384);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let near = e.vector("my router keeps dropping the wifi connection");
        let far = e.vector("invoices are sent on the first day of each month");
        assert!(cosine(&a, &near) > cosine(&a, &far));
    }
}
