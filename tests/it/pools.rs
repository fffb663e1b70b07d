//! Work pools and the retrier: bounded parallelism under a burst, retries and the error as the
//! retry decision, exactly-once completion, priorities and `run_at`, cancel, run-time
//! parallelism, durability across a restart (memory and Redis), recovery of the items of
//! a runner that died, and state writes on a paused Redis (a succeeded attempt's result is
//! kept; a claim whose answer was lost is recognised, not counted against the item).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use troupe_config::PoolSettings;
use troupe_runtime::pool::{
    handler_fn, CancelOutcome, FollowUp, Pool, PoolOptions, WorkCompletedEvent, WorkError,
    WorkHandler, WorkOutcome, WorkSpec, WorkStatus,
};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{ChildOptions, Intensity, Life, Restart, SupervisorSpec};
use troupe_testkit::{eventually, WAIT};

use crate::support::redis::{redis_url, unique_prefix, RedisServer};

// ---- harness -----------------------------------------------------------------------------------

fn settings(parallelism: usize) -> PoolSettings {
    PoolSettings {
        max_parallelism: parallelism,
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        backoff_base: 2.0,
        max_backoff: Duration::from_millis(50),
        jitter: false,
        retention: Duration::from_secs(60),
    }
}

fn fast_options() -> PoolOptions {
    PoolOptions {
        instance: "it".to_owned(),
        runner_lease: Duration::from_millis(300),
        rescan: Duration::from_millis(100),
        store_retry: Duration::from_millis(50),
        instance_is_unique: false,
    }
}

/// A pool `p` under its own supervisor, once its actor runs; the supervisor's life stops it.
async fn start_pool(
    store: Arc<dyn Store>,
    settings: &PoolSettings,
    restart: Restart,
) -> (Pool, Life) {
    start_pool_with(store, settings, restart, fast_options()).await
}

/// [`start_pool`] with its options.
async fn start_pool_with(
    store: Arc<dyn Store>,
    settings: &PoolSettings,
    restart: Restart,
    options: PoolOptions,
) -> (Pool, Life) {
    let mut supervisor = SupervisorSpec::new("pools", Intensity::default());
    let child = ChildOptions {
        restart,
        shutdown: Duration::from_secs(2),
        mailbox: 1024,
        ..ChildOptions::default()
    };
    let pool = Pool::child_of(&mut supervisor, "p", settings, store, options, child);
    let (_, life) = supervisor.start();
    eventually("the pool actor starts", WAIT, || async {
        pool.actor().addr().is_some()
    })
    .await;
    (pool, life)
}

async fn redis_store(case: &str) -> Arc<dyn Store> {
    Arc::new(redis_at(&unique_prefix(case)).await)
}

async fn redis_at(prefix: &str) -> RedisStore {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        reconnect_max_delay: Duration::from_millis(200),
        ..RedisOptions::new(redis_url())
    };
    RedisStore::connect(options)
        .await
        .expect("connect to the private redis-server")
}

/// Receives completion events on a channel.
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

fn sink() -> (
    Recipient<WorkCompletedEvent>,
    UnboundedReceiver<WorkCompletedEvent>,
) {
    let (tx, rx) = unbounded_channel();
    (Sink(tx).start().recipient(), rx)
}

/// The next `n` events, failing after [`WAIT`].
async fn collect(
    rx: &mut UnboundedReceiver<WorkCompletedEvent>,
    n: usize,
) -> Vec<WorkCompletedEvent> {
    let mut events = Vec::with_capacity(n);
    // Not `eventually`: it waits on the channel rather than polling.
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => panic!("event channel closed after {} events", events.len()),
            Err(_) => panic!("only {} of {n} events within {WAIT:?}", events.len()),
        }
    }
    events
}

/// Counts running attempts and keeps the high-water mark.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    started: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handler that holds each attempt for a little while and measures parallelism.
fn measured(gauge: Arc<Gauge>, hold: Duration) -> Arc<dyn WorkHandler> {
    handler_fn(move |work| {
        let gauge = gauge.clone();
        async move {
            gauge.enter();
            tokio::time::sleep(hold).await;
            gauge.leave();
            Ok(json!({"done": work.id}))
        }
    })
}

/// Holds attempts until it is opened.
#[derive(Clone)]
struct Gate(tokio::sync::watch::Sender<bool>);

impl Gate {
    fn new() -> Self {
        Gate(tokio::sync::watch::channel(false).0)
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

fn assert_once_each(events: &[WorkCompletedEvent], ids: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for event in events {
        *counts.entry(event.id.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), ids.len(), "distinct ids completed");
    for id in ids {
        assert_eq!(counts.get(id.as_str()), Some(&1), "completions of {id}");
    }
}

// ---- parallelism, retries, exactly once ----------------------------------------------------------

async fn burst(store: Arc<dyn Store>, items: usize) {
    let (pool, life) = start_pool(store, &settings(8), Restart::Permanent).await;
    let gauge = Arc::new(Gauge::default());
    pool.register_handler("noop", measured(gauge.clone(), Duration::from_millis(1)));
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let mut ids = Vec::with_capacity(items);
    for i in 0..items {
        ids.push(
            pool.enqueue(WorkSpec::new("noop", json!({"i": i})))
                .await
                .expect("enqueue"),
        );
    }
    let events = collect(&mut rx, items).await;
    assert_once_each(&events, &ids);
    assert!(events
        .iter()
        .all(|e| e.attempts == 1 && matches!(e.outcome, WorkOutcome::Succeeded { .. })));
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max <= 8, "high-water mark {max} exceeds max_parallelism 8");
    assert!(
        max >= 2,
        "high-water mark {max}: the pool never ran items in parallel"
    );
    let stats = pool.stats().await.expect("stats");
    assert_eq!((stats.running, stats.ready, stats.delayed), (0, 0, 0));
    // Nothing completes twice: no event is left once every item has completed once.
    assert!(rx.try_recv().is_err());
    assert_eq!(
        pool.status(&ids[0]).await.expect("status"),
        Some(WorkStatus::Succeeded)
    );
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn burst_of_1000_never_exceeds_parallelism_and_completes_each_once() {
    burst(Arc::new(MemoryStore::new()), 1000).await;
}

#[actix::test]
async fn burst_on_redis_never_exceeds_parallelism_and_completes_each_once() {
    burst(redis_store("pool-burst").await, 300).await;
}

#[actix::test]
async fn retryable_errors_are_retried_and_non_retryable_ones_fail_at_once() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(4),
        Restart::Permanent,
    )
    .await;
    pool.register_handler(
        "flaky",
        handler_fn(|work| async move {
            if work.attempt < 3 {
                Err(WorkError::retryable(format!(
                    "flaky attempt {}",
                    work.attempt
                )))
            } else {
                Ok(json!(work.attempt))
            }
        }),
    );
    pool.register_handler(
        "fatal",
        handler_fn(|_| async { Err(WorkError::non_retryable("bad input")) }),
    );
    pool.register_handler(
        "hopeless",
        handler_fn(|_| async { Err(WorkError::retryable("503")) }),
    );
    pool.register_handler(
        "panics",
        handler_fn(|work| async move {
            assert!(work.attempt > 1, "first attempt panics");
            Ok(Value::Null)
        }),
    );
    let (recipient, mut rx) = sink();
    let mut ids = HashMap::new();
    for kind in ["flaky", "fatal", "hopeless", "panics"] {
        let spec = WorkSpec::new(kind, Value::Null).notify(recipient.clone());
        ids.insert(kind, pool.enqueue(spec).await.expect("enqueue"));
    }
    let events = collect(&mut rx, 4).await;
    let by_kind: HashMap<&str, &WorkCompletedEvent> =
        events.iter().map(|e| (e.kind.as_str(), e)).collect();
    assert_eq!(by_kind["flaky"].attempts, 3);
    assert_eq!(
        by_kind["flaky"].outcome,
        WorkOutcome::Succeeded { output: json!(3) }
    );
    assert_eq!(by_kind["fatal"].attempts, 1);
    assert_eq!(
        by_kind["fatal"].outcome,
        WorkOutcome::Failed {
            error: "bad input".into()
        }
    );
    assert_eq!(by_kind["hopeless"].attempts, 5);
    assert_eq!(
        by_kind["hopeless"].outcome,
        WorkOutcome::Failed {
            error: "503 (gave up after 5 attempts)".into()
        }
    );
    assert_eq!(
        by_kind["panics"].attempts, 2,
        "a panic is a retryable failure"
    );
    let fatal = pool.record(&ids["fatal"]).await.expect("record");
    assert_eq!(fatal.as_ref().map(|r| r.attempts), Some(1));
    assert_eq!(
        pool.status(&ids["fatal"]).await.expect("status"),
        Some(WorkStatus::Failed {
            error: "bad input".into()
        })
    );
    assert!(rx.try_recv().is_err(), "one event per item");
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn an_items_own_attempts_bound_its_retries_instead_of_the_pools() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(4),
        Restart::Permanent,
    )
    .await;
    pool.register_handler(
        "hopeless",
        handler_fn(|_| async { Err(WorkError::retryable("503")) }),
    );
    let (recipient, mut rx) = sink();
    for attempts in [2, 7] {
        let spec = WorkSpec::new("hopeless", json!(attempts))
            .max_attempts(attempts)
            .notify(recipient.clone());
        pool.enqueue(spec).await.expect("enqueue");
    }
    let events = collect(&mut rx, 2).await;
    let mut got: Vec<(u32, WorkOutcome)> = events
        .iter()
        .map(|e| (e.attempts, e.outcome.clone()))
        .collect();
    got.sort_by_key(|(attempts, _)| *attempts);
    assert_eq!(
        got,
        [
            (
                2,
                WorkOutcome::Failed {
                    error: "503 (gave up after 2 attempts)".into()
                }
            ),
            (
                7,
                WorkOutcome::Failed {
                    error: "503 (gave up after 7 attempts)".into()
                }
            ),
        ],
        "the pool allows 5 attempts; each item its own"
    );
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn priorities_and_run_at_are_honoured() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(1),
        Restart::Permanent,
    )
    .await;
    let order = Arc::new(Mutex::new(Vec::<(String, SystemTime)>::new()));
    let seen = order.clone();
    pool.register_handler(
        "k",
        handler_fn(move |work| {
            let seen = seen.clone();
            async move {
                let name = work.payload["name"].as_str().unwrap_or("?").to_owned();
                seen.lock().push((name, SystemTime::now()));
                Ok(Value::Null)
            }
        }),
    );
    pool.set_parallelism(0).await.expect("pause");
    let run_at = SystemTime::now() + Duration::from_millis(400);
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let specs = [
        WorkSpec::new("k", json!({"name": "later"}))
            .priority(100)
            .run_at(run_at),
        WorkSpec::new("k", json!({"name": "low-1"})),
        WorkSpec::new("k", json!({"name": "high"})).priority(10),
        WorkSpec::new("k", json!({"name": "low-2"})),
        WorkSpec::new("k", json!({"name": "mid"})).priority(5),
    ];
    for spec in specs {
        pool.enqueue(spec).await.expect("enqueue");
    }
    let stats = pool.stats().await.expect("stats");
    assert_eq!((stats.running, stats.ready, stats.delayed), (0, 4, 1));
    pool.set_parallelism(1).await.expect("resume");
    collect(&mut rx, 5).await;
    let order = order.lock().clone();
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["high", "mid", "low-1", "low-2", "later"]);
    assert!(order[4].1 >= run_at, "ran before its run_at");
    life.shutdown(WAIT).await;
}

// ---- cancel and parallelism ------------------------------------------------------------------

#[actix::test]
async fn cancel_fires_on_complete_once_with_canceled() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(1),
        Restart::Permanent,
    )
    .await;
    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let abandoned = Arc::new(AtomicBool::new(false));
    let (ran_in, abandoned_in) = (ran.clone(), abandoned.clone());
    pool.register_handler(
        "k",
        handler_fn(move |work| {
            let (ran, abandoned) = (ran_in.clone(), abandoned_in.clone());
            async move {
                ran.lock().push(work.id.clone());
                if work.payload["hang"].as_bool() == Some(true) {
                    // Dropped when canceled: the guard records that the attempt was abandoned.
                    struct OnDrop(Arc<AtomicBool>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            self.0.store(true, Ordering::SeqCst);
                        }
                    }
                    let _guard = OnDrop(abandoned);
                    futures::future::pending::<()>().await;
                }
                Ok(Value::Null)
            }
        }),
    );
    let (recipient, mut rx) = sink();

    // A pending item (the pool is paused).
    pool.set_parallelism(0).await.expect("pause");
    let pending = pool
        .enqueue(WorkSpec::new("k", Value::Null).notify(recipient.clone()))
        .await
        .expect("enqueue");
    assert_eq!(
        pool.cancel(&pending).await.expect("cancel"),
        CancelOutcome::Canceled
    );
    let events = collect(&mut rx, 1).await;
    assert_eq!(events[0].outcome, WorkOutcome::Canceled);
    assert_eq!(events[0].attempts, 0);
    assert_eq!(
        pool.cancel(&pending).await.expect("cancel again"),
        CancelOutcome::AlreadyEnded(WorkStatus::Canceled)
    );
    assert_eq!(
        pool.cancel("no-such-item").await.expect("cancel unknown"),
        CancelOutcome::NotFound
    );

    // A running item: its attempt is abandoned.
    pool.set_parallelism(1).await.expect("resume");
    let running = pool
        .enqueue(WorkSpec::new("k", json!({"hang": true})).notify(recipient.clone()))
        .await
        .expect("enqueue");
    eventually("the hanging item runs", WAIT, || async {
        pool.status(&running).await.ok().flatten() == Some(WorkStatus::Running { attempt: 1 })
    })
    .await;
    assert_eq!(
        pool.cancel(&running).await.expect("cancel"),
        CancelOutcome::Canceled
    );
    let events = collect(&mut rx, 1).await;
    assert_eq!(
        (events[0].id.as_str(), &events[0].outcome),
        (running.as_str(), &WorkOutcome::Canceled)
    );
    assert!(
        abandoned.load(Ordering::SeqCst),
        "the attempt was not abandoned"
    );

    // The slot is free again and the canceled pending item never ran.
    let after = pool
        .enqueue(WorkSpec::new("k", Value::Null).notify(recipient))
        .await
        .expect("enqueue");
    let events = collect(&mut rx, 1).await;
    assert_eq!(events[0].id, after);
    assert_eq!(*ran.lock(), [running.clone(), after]);
    assert!(rx.try_recv().is_err(), "one event per item");
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn parallelism_changes_at_run_time_and_zero_pauses() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(2),
        Restart::Permanent,
    )
    .await;
    let gauge = Arc::new(Gauge::default());
    let gate = Gate::new();
    let (gauge_in, gate_in) = (gauge.clone(), gate.clone());
    pool.register_handler(
        "k",
        handler_fn(move |_| {
            let (gauge, gate) = (gauge_in.clone(), gate_in.clone());
            async move {
                gauge.enter();
                gate.wait().await;
                gauge.leave();
                Ok(Value::Null)
            }
        }),
    );
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    pool.set_parallelism(0).await.expect("pause");
    for _ in 0..10 {
        pool.enqueue(WorkSpec::new("k", Value::Null))
            .await
            .expect("enqueue");
    }
    let stats = pool.stats().await.expect("stats");
    assert_eq!((stats.parallelism, stats.running, stats.ready), (0, 0, 10));
    assert_eq!(
        gauge.started.load(Ordering::SeqCst),
        0,
        "paused pool ran work"
    );

    pool.set_parallelism(3).await.expect("3");
    eventually("3 attempts running", WAIT, || async {
        gauge.now.load(Ordering::SeqCst) == 3
    })
    .await;
    pool.set_parallelism(5).await.expect("5");
    eventually("5 attempts running", WAIT, || async {
        gauge.now.load(Ordering::SeqCst) == 5
    })
    .await;
    assert_eq!(pool.stats().await.expect("stats").running, 5);
    gate.open();
    collect(&mut rx, 10).await;
    assert_eq!(gauge.max.load(Ordering::SeqCst), 5);
    life.shutdown(WAIT).await;
}

// ---- durability and recovery -------------------------------------------------------------------

async fn survives_restart(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    // The first pool takes the items but is paused, then stops.
    let (pool, life) = start_pool(first, &settings(2), Restart::Permanent).await;
    pool.set_parallelism(0).await.expect("pause");
    let mut ids = Vec::new();
    for i in 0..20 {
        let spec = WorkSpec::new("k", json!({"i": i})).priority(i % 3);
        ids.push(pool.enqueue(spec).await.expect("enqueue"));
    }
    ids.push(
        pool.enqueue(WorkSpec::new("k", json!({"i": "delayed"})).delay(Duration::from_millis(300)))
            .await
            .expect("enqueue"),
    );
    assert_eq!(life.shutdown(WAIT).await, troupe_runtime::Exit::Stopped);

    // A new pool over the same store runs every one of them once.
    let (pool, life) = start_pool(second, &settings(4), Restart::Permanent).await;
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let gauge = Arc::new(Gauge::default());
    pool.register_handler("k", measured(gauge.clone(), Duration::from_millis(1)));
    let events = collect(&mut rx, ids.len()).await;
    assert_once_each(&events, &ids);
    assert_eq!(gauge.started.load(Ordering::SeqCst), ids.len());
    assert!(events.iter().all(|e| e.attempts == 1));
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn queued_items_survive_a_restart_on_the_memory_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    survives_restart(store.clone(), store).await;
}

#[actix::test]
async fn queued_items_survive_a_restart_on_redis() {
    let prefix = unique_prefix("pool-restart");
    // A second connection, as a restarted daemon would open.
    survives_restart(
        Arc::new(redis_at(&prefix).await),
        Arc::new(redis_at(&prefix).await),
    )
    .await;
}

/// A handler whose first attempt never ends (the runner "dies" in it); later ones succeed.
fn hangs_first_time(started: Arc<AtomicUsize>) -> Arc<dyn WorkHandler> {
    handler_fn(move |work| {
        let started = started.clone();
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            if work.attempt == 1 {
                futures::future::pending::<()>().await;
            }
            Ok(json!(work.attempt))
        }
    })
}

#[actix::test]
async fn an_item_whose_runner_died_is_retried_by_another_daemon() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Daemon A: its pool is not restarted when it dies.
    let (a, a_life) = start_pool(store.clone(), &settings(2), Restart::Temporary).await;
    let started = Arc::new(AtomicUsize::new(0));
    a.register_handler("k", hangs_first_time(started.clone()));
    let id = a
        .enqueue(WorkSpec::new("k", Value::Null))
        .await
        .expect("enqueue");
    eventually("A runs the item", WAIT, || async {
        a.status(&id).await.ok().flatten() == Some(WorkStatus::Running { attempt: 1 })
    })
    .await;
    // A crashes: its pool actor is killed mid-attempt, nothing is written.
    a.actor().life().expect("A's pool is running").kill();

    // Daemon B (another process: its own pool over the same store) retries it once A's
    // runner lease has expired.
    let (b, b_life) = start_pool(store, &settings(2), Restart::Permanent).await;
    let (recipient, mut rx) = sink();
    b.subscribe(recipient);
    b.register_handler("k", hangs_first_time(started.clone()));
    let events = collect(&mut rx, 1).await;
    assert_eq!(events[0].id, id);
    assert_eq!(events[0].attempts, 2);
    assert_eq!(
        events[0].outcome,
        WorkOutcome::Succeeded { output: json!(2) }
    );
    let record = b.record(&id).await.expect("record").expect("kept");
    assert!(record
        .last_error
        .is_some_and(|e| e.contains("runner stopped during attempt 1")));
    assert_eq!(started.load(Ordering::SeqCst), 2);
    b_life.shutdown(WAIT).await;
    a_life.shutdown(WAIT).await;
}

#[actix::test]
async fn a_daemon_restarted_under_its_name_retries_its_predecessors_items_at_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Runner leases far longer than the wait: only the name can explain a quick retry.
    let options = PoolOptions {
        runner_lease: Duration::from_secs(60),
        instance_is_unique: true,
        ..fast_options()
    };
    let (a, a_life) = start_pool_with(
        store.clone(),
        &settings(2),
        Restart::Temporary,
        options.clone(),
    )
    .await;
    let started = Arc::new(AtomicUsize::new(0));
    a.register_handler("k", hangs_first_time(started.clone()));
    let id = a
        .enqueue(WorkSpec::new("k", Value::Null))
        .await
        .expect("enqueue");
    eventually("A runs the item", WAIT, || async {
        a.status(&id).await.ok().flatten() == Some(WorkStatus::Running { attempt: 1 })
    })
    .await;
    a.actor().life().expect("A's pool is running").kill();

    // The same daemon name in a new process: a new pool of the same instance.
    let (b, b_life) = start_pool_with(store, &settings(2), Restart::Permanent, options).await;
    let (recipient, mut rx) = sink();
    b.subscribe(recipient);
    b.register_handler("k", hangs_first_time(started.clone()));
    let events = collect(&mut rx, 1).await;
    assert_eq!(events[0].id, id);
    assert_eq!(events[0].attempts, 2);
    assert_eq!(
        events[0].outcome,
        WorkOutcome::Succeeded { output: json!(2) }
    );
    assert_eq!(started.load(Ordering::SeqCst), 2);
    b_life.shutdown(WAIT).await;
    a_life.shutdown(WAIT).await;
}

#[actix::test]
async fn a_restarted_pool_retries_what_its_predecessor_was_running() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(2),
        Restart::Permanent,
    )
    .await;
    let started = Arc::new(AtomicUsize::new(0));
    pool.register_handler("k", hangs_first_time(started.clone()));
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let id = pool
        .enqueue(WorkSpec::new("k", Value::Null))
        .await
        .expect("enqueue");
    eventually("the item runs", WAIT, || async {
        pool.status(&id).await.ok().flatten() == Some(WorkStatus::Running { attempt: 1 })
    })
    .await;
    let first = pool.actor().life().expect("running");
    first.kill();
    first.exited().await;
    // The supervisor starts a fresh incarnation, which retries at once (no lease wait).
    let events = collect(&mut rx, 1).await;
    assert_eq!(
        (events[0].id.as_str(), events[0].attempts),
        (id.as_str(), 2)
    );
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn follow_up_items_run_once_with_the_outcome() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(2),
        Restart::Permanent,
    )
    .await;
    pool.register_handler(
        "fail",
        handler_fn(|_| async { Err(WorkError::non_retryable("nope")) }),
    );
    pool.register_handler("after", handler_fn(|work| async move { Ok(work.payload) }));
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let then = FollowUp {
        kind: "after".into(),
        payload: json!({"note": "x"}),
    };
    let id = pool
        .enqueue(WorkSpec::new("fail", Value::Null).then(then))
        .await
        .expect("enqueue");
    let events = collect(&mut rx, 2).await;
    let follow = events
        .iter()
        .find(|e| e.kind == "after")
        .expect("the follow-up completed");
    assert_eq!(follow.id, format!("{id}:then"));
    assert_eq!(
        follow.outcome,
        WorkOutcome::Succeeded {
            output: json!({"after": id, "outcome": {"outcome": "failed", "error": "nope"}, "payload": {"note": "x"}})
        }
    );
    assert!(rx.try_recv().is_err());
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn items_of_an_unregistered_kind_wait_for_their_handler_and_ids_deduplicate() {
    let (pool, life) = start_pool(
        Arc::new(MemoryStore::new()),
        &settings(2),
        Restart::Permanent,
    )
    .await;
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let id = pool
        .enqueue(WorkSpec::new("later", Value::Null).id("job-1"))
        .await
        .expect("enqueue");
    assert_eq!(id, "job-1");
    let duplicate = pool
        .enqueue(WorkSpec::new("later", Value::Null).id("job-1"))
        .await;
    assert!(matches!(
        duplicate,
        Err(troupe_runtime::pool::PoolError::Duplicate { .. })
    ));
    eventually("the item is parked", WAIT, || async {
        pool.stats().await.is_ok_and(|s| s.parked == 1)
    })
    .await;
    pool.register_handler("later", handler_fn(|_| async { Ok(Value::Null) }));
    let events = collect(&mut rx, 1).await;
    assert_eq!(events[0].id, "job-1");
    life.shutdown(WAIT).await;
}

// ---- state writes on a paused Redis ----------------------------------------------------------

/// A store on `server` whose calls time out after 300 ms.
async fn paused_store(server: &RedisServer, prefix: &str) -> Arc<dyn Store> {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        response_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        reconnect_max_delay: Duration::from_millis(200),
        ..RedisOptions::new(server.url())
    };
    Arc::new(RedisStore::connect(options).await.expect("connect"))
}

/// Pool options for a daemon `instance` whose runner lease outlives the pauses below, so
/// that no other daemon may take its items.
fn patient(instance: &str) -> PoolOptions {
    PoolOptions {
        instance: instance.to_owned(),
        runner_lease: Duration::from_secs(20),
        ..fast_options()
    }
}

/// Resumes `server` once `pause` has passed, on a thread of its own.
fn resume_after(server: &Arc<RedisServer>, pause: Duration) -> std::thread::JoinHandle<()> {
    let server = server.clone();
    std::thread::spawn(move || {
        std::thread::sleep(pause);
        server.pause(false);
    })
}

#[actix::test]
async fn a_succeeded_attempt_survives_a_redis_pause_during_its_final_write() {
    let server = Arc::new(RedisServer::start());
    let prefix = unique_prefix("pool-final-write");
    let mut settings = settings(2);
    settings.max_attempts = 1;
    // Two daemons on one Redis.
    let (a, a_life) = start_pool_with(
        paused_store(&server, &prefix).await,
        &settings,
        Restart::Permanent,
        patient("a"),
    )
    .await;
    let (b, b_life) = start_pool_with(
        paused_store(&server, &prefix).await,
        &settings,
        Restart::Permanent,
        patient("b"),
    )
    .await;
    let (recipient, mut rx) = sink();
    a.subscribe(recipient.clone());
    b.subscribe(recipient);
    // The attempt succeeds, and Redis stops answering as it returns: its final write (and a
    // dozen tries of it, 300 ms each) meets a paused server for 4 s.
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (runs, server) = (runs.clone(), server.clone());
        handler_fn(move |_| {
            let (runs, server) = (runs.clone(), server.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    server.pause(true);
                }
                Ok(json!("the result"))
            }
        })
    };
    a.register_handler("k", handler.clone());
    let id = a
        .enqueue(WorkSpec::new("k", Value::Null))
        .await
        .expect("enqueue");
    eventually("the attempt ran", WAIT, || async {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let resumed = resume_after(&server, Duration::from_secs(4));
    // B can run the item too from now on: it must not need to.
    b.register_handler("k", handler);
    let events = collect(&mut rx, 1).await;
    resumed.join().expect("resume");
    assert_eq!(events[0].id, id);
    assert_eq!(
        events[0].outcome,
        WorkOutcome::Succeeded {
            output: json!("the result")
        }
    );
    assert_eq!(events[0].attempts, 1);
    // A few rescans later, still once: no second completion, no second run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.try_recv().is_err(), "the item completed twice");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again");
    let record = a.record(&id).await.expect("record").expect("kept");
    assert_eq!(record.status(), WorkStatus::Succeeded);
    b_life.shutdown(WAIT).await;
    a_life.shutdown(WAIT).await;
}

#[actix::test]
async fn an_item_is_not_failed_for_a_claim_whose_answer_was_lost() {
    let server = Arc::new(RedisServer::start());
    let prefix = unique_prefix("pool-lost-claim");
    let mut settings = settings(2);
    // One attempt allowed: counting one that never ran would fail the item.
    settings.max_attempts = 1;
    let (pool, life) = start_pool_with(
        paused_store(&server, &prefix).await,
        &settings,
        Restart::Permanent,
        patient("a"),
    )
    .await;
    let (recipient, mut rx) = sink();
    pool.subscribe(recipient);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    pool.register_handler(
        "k",
        handler_fn(move |work| {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(json!(work.attempt))
            }
        }),
    );
    // A first item runs as usual (the store has sent its scripts to Redis).
    pool.enqueue(WorkSpec::new("k", Value::Null))
        .await
        .expect("enqueue");
    collect(&mut rx, 1).await;
    runs.store(0, Ordering::SeqCst);
    // Due in 1 s; Redis is paused before then, so the claim's answer is lost (it times out),
    // while the claim itself is applied when Redis resumes.
    let id = pool
        .enqueue(WorkSpec::new("k", Value::Null).delay(Duration::from_secs(1)))
        .await
        .expect("enqueue");
    server.pause(true);
    let resumed = resume_after(&server, Duration::from_secs(3));
    let events = collect(&mut rx, 1).await;
    resumed.join().expect("resume");
    assert_eq!(events[0].id, id);
    assert_eq!(
        events[0].outcome,
        WorkOutcome::Succeeded { output: json!(1) },
        "{events:?}"
    );
    assert_eq!(events[0].attempts, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    life.shutdown(WAIT).await;
}
