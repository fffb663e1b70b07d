//! Store hot paths on both backends: get/set, a queue round trip (XADD + XREADGROUP + XACK),
//! and on Redis one `apply()` of three writes against three separate calls. The Redis group
//! runs against a private redis-server the bench starts itself (skipped, with a note, when
//! redis-server is not installed).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use troupe_runtime::store::{
    GroupRead, MemoryStore, ReadFrom, RedisOptions, RedisStore, Store, Trim, Write,
};

use troupe_testkit::redis as redis_support;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// get, set and the queue round trip for one backend.
fn common(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn Store>) {
    let mut group = c.benchmark_group(format!("store/{name}"));
    rt.block_on(store.set("bench:key", b"value", None))
        .expect("seed a key");
    rt.block_on(store.xgroup_create("bench:queue", "g", "$"))
        .expect("create the group");

    group.bench_function("get", |b| {
        b.to_async(rt).iter(|| async {
            store.get("bench:key").await.expect("get");
        });
    });
    group.bench_function("set", |b| {
        b.to_async(rt).iter(|| async {
            store.set("bench:key", b"value", None).await.expect("set");
        });
    });
    group.bench_function("xadd_xreadgroup_xack", |b| {
        b.to_async(rt).iter(|| async {
            let trim = Some(Trim::MaxLen(1000));
            store
                .xadd("bench:queue", &[("task", b"payload")], trim)
                .await
                .expect("xadd");
            let read = GroupRead {
                stream: "bench:queue",
                group: "g",
                consumer: "c",
                count: 1,
                block: None,
                from: ReadFrom::New,
            };
            let got = store.xreadgroup(read).await.expect("xreadgroup");
            let ids: Vec<String> = got.into_iter().map(|e| e.id).collect();
            store.xack("bench:queue", "g", &ids).await.expect("xack");
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    common(c, &rt, "memory", Arc::new(MemoryStore::new()));
}

fn redis(c: &mut Criterion) {
    let Some(server) = redis_support::start_for_bench("store/redis") else {
        return;
    };
    let rt = runtime();
    let store = rt
        .block_on(RedisStore::connect(RedisOptions::new(server.url())))
        .expect("connect to the private redis-server");
    let store: Arc<dyn Store> = Arc::new(store);
    common(c, &rt, "redis", store.clone());

    let mut group = c.benchmark_group("store/redis");
    let writes = || {
        vec![
            Write::Set {
                key: "bench:a".into(),
                value: b"1".to_vec(),
                ttl: None,
            },
            Write::HSet {
                key: "bench:h".into(),
                fields: vec![("f".into(), b"v".to_vec())],
            },
            Write::Push {
                key: "bench:l".into(),
                values: vec![b"x".to_vec()],
            },
        ]
    };
    group.bench_function("apply_3_writes", |b| {
        b.to_async(&rt).iter(|| async {
            store.apply(writes()).await.expect("apply");
            // Keep the list from growing without bound.
            store.del(&["bench:l".to_owned()]).await.expect("del");
        });
    });
    group.bench_function("3_separate_writes", |b| {
        b.to_async(&rt).iter(|| async {
            store.set("bench:a", b"1", None).await.expect("set");
            store.hset("bench:h", &[("f", b"v")]).await.expect("hset");
            store.push("bench:l", &[b"x"]).await.expect("push");
            store.del(&["bench:l".to_owned()]).await.expect("del");
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
    targets = memory, redis
}
criterion_main!(benches);
