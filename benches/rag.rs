//! RAG search and ingestion. For namespaces of 10,000 and 100,000 chunks of dimension 384
//! (clustered pseudo-random unit vectors: 1,000 centres plus noise, which is how embeddings
//! of real documents spread), it reports the exact index's and the HNSW index's search
//! latency (p50, p99 over the same queries), the HNSW build time and its recall@10 against
//! exact search; then criterion measures one exact and one HNSW top-10 search at 10,000 and
//! a whole `Rag::search` (embedding the query with the local embedder, hybrid fusion) on the
//! memory store. Ingestion is measured through `Rag::add` on the memory store (local embedder,
//! 8-chunk documents), in chunks per second.
//!
//! `RAG_BENCH_SIZES=10000` limits the sizes (comma separated).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng as _, SeedableRng as _};
use troupe_agents::rag::{
    normalize, Caller, FlatIndex, HnswIndex, LocalEmbedder, NewDocument, Rag, SearchRequest,
    VectorIndex,
};
use troupe_runtime::store::{MemoryStore, Store};

const DIM: usize = 384;
const QUERIES: usize = 200;
const K: usize = 10;

/// `n` clustered unit vectors laid end to end, and `QUERIES` query vectors drawn the same way.
fn dataset(n: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| unit(&mut rng, None, 1.0)).collect();
    let mut data = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        let centre = &centres[rng.random_range(0..centres.len())];
        data.extend(unit(&mut rng, Some(centre), 0.6));
    }
    let queries = (0..QUERIES)
        .map(|_| {
            let centre = &centres[rng.random_range(0..centres.len())];
            unit(&mut rng, Some(centre), 0.6)
        })
        .collect();
    (data, queries)
}

fn unit(rng: &mut rand::rngs::StdRng, around: Option<&Vec<f32>>, noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM)
        .map(|i| around.map_or(0.0, |c| c[i] * 3.0) + noise * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    normalize(&mut v);
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Latencies of `QUERIES` searches, sorted, and the results.
fn run(index: &dyn VectorIndex, queries: &[Vec<f32>]) -> (Vec<Duration>, Vec<Vec<usize>>) {
    let mut times = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    for q in queries {
        let start = Instant::now();
        let hits = index.search(q, K, None);
        times.push(start.elapsed());
        results.push(hits.into_iter().map(|h| h.0).collect());
    }
    times.sort();
    (times, results)
}

fn report_sizes() {
    let sizes: Vec<usize> = std::env::var("RAG_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    for n in sizes {
        let (data, queries) = dataset(n, n as u64);
        let flat = FlatIndex::new(DIM, data.clone());
        let (exact_times, exact) = run(&flat, &queries);
        let started = Instant::now();
        let hnsw = HnswIndex::build(DIM, data);
        let build = started.elapsed();
        let (approx_times, approx) = run(&hnsw, &queries);
        let found: usize = exact
            .iter()
            .zip(&approx)
            .map(|(e, a)| a.iter().filter(|row| e.contains(row)).count())
            .sum();
        let recall = found as f64 / (exact.len() * K) as f64;
        println!(
            "rag search n={n} dim={DIM}: exact p50 {:?} p99 {:?} | hnsw p50 {:?} p99 {:?} (build {:.1?}) | recall@10 {recall:.3}",
            percentile(&exact_times, 0.5),
            percentile(&exact_times, 0.99),
            percentile(&approx_times, 0.5),
            percentile(&approx_times, 0.99),
            build,
        );
    }
}

/// A runtime and a `Rag` on a fresh memory store with the default `[rag]` settings and the
/// local embedder, and the caller the bench searches as.
fn memory_rag() -> (tokio::runtime::Runtime, Rag, Caller) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = troupe_config::load_str("", "bench.toml", &[]).expect("defaults");
    let rag = Rag::new(store, config.rag.clone(), Arc::new(LocalEmbedder::new(DIM)));
    (runtime, rag, Caller::new("bench", "bench", "bench"))
}

fn ingestion() {
    let (runtime, rag, caller) = memory_rag();
    let docs = 200;
    let paragraph = |d: usize, p: usize| {
        format!(
            "Document {d} section {p} explains how the service handles requests number {p} and what operators should check when latency rises above its objective for several minutes in a row. It also lists the dashboards to open first, the alerts that usually fire together, and the runbook steps that resolve the incident in most cases."
        )
    };
    let started = Instant::now();
    let mut chunks = 0;
    runtime.block_on(async {
        for d in 0..docs {
            let content = (0..8)
                .map(|p| paragraph(d, p))
                .collect::<Vec<_>>()
                .join("\n\n");
            let doc = NewDocument {
                key: format!("doc-{d}"),
                content,
                ..NewDocument::default()
            };
            chunks += rag.add(&caller, doc).await.expect("add").chunks;
        }
        // The first search loads the namespace's index: part of making it searchable.
        rag.search(&caller, SearchRequest::text("latency objective"))
            .await
            .expect("search");
    });
    let elapsed = started.elapsed();
    println!(
        "rag ingestion (memory store, local embedder, dim {DIM}): {chunks} chunks in {elapsed:.2?} = {:.0} chunks/s",
        chunks as f64 / elapsed.as_secs_f64()
    );
}

fn bench(c: &mut Criterion) {
    report_sizes();
    ingestion();
    let (data, queries) = dataset(10_000, 7);
    let flat = FlatIndex::new(DIM, data.clone());
    let hnsw = HnswIndex::build(DIM, data);
    let mut group = c.benchmark_group("rag_search_10k");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("exact_top10", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            flat.search(&queries[i], K, None)
        })
    });
    group.bench_function("hnsw_top10", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            hnsw.search(&queries[i], K, None)
        })
    });
    group.finish();

    // A whole search through the Rag handle: query embedding, vector and BM25 rankings,
    // fusion, on a namespace of 10,000 chunks.
    let (runtime, rag, caller) = memory_rag();
    runtime.block_on(async {
        let mut chunks = 0;
        for d in 0..1250 {
            let content = (0..8)
                .map(|p| {
                    // About 450 characters: one paragraph per chunk, 8 chunks per runbook.
                    format!(
                        "Runbook {d} step {p}: check service {} and queue {} before restarting worker {}. {}",
                        d % 97,
                        p * 7 + d % 13,
                        d % 31,
                        "Confirm the alert is still firing, read the last hour of the service log, compare the error rate with the previous deploy, and write what you saw in the incident channel before changing anything. If the queue keeps growing after the restart, page the owning team and attach the dashboard link with the time range of the incident."
                    )
                })
                .collect::<Vec<_>>()
                .join("\n\n");
            let doc = NewDocument {
                key: format!("runbook-{d}"),
                content,
                ..NewDocument::default()
            };
            chunks += rag.add(&caller, doc).await.expect("add").chunks;
        }
        println!("rag_search_api_10k: namespace of {chunks} chunks");
    });
    let mut group = c.benchmark_group("rag_search_api_10k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hybrid_top5", |b| {
        b.to_async(&runtime).iter(|| async {
            rag.search(
                &caller,
                SearchRequest::text("check service 42 queue before restarting"),
            )
            .await
            .expect("search")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
