//! Work pool throughput: batches of no-op items enqueued at once and awaited until each has
//! completed (persisted as done and notified), on the memory store and on a private
//! redis-server (skipped, with a note, when redis-server is not installed). Reported per item.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use troupe_config::PoolSettings;
use troupe_runtime::pool::{handler_fn, Pool, PoolOptions, WorkCompletedEvent, WorkSpec};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{ChildOptions, Intensity, SupervisorSpec};

use troupe_testkit::redis as redis_support;

/// Items per measured batch.
const BATCH: u64 = 200;

struct Sink(UnboundedSender<WorkCompletedEvent>);

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<WorkCompletedEvent> for Sink {
    type Result = ();
    fn handle(&mut self, event: WorkCompletedEvent, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// A pool of parallelism 16 with a no-op handler, and its completion events.
async fn pool(store: Arc<dyn Store>) -> (Pool, UnboundedReceiver<WorkCompletedEvent>) {
    let settings = PoolSettings {
        max_parallelism: 16,
        ..PoolSettings::default()
    };
    let mut spec = SupervisorSpec::new("bench", Intensity::default());
    let child = ChildOptions {
        mailbox: 4096,
        ..ChildOptions::default()
    };
    let pool = Pool::child_of(
        &mut spec,
        "bench",
        &settings,
        store,
        PoolOptions::default(),
        child,
    );
    pool.register_handler("noop", handler_fn(|_| async { Ok(Value::Null) }));
    let (tx, rx) = unbounded_channel();
    pool.subscribe(Sink(tx).start().recipient());
    // The supervisor lives as long as the system; the bench process ends with it.
    let (_root, _life) = spec.start();
    while pool.actor().addr().is_none() {
        tokio::task::yield_now().await;
    }
    (pool, rx)
}

fn throughput(c: &mut Criterion, name: &str, system: &actix::SystemRunner, store: Arc<dyn Store>) {
    let (pool, mut rx) = system.block_on(pool(store));
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function(format!("enqueue_to_complete/{name}"), |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let enqueues =
                        (0..BATCH).map(|i| pool.enqueue(WorkSpec::new("noop", json!(i))));
                    for result in futures::future::join_all(enqueues).await {
                        result.expect("enqueue");
                    }
                    for _ in 0..BATCH {
                        rx.recv().await.expect("a completion");
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let system = System::new();
    throughput(c, "memory", &system, Arc::new(MemoryStore::new()));
}

fn redis(c: &mut Criterion) {
    let Some(server) = redis_support::start_for_bench("pool/redis") else {
        return;
    };
    let system = System::new();
    let store = system
        .block_on(RedisStore::connect(RedisOptions::new(server.url())))
        .expect("connect to the private redis-server");
    throughput(c, "redis", &system, Arc::new(store));
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
