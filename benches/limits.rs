//! Rate-limit checks: a local token bucket (governor) with one hot key and spread over 100,000
//! keys, a local fixed window, and a distributed token bucket on a private redis-server (one
//! Lua script round trip; skipped, with a note, when redis-server is not installed). Medians
//! are in `target/criterion/limits*/*/new/estimates.json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt as _;
use tokio::runtime::Runtime;
use troupe_config::LimitSettings;
use troupe_runtime::limit::Limiters;
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};

use troupe_testkit::redis as redis_support;

/// Limits that almost never refuse, so the benches measure the check, not the refusal.
const LIMITS: &str = r#"
[store]
backend = "redis"
url = "redis://127.0.0.1:1/"

[limits.bucket]
kind = "token_bucket"
rate = 1000000000
period = "1s"

[limits.window]
kind = "fixed_window"
rate = 1000000000
period = "1h"

[limits.shared]
kind = "token_bucket"
rate = 1000000000
period = "1s"
backend = "redis"
"#;

fn settings() -> BTreeMap<String, LimitSettings> {
    troupe_config::load_str(LIMITS, "bench.toml", &[])
        .map(|config| config.limits)
        .unwrap_or_else(|err| panic!("bench limits: {err}"))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn local(c: &mut Criterion) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let limiters = Limiters::new(&settings(), store).expect("limits");
    let mut group = c.benchmark_group("limits/local");
    // A local check never awaits: polling it once completes it.
    let check = |name: &'static str, key: &str| {
        limiters
            .limit(name, key, 1)
            .now_or_never()
            .expect("a local check completes at once")
            .expect("limit")
    };
    group.bench_function("token_bucket_1_key", |b| {
        b.iter(|| check("bucket", "hot"));
    });
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    for key in &keys {
        check("bucket", key);
    }
    let next = AtomicUsize::new(0);
    group.bench_function("token_bucket_100k_keys", |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) % keys.len();
            check("bucket", &keys[i])
        });
    });
    group.bench_function("fixed_window_1_key", |b| {
        b.iter(|| check("window", "hot"));
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Some(server) = redis_support::start_for_bench("limits/redis") else {
        return;
    };
    let rt = runtime();
    let store = rt
        .block_on(RedisStore::connect(RedisOptions::new(server.url())))
        .expect("connect to the private redis-server");
    let limiters = Limiters::new(&settings(), Arc::new(store)).expect("limits");
    let mut group = c.benchmark_group("limits/redis");
    group.bench_function("token_bucket_1_key", |b| {
        b.to_async(&rt).iter(|| async {
            limiters.limit("shared", "hot", 1).await.expect("limit");
        });
    });
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = local, redis
}
criterion_main!(benches);
