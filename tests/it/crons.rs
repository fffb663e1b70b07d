//! Crons: interval and cron-expression schedules fire, crons are registered, listed and
//! deleted at run time and persist, a tick is skipped (and recorded) while the previous run
//! is going, two daemons on one Redis fire each tick exactly once, a tick claimed by a
//! daemon that dies before firing it is fired by another, and a claimed tick whose next write
//! fails is fired or recorded as failed, with the error logged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use troupe_config::{CronSettings, CronTarget, Schedule};
use troupe_runtime::cron::{
    cron_handler_fn, history, CronError, CronFireError, CronHandler, CronOptions, CronOrigin,
    Crons, HistoryEntry, TickOutcome,
};
use troupe_runtime::store::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, IdleClaim, MemoryStore, PendingEntry,
    PendingRange, PendingSummary, RateLimit, RateOutcome, RedisOptions, RedisStore, Store,
    StoreResult, StreamEntry, Trim, Write,
};
use troupe_runtime::{ChildOptions, Intensity, Life, SupervisorSpec};
use troupe_testkit::{eventually, WAIT};

use crate::support::daemon::Daemon;
use crate::support::redis::{redis_url, unique_prefix, RedisServer};

fn every(ms: u64, agent: &str) -> CronSettings {
    CronSettings {
        schedule: Schedule::Every(Duration::from_millis(ms)),
        timezone: None,
        target: CronTarget::Agent(agent.to_owned()),
        input: format!("input of {agent}"),
    }
}

/// A handler that reports each fire (cron name, input) on a channel.
fn recorder() -> (Arc<dyn CronHandler>, UnboundedReceiver<(String, String)>) {
    let (tx, rx) = unbounded_channel();
    let handler = cron_handler_fn(move |cron, _target, input| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((cron, input));
            Ok(())
        }
    });
    (handler, rx)
}

async fn start(
    config: BTreeMap<String, CronSettings>,
    store: Arc<dyn Store>,
    handler: Arc<dyn CronHandler>,
) -> (Crons, Life) {
    let options = CronOptions {
        daemon: "it".to_owned(),
        refresh: Duration::from_millis(200),
        ..CronOptions::default()
    };
    start_with(config, store, handler, options).await
}

async fn start_with(
    config: BTreeMap<String, CronSettings>,
    store: Arc<dyn Store>,
    handler: Arc<dyn CronHandler>,
    options: CronOptions,
) -> (Crons, Life) {
    let mut supervisor = SupervisorSpec::new("root", Intensity::default());
    let crons = Crons::child_of(
        &mut supervisor,
        config,
        store,
        handler,
        options,
        ChildOptions::default(),
    );
    let (_, life) = supervisor.start();
    eventually("the scheduler starts", WAIT, || async {
        crons.actor().addr().is_some()
    })
    .await;
    (crons, life)
}

/// Waits for `n` fires of `cron` on `rx` (other crons' fires are dropped).
async fn fires(rx: &mut UnboundedReceiver<(String, String)>, cron: &str, n: usize) {
    // Not `eventually`: it waits on the channel rather than polling.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, _))) if name == cron => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("{cron} fired {seen} times, not {n}, within {WAIT:?}"),
        }
    }
}

async fn entries(store: &dyn Store, cron: &str) -> Vec<HistoryEntry> {
    history(store, cron, 10_000).await.expect("history")
}

/// Ticks are consecutive multiples of `period_ms`, each once.
fn assert_each_tick_once(entries: &[HistoryEntry], period_ms: u64) {
    let ticks: Vec<u64> = entries.iter().map(HistoryEntry::tick_ms).collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], period_ms, "ticks {ticks:?}");
    }
}

#[actix::test]
async fn interval_and_cron_expression_schedules_fire() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (handler, mut rx) = recorder();
    let mut config = BTreeMap::new();
    config.insert("fast".to_owned(), every(100, "a"));
    config.insert(
        "secondly".to_owned(),
        CronSettings {
            schedule: Schedule::Cron("* * * * * *".to_owned()),
            timezone: Some("Europe/Paris".to_owned()),
            target: CronTarget::Workflow("w".to_owned()),
            input: String::new(),
        },
    );
    let (crons, life) = start(config, store.clone(), handler).await;
    fires(&mut rx, "secondly", 2).await;
    eventually("fast has fired 5 times", WAIT, || async {
        entries(store.as_ref(), "fast").await.len() >= 5
    })
    .await;
    let fast = entries(store.as_ref(), "fast").await;
    assert!(fast.iter().all(|e| e.outcome == TickOutcome::Fired));
    assert_each_tick_once(&fast, 100);
    let secondly = entries(store.as_ref(), "secondly").await;
    assert!(secondly.len() >= 2);
    assert_each_tick_once(&secondly, 1000);
    assert!(secondly.iter().all(|e| e.tick_ms() % 1000 == 0));
    let listed = crons.list().await.expect("list");
    let names: Vec<(&str, CronOrigin)> =
        listed.iter().map(|c| (c.name.as_str(), c.origin)).collect();
    assert_eq!(
        names,
        [
            ("fast", CronOrigin::Config),
            ("secondly", CronOrigin::Config)
        ]
    );
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn crons_are_registered_listed_and_deleted_at_run_time_and_persist() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (handler, mut rx) = recorder();
    let (crons, life) = start(BTreeMap::new(), store.clone(), handler).await;
    assert!(crons.list().await.expect("list").is_empty());

    let invalid = CronSettings {
        schedule: Schedule::Cron("0 61 * * *".to_owned()),
        ..every(100, "a")
    };
    assert!(matches!(
        crons.register("bad", invalid).await,
        Err(CronError::InvalidSchedule { .. })
    ));
    crons
        .register("r", every(100, "a"))
        .await
        .expect("register");
    let listed = crons.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].origin,
            &listed[0].settings
        ),
        ("r", CronOrigin::Runtime, &every(100, "a"))
    );
    fires(&mut rx, "r", 2).await;

    assert!(crons.delete("r").await.expect("delete"));
    assert!(!crons.delete("r").await.expect("delete again"));
    assert!(crons.list().await.expect("list").is_empty());
    let after_delete = entries(store.as_ref(), "r").await.len();
    // A probe cron firing twice shows the scheduler kept running; `r` did not fire again.
    crons
        .register("probe", every(100, "p"))
        .await
        .expect("register");
    fires(&mut rx, "probe", 2).await;
    assert!(entries(store.as_ref(), "r").await.len() <= after_delete + 1);
    crons
        .register("kept", every(100, "k"))
        .await
        .expect("register");
    life.shutdown(WAIT).await;

    // A new scheduler over the same store (a restarted daemon) runs the run-time crons.
    let (handler, mut rx) = recorder();
    let (crons, life) = start(BTreeMap::new(), store.clone(), handler).await;
    fires(&mut rx, "kept", 2).await;
    let names: Vec<String> = crons
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["kept", "probe"]);
    life.shutdown(WAIT).await;
}

#[actix::test]
async fn a_tick_is_skipped_and_recorded_while_the_previous_run_is_going() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (open, gate) = tokio::sync::watch::channel(false);
    let handler = cron_handler_fn(move |_, _, _| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Err(CronFireError::Target {
                source: "the target failed".into(),
                retryable: false,
            })
        }
    });
    let mut config = BTreeMap::new();
    config.insert("slow".to_owned(), every(100, "a"));
    let (_crons, life) = start(config, store.clone(), handler).await;
    eventually("two ticks skipped", WAIT, || async {
        let history = entries(store.as_ref(), "slow").await;
        history
            .iter()
            .filter(|e| e.outcome == TickOutcome::Skipped)
            .count()
            >= 2
    })
    .await;
    open.send_replace(true);
    eventually("a fire after the skips", WAIT, || async {
        let history = entries(store.as_ref(), "slow").await;
        let first_skip = history
            .iter()
            .position(|e| e.outcome == TickOutcome::Skipped);
        first_skip.is_some_and(|at| {
            history[at..]
                .iter()
                .any(|e| e.outcome == TickOutcome::Fired)
        })
    })
    .await;
    life.shutdown(WAIT).await;
    let history = entries(store.as_ref(), "slow").await;
    assert_eq!(history[0].outcome, TickOutcome::Fired);
    assert_eq!(history[1].outcome, TickOutcome::Skipped);
    assert!(history[1]
        .detail
        .contains("the previous run was still going"));
    // The first run's failure is recorded under its own tick, once the gate opened.
    let failed: Vec<&HistoryEntry> = history
        .iter()
        .filter(|e| e.outcome == TickOutcome::Failed)
        .collect();
    assert!(failed
        .first()
        .is_some_and(|f| f.tick == history[0].tick && f.detail == "the target failed"));
    // Fired or skipped: one decision per tick, ticks consecutive.
    let decisions: Vec<HistoryEntry> = history
        .into_iter()
        .filter(|e| e.outcome != TickOutcome::Failed)
        .collect();
    assert_each_tick_once(&decisions, 100);
}

#[test]
fn two_daemons_on_one_redis_fire_each_tick_exactly_once() {
    let prefix = unique_prefix("crons-two-daemons");
    let config = |name: &str| {
        format!(
            r#"
[daemon]
name = "{name}"
shutdown_grace = "3s"

[store]
backend = "redis"
url = "{url}"
prefix = "{prefix}"

[models.m]
provider = "scripted"

[agents.a]
model = "m"

[crons.x]
every = "1s"
agent = "a"
"#,
            url = redis_url(),
        )
    };
    let (_files, mut daemons) = two_daemons(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let history = runtime.block_on(async {
        let options = RedisOptions {
            prefix: prefix.clone(),
            ..RedisOptions::new(redis_url())
        };
        let store = RedisStore::connect(options).await.expect("connect");
        // Both daemons are up: count the ticks fired from now on, over about 6 s.
        let start = entries(&store, "x").await.len();
        eventually("six more fires", WAIT, || async {
            let history = entries(&store, "x").await;
            if history.len() >= start + 6 {
                Ok(history)
            } else {
                Err(format!("only {} fires: {history:?}", history.len()))
            }
        })
        .await
    });
    for daemon in &mut daemons {
        daemon.signal("TERM");
    }
    for daemon in &mut daemons {
        let status = daemon.wait_exit(Duration::from_secs(5)).expect("exit");
        assert!(status.success(), "{status:?}\n{}", daemon.log());
    }
    assert!(
        history.iter().all(|e| e.outcome == TickOutcome::Fired),
        "{history:?}"
    );
    let mut per_tick: HashMap<u64, usize> = HashMap::new();
    for entry in &history {
        *per_tick.entry(entry.tick_ms()).or_default() += 1;
    }
    assert!(
        per_tick.values().all(|n| *n == 1),
        "a tick fired twice: {per_tick:?}"
    );
    assert_each_tick_once(&history, 1000);
    let by = |name: &str| history.iter().filter(|e| e.daemon == name).count();
    eprintln!("fires by daemon: d1 {}, d2 {}", by("d1"), by("d2"));

    // Every fire ran the agent exactly once: one user message and one answer per fired tick,
    // in the cron's thread of the `system` group.
    runtime.block_on(async {
        let options = RedisOptions {
            prefix: prefix.clone(),
            ..RedisOptions::new(redis_url())
        };
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(options).await.expect("connect"));
        let fired = entries(&*store, "x")
            .await
            .iter()
            .filter(|e| e.outcome == TickOutcome::Fired)
            .count();
        let threads = troupe_agents::ThreadStore::new(store, Duration::from_secs(60));
        let id = threads
            .resolve("system", "cron-x")
            .await
            .expect("the cron's thread");
        let (messages, total) = threads.messages(&id, 0, 10_000).await.expect("messages");
        assert_eq!(total as usize, 2 * fired, "one turn per fired tick");
        for pair in messages.chunks(2) {
            assert_eq!(pair[0].message.role, troupe_agents::Role::User);
            assert_eq!(pair[1].message.role, troupe_agents::Role::Assistant);
        }
    });
}

/// How a [`Faulty`] store misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Running leases never answer: the daemon claims a tick, then goes silent.
    dies_at_the_lease: bool,
    /// Reads of a claim key wait this long first (the other daemon claims first).
    claim_delay: Duration,
}

/// A store that passes every call on, but for the [`Faults`].
struct Faulty(Arc<dyn Store>, Faults);

#[async_trait]
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.0.ping().await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        if key.ends_with(":last") {
            tokio::time::sleep(self.1.claim_delay).await;
        }
        self.0.get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.0.get_many(keys).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.0.set(key, value, ttl).await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        self.0.set_nx(key, value, ttl).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        self.0.compare_and_set(key, expected, new, ttl).await
    }

    async fn del(&self, keys: &[String]) -> StoreResult<u64> {
        self.0.del(keys).await
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        self.0.exists(key).await
    }

    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        self.0.expire(key, ttl).await
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        self.0.ttl(key).await
    }

    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64> {
        self.0.incr_by(key, delta).await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.0.keys_with_prefix(prefix).await
    }

    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        if self.1.dies_at_the_lease && key.ends_with(":running") {
            // As far as the other daemons can tell, this one died right after its claim.
            std::future::pending::<()>().await;
        }
        self.0.acquire_lease(key, owner, ttl).await
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.0.renew_lease(key, owner, ttl).await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool> {
        self.0.release_lease(key, owner).await
    }

    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()> {
        self.0.hset(key, fields).await
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.hget(key, field).await
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.0.hgetall(key).await
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64> {
        self.0.hdel(key, fields).await
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64> {
        self.0.hincr_by(key, field, delta).await
    }

    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
        self.0.push(key, values).await
    }

    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>> {
        self.0.range(key, start, stop).await
    }

    async fn len(&self, key: &str) -> StoreResult<u64> {
        self.0.len(key).await
    }

    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>> {
        self.0.zrevrange(key, start, stop).await
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        self.0.zcard(key).await
    }

    async fn xadd(
        &self,
        stream: &str,
        fields: &[(&str, &[u8])],
        trim: Option<Trim>,
    ) -> StoreResult<EntryId> {
        self.0.xadd(stream, fields, trim).await
    }

    async fn xlen(&self, stream: &str) -> StoreResult<u64> {
        self.0.xlen(stream).await
    }

    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>> {
        self.0.xrange(stream, start, end, count).await
    }

    async fn xread(
        &self,
        stream: &str,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StoreResult<Vec<StreamEntry>> {
        self.0.xread(stream, after, count, block).await
    }

    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool> {
        self.0.xgroup_create(stream, group, start).await
    }

    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>> {
        self.0.xreadgroup(read).await
    }

    async fn xack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.0.xack(stream, group, ids).await
    }

    async fn xpending(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.0.xpending(stream, group).await
    }

    async fn xpending_range(&self, range: PendingRange<'_>) -> StoreResult<Vec<PendingEntry>> {
        self.0.xpending_range(range).await
    }

    async fn xautoclaim(&self, claim: IdleClaim<'_>) -> StoreResult<AutoClaim> {
        self.0.xautoclaim(claim).await
    }

    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>> {
        self.0.xclaim_touch(stream, group, consumer, ids).await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64> {
        self.0.xtrim(stream, trim).await
    }

    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        self.0.xgroups(stream).await
    }

    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        self.0.xconsumers(stream, group).await
    }

    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool> {
        self.0
            .xdelconsumer_idle(stream, group, consumer, min_idle)
            .await
    }

    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.0.apply(writes).await
    }

    async fn rate_limit(&self, key: &str, limit: RateLimit) -> StoreResult<RateOutcome> {
        self.0.rate_limit(key, limit).await
    }
}

#[actix::test]
async fn a_tick_claimed_by_a_daemon_that_dies_before_firing_it_is_fired_by_another() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Ticks 2 s apart: a takeover (refresh, claim timeout, the late claim) needs about 0.6 s,
    // and must happen before the next tick, whose claimer would record this one as failed.
    let config = BTreeMap::from([("t".to_owned(), every(2000, "a"))]);
    let options = |daemon: &str| CronOptions {
        daemon: daemon.to_owned(),
        refresh: Duration::from_millis(200),
        claim_timeout: Duration::from_millis(300),
        ..CronOptions::default()
    };
    // `dead` claims every tick first, then never fires it; `live` sees each claim late.
    let dead: Arc<dyn Store> = Arc::new(Faulty(
        store.clone(),
        Faults {
            dies_at_the_lease: true,
            ..Faults::default()
        },
    ));
    let live: Arc<dyn Store> = Arc::new(Faulty(
        store.clone(),
        Faults {
            claim_delay: Duration::from_millis(100),
            ..Faults::default()
        },
    ));
    let (dead_handler, mut dead_fires) = recorder();
    let (live_handler, mut live_fires) = recorder();
    let (_dead_crons, _dead_life) =
        start_with(config.clone(), dead, dead_handler, options("dead")).await;
    let (_live_crons, live_life) = start_with(config, live, live_handler, options("live")).await;
    fires(&mut live_fires, "t", 3).await;
    let history = entries(store.as_ref(), "t").await;
    assert!(history.len() >= 3, "{history:?}");
    assert!(
        history
            .iter()
            .all(|e| e.outcome == TickOutcome::Fired && e.daemon == "live"),
        "every tick fired by the live daemon: {history:?}"
    );
    assert_each_tick_once(&history, 2000);
    assert!(dead_fires.try_recv().is_err(), "the dead daemon fired");
    live_life.shutdown(WAIT).await;
}

#[test]
fn a_claimed_tick_whose_next_write_fails_is_fired_or_recorded_failed_and_logged() {
    let server = RedisServer::start();
    let prefix = unique_prefix("crons-failed-writes");
    // Two crons whose write after the claim fails for good: `hist`'s history is not a stream
    // (recording the fire fails), `lease`'s running lease is not a string (taking it fails).
    {
        use redis::Commands as _;
        let client = redis::Client::open(server.url()).expect("client");
        let mut conn = client.get_connection().expect("connect");
        let _: () = conn
            .set(format!("{prefix}cron:hist:history"), "not a stream")
            .expect("set");
        let _: () = conn
            .hset(format!("{prefix}cron:lease:running"), "not", "a lease")
            .expect("hset");
    }
    let config = |name: &str| {
        format!(
            r#"
[daemon]
name = "{name}"
shutdown_grace = "3s"

[store]
backend = "redis"
url = "{url}"
prefix = "{prefix}"

[models.m]
provider = "scripted"

[agents.a]
model = "m"

[crons.hist]
every = "1s"
agent = "a"

[crons.lease]
every = "1s"
agent = "a"
"#,
            url = server.url(),
        )
    };
    let (_files, mut daemons) = two_daemons(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (turns, lease) = runtime.block_on(async {
        let options = RedisOptions {
            prefix: prefix.clone(),
            ..RedisOptions::new(server.url())
        };
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(options).await.expect("connect"));
        let threads = troupe_agents::ThreadStore::new(store.clone(), Duration::from_secs(60));
        eventually("three fires of each cron", WAIT, || async {
            let turns = match threads.resolve("system", "cron-hist").await {
                Ok(id) => threads.messages(&id, 0, 10_000).await.expect("messages").1 / 2,
                Err(_) => 0,
            };
            let lease = entries(store.as_ref(), "lease").await;
            if turns >= 3 && lease.len() >= 3 {
                Ok((turns, lease))
            } else {
                Err(format!("{turns} turns of hist, lease history {lease:?}"))
            }
        })
        .await
    });
    for daemon in &mut daemons {
        daemon.signal("TERM");
    }
    let mut logs = String::new();
    for daemon in &mut daemons {
        let status = daemon.wait_exit(Duration::from_secs(10)).expect("exit");
        let log = daemon.log_to_end(Duration::from_secs(1));
        assert!(status.success(), "{status:?}\n{log}");
        logs.push_str(&log);
    }
    // `hist`: its ticks fired although their history could not be written, and said so.
    eprintln!("hist: {turns} turns");
    assert!(
        logs.contains("could not record the tick in the cron's history"),
        "{logs}"
    );
    // `lease`: each tick recorded as failed, once, with the error; and logged.
    assert!(
        lease.iter().all(|e| e.outcome == TickOutcome::Failed
            && e.detail.contains("could not take the running lease")),
        "{lease:?}"
    );
    assert_each_tick_once(&lease, 1000);
    assert!(logs.contains("could not take the running lease"), "{logs}");
}

/// Two `troupe serve` daemons, `d1` and `d2`, on the configs `config(name)` (the files live
/// as long as the returned handles), once both are serving.
fn two_daemons(config: impl Fn(&str) -> String) -> (Vec<tempfile::NamedTempFile>, [Daemon; 2]) {
    let files: Vec<tempfile::NamedTempFile> = ["d1", "d2"]
        .iter()
        .map(|name| {
            let mut file = tempfile::Builder::new()
                .suffix(".toml")
                .tempfile()
                .expect("temp file");
            file.write_all(config(name).as_bytes())
                .expect("write config");
            file
        })
        .collect();
    let path = |i: usize| files[i].path().to_str().expect("utf-8 path");
    let mut daemons = [
        Daemon::spawn(&["serve", "--config", path(0)]),
        Daemon::spawn(&["serve", "--config", path(1)]),
    ];
    for daemon in &mut daemons {
        daemon.wait_for_log("troupe serving", Duration::from_secs(30));
    }
    (files, daemons)
}
