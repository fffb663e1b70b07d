//! Vector indexes behind one trait: [`FlatIndex`], exact search over contiguous f32 rows, and
//! [`HnswIndex`], an approximate index for large namespaces. Vectors are unit length, so the
//! dot product is the cosine similarity.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A searchable set of rows (chunks) of one dimension.
pub trait VectorIndex: Send + Sync {
    /// `"exact"` or `"hnsw"`.
    fn kind(&self) -> &'static str;
    /// Number of rows.
    fn len(&self) -> usize;
    /// Whether there is no row.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` rows most similar to `query` with their similarity, best first; only rows
    /// with `allow[row]` when `allow` is given.
    fn search(&self, query: &[f32], k: usize, allow: Option<&[bool]>) -> Vec<(usize, f32)>;
}

/// Exact search: every row's dot product with the query, a bounded heap for the top k.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
}

impl FlatIndex {
    /// An index over `data`, rows of `dim` values laid end to end.
    pub fn new(dim: usize, data: Vec<f32>) -> Self {
        FlatIndex {
            dim: dim.max(1),
            data,
        }
    }

    /// Row `row`'s vector.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }
}

impl VectorIndex for FlatIndex {
    fn kind(&self) -> &'static str {
        "exact"
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    fn search(&self, query: &[f32], k: usize, allow: Option<&[bool]>) -> Vec<(usize, f32)> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        for (row, vector) in self.data.chunks_exact(self.dim).enumerate() {
            if allow.is_some_and(|mask| !mask.get(row).copied().unwrap_or(false)) {
                continue;
            }
            top.offer(row, dot(query, vector));
        }
        top.into_sorted()
    }
}

/// One row as an HNSW point: distance is `1 - cosine`.
#[derive(Debug, Clone)]
struct Point(Vec<f32>);

impl instant_distance::Point for Point {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Approximate search with an HNSW graph (the `instant-distance` crate). A filtered search
/// runs exactly on the allowed rows instead, so filters never lose hits.
pub struct HnswIndex {
    flat: FlatIndex,
    map: instant_distance::HnswMap<Point, u32>,
}

/// Candidates the graph search keeps (`ef_search`); also the most hits it returns.
const HNSW_EF_SEARCH: usize = 100;
/// Candidates kept while building (`ef_construction`).
const HNSW_EF_CONSTRUCTION: usize = 100;

impl HnswIndex {
    /// Builds the graph over `data` (rows of `dim` values). Deterministic (fixed seed).
    pub fn build(dim: usize, data: Vec<f32>) -> Self {
        let flat = FlatIndex::new(dim, data);
        let points: Vec<Point> = (0..flat.len())
            .map(|row| Point(flat.row(row).to_vec()))
            .collect();
        let values: Vec<u32> = (0..points.len() as u32).collect();
        let map = instant_distance::Builder::default()
            .ef_search(HNSW_EF_SEARCH)
            .ef_construction(HNSW_EF_CONSTRUCTION)
            .seed(7)
            .build(points, values);
        HnswIndex { flat, map }
    }
}

impl VectorIndex for HnswIndex {
    fn kind(&self) -> &'static str {
        "hnsw"
    }

    fn len(&self) -> usize {
        self.flat.len()
    }

    fn search(&self, query: &[f32], k: usize, allow: Option<&[bool]>) -> Vec<(usize, f32)> {
        if allow.is_some() || k > HNSW_EF_SEARCH {
            return self.flat.search(query, k, allow);
        }
        if query.len() != self.flat.dim || k == 0 {
            return Vec::new();
        }
        let mut search = instant_distance::Search::default();
        let point = Point(query.to_vec());
        self.map
            .search(&point, &mut search)
            .take(k)
            .map(|item| (*item.value as usize, 1.0 - item.distance))
            .collect()
    }
}

/// Independent accumulators of [`dot`]: enough chains to hide the latency of float adds.
const LANES: usize = 16;

/// The dot product, in independent lanes so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A scored row, ordered by score (then by row, lower first) for the heap.
#[derive(Debug, Clone, Copy)]
struct Scored(f32, usize);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    /// Reversed: the heap's top is the worst kept hit.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// The best `k` of the rows offered.
struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn offer(&mut self, row: usize, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(Scored(score, row));
        } else if self.heap.peek().is_some_and(|worst| score > worst.0) {
            self.heap.pop();
            self.heap.push(Scored(score, row));
        }
    }

    fn into_sorted(self) -> Vec<(usize, f32)> {
        let mut out: Vec<(usize, f32)> = self.heap.into_iter().map(|s| (s.1, s.0)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_search_is_exact_and_filtered() {
        let rows = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let index = FlatIndex::new(2, rows);
        let hits = index.search(&[1.0, 0.0], 2, None);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2]);
        let hits = index.search(&[1.0, 0.0], 2, Some(&[false, true, true]));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!(index.search(&[1.0], 2, None).is_empty());
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
