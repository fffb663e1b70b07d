//! Actor message round trips: raw actix `Addr`, a supervised `ActorRef`, and an entity
//! through the `Registry` (lookup + send), all on one actix system.

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use troupe_runtime::{ChildOptions, Intensity, Life, Registry, RegistryOptions, SupervisorSpec};

struct Echo(u64);

impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Ping(u64);

impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        self.0 += msg.0;
        self.0
    }
}

// The registry delivers each message with its sender's span.
troupe_runtime::forward_traced!(Echo => Ping);

fn round_trips(c: &mut Criterion) {
    let system = System::new();
    let (addr, child, registry) = system.block_on(async {
        let addr = Echo(0).start();
        let mut spec = SupervisorSpec::new("bench", Intensity::default());
        let child = spec.child("echo", ChildOptions::default(), |_| Echo(0));
        let (_root, _life) = spec.start();
        while child.send(Ping(0)).await.is_err() {
            tokio::task::yield_now().await;
        }
        let registry: Registry<u64, Echo> =
            Registry::new("bench", RegistryOptions::default(), |_: &u64, _: &Life| {
                Echo(0)
            });
        (addr, child, registry)
    });

    let mut group = c.benchmark_group("actor_round_trip");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("actix_addr", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = addr.send(Ping(1)).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("supervised_actor_ref", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = child.send(Ping(1)).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("registry_entity", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let _ = registry.send(&(i % 1024), Ping(1)).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
