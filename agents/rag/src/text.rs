//! Keyword search: a tokenizer shared with the local embedder and a BM25 inverted index over
//! a namespace's chunks.

use std::collections::HashMap;

/// Common English words that carry no topic; dropped from keyword features.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "so", "that", "the", "their", "then", "there", "this", "to", "was", "we", "what", "when",
    "which", "who", "will", "with", "you", "your",
];

/// Lower-cased alphanumeric words of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

/// The words of `text` without stop words.
pub fn tokens(text: &str) -> Vec<String> {
    words(text)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .collect()
}

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A BM25 index over rows (chunks) numbered from 0.
#[derive(Debug, Default)]
pub struct TextIndex {
    postings: HashMap<String, Vec<(u32, u16)>>,
    lengths: Vec<u32>,
    average: f32,
}

impl TextIndex {
    /// Indexes `texts`; row `i` is `texts[i]`.
    pub fn build<'a>(texts: impl Iterator<Item = &'a str>) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u16)>> = HashMap::new();
        let mut lengths = Vec::new();
        for (row, text) in texts.enumerate() {
            let mut counts: HashMap<String, u16> = HashMap::new();
            let words = tokens(text);
            lengths.push(words.len() as u32);
            for word in words {
                let count = counts.entry(word).or_default();
                *count = count.saturating_add(1);
            }
            for (word, count) in counts {
                postings.entry(word).or_default().push((row as u32, count));
            }
        }
        let total: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
        let average = if lengths.is_empty() {
            0.0
        } else {
            total as f32 / lengths.len() as f32
        };
        TextIndex {
            postings,
            lengths,
            average,
        }
    }

    /// Approximate heap bytes: each posting (8 bytes), each term's string, list header and
    /// hash-table slot, and the row lengths.
    pub fn heap_bytes(&self) -> usize {
        const STRING_AND_VEC: usize = 2 * std::mem::size_of::<Vec<u8>>();
        // A hashbrown slot is the key-value pair plus one control byte.
        let terms: usize = self
            .postings
            .iter()
            .map(|(term, list)| term.capacity() + list.capacity() * 8)
            .sum();
        terms + self.postings.capacity() * (STRING_AND_VEC + 1) + self.lengths.capacity() * 4
    }

    /// The `k` best rows for `query` with their BM25 scores, best first; rows not allowed by
    /// `allow` (when given) and rows matching no query word are left out.
    pub fn search(&self, query: &str, k: usize, allow: Option<&[bool]>) -> Vec<(usize, f32)> {
        let n = self.lengths.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut terms = tokens(query);
        terms.sort();
        terms.dedup();
        for term in terms {
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(row, tf) in list {
                if allow.is_some_and(|mask| !mask.get(row as usize).copied().unwrap_or(false)) {
                    continue;
                }
                let tf = f32::from(tf);
                let len = self.lengths[row as usize] as f32;
                let norm = K1 * (1.0 - B + B * len / self.average.max(1.0));
                *scores.entry(row).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut hits: Vec<(usize, f32)> = scores
            .into_iter()
            .map(|(row, score)| (row as usize, score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_rare_matching_words() {
        let index = TextIndex::build(
            [
                "the router reboots",
                "the printer jams",
                "router firmware update for router",
            ]
            .into_iter(),
        );
        let hits = index.search("router firmware", 10, None);
        assert_eq!(hits[0].0, 2);
        assert_eq!(hits.len(), 2);
        assert!(index
            .search("printer", 10, Some(&[true, false, true]))
            .is_empty());
        // router, reboots, printer, jams, firmware, update: 6 terms, 7 postings, 3 rows.
        assert!(index.heap_bytes() >= 6 * 49 + 7 * 8 + 3 * 4);
    }
}
