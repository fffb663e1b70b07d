//! Rate limits through their public API: exact token-bucket and fixed-window behaviour on
//! governor's fake clock (bursts, refunds, reservations, penalties, shards, waiting), pruning a
//! million keys, the janitor actor, model-call accounting, and distributed limits on Redis —
//! failing open or closed while it is down, recovering when it is back, and two OS processes
//! sharing one limit without ever admitting more than it allows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_runtime::retry::Transient as _;

use anyhow::{ensure, Context as _, Result};
use troupe_config::LimitSettings;
use troupe_runtime::limit::{
    Admission, FakeRelativeClock, LimitError, LimitStatus, Limiters, Prune, Scope,
};
use troupe_runtime::store::{MemoryStore, RedisOptions, RedisStore, Store};
use troupe_runtime::{ChildOptions, Intensity, SupervisorSpec};
use troupe_testkit::{eventually, WAIT};

use crate::support::redis::{free_port, redis_url, unique_prefix, RedisServer};

const MS: Duration = Duration::from_millis(1);

/// The `[limits.X]` sections of a config file (with a Redis `[store]`, so any backend
/// validates; the store the limits use is passed separately).
fn settings(limits: &str) -> BTreeMap<String, LimitSettings> {
    let text = format!("[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1/\"\n{limits}");
    match troupe_config::load_str(&text, "limits.toml", &[]) {
        Ok(config) => config.limits,
        Err(err) => panic!("invalid limits config: {err}"),
    }
}

/// Limits on a fake clock (zero: the Unix epoch) with a memory store.
fn fake(limits: &str) -> (Limiters, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let limiters =
        Limiters::with_clock(&settings(limits), store, clock.clone()).expect("limits build");
    (limiters, clock)
}

fn limited(ms: u64) -> Admission {
    Admission::Limited {
        retry_after: Duration::from_millis(ms),
    }
}

/// One step of a scenario: advance the clock by `advance_ms`, ask for `count` units.
type Step = (u64, u64, Admission);

/// Runs `steps` against `limit`/`key`, comparing every admission.
async fn check(limiters: &Limiters, clock: &FakeRelativeClock, limit: &str, steps: &[Step]) {
    let mut got = Vec::new();
    for &(advance_ms, count, _) in steps {
        clock.advance(Duration::from_millis(advance_ms));
        got.push(
            limiters
                .limit(limit, "k", count)
                .await
                .expect("a limit call"),
        );
    }
    let expected: Vec<Admission> = steps.iter().map(|s| s.2).collect();
    assert_eq!(got, expected);
}

// ---- token buckets and windows on the fake clock -------------------------------------------

#[tokio::test]
async fn burst_of_capacity_then_one_per_replenish_interval() {
    let (limiters, clock) = fake(
        "[limits.even]\nkind = \"token_bucket\"\nrate = 5\nperiod = \"1s\"\n\
         [limits.bursty]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1s\"\ncapacity = 3\n",
    );
    use Admission::Admitted as A;
    // 5 per second: one unit every 200 ms, a burst of 5.
    check(
        &limiters,
        &clock,
        "even",
        &[
            (0, 1, A),
            (0, 1, A),
            (0, 1, A),
            (0, 1, A),
            (0, 1, A),
            (0, 1, limited(200)),
            (199, 1, limited(1)),
            (1, 1, A),
            (0, 1, limited(200)),
            (1_000, 5, A),
            (0, 1, limited(200)),
        ],
    )
    .await;
    // A burst larger than the rate: 3 at once, then one per second.
    check(
        &limiters,
        &clock,
        "bursty",
        &[
            (0, 2, A),
            (0, 1, A),
            (0, 1, limited(1_000)),
            (1_000, 2, limited(1_000)),
            (0, 1, A),
            (2_000, 2, A),
        ],
    )
    .await;
}

#[tokio::test]
async fn fixed_windows_count_per_window_aligned_to_start() {
    let (limiters, clock) = fake(
        "[limits.w]\nkind = \"fixed_window\"\nrate = 3\nperiod = \"1s\"\n\
         start = \"1970-01-01T00:00:00.500Z\"\n",
    );
    use Admission::Admitted as A;
    // The fake clock starts at the epoch, inside the window [-0.5 s, 0.5 s).
    check(
        &limiters,
        &clock,
        "w",
        &[
            (0, 2, A),
            (0, 1, A),
            (0, 1, limited(500)),
            (499, 1, limited(1)),
            (1, 3, A),
            (600, 1, limited(400)),
            (400, 1, A),
        ],
    )
    .await;
    let status = limiters.status("w", "k").await.expect("status");
    assert_eq!(
        status,
        LimitStatus {
            capacity: 3,
            remaining: 2,
            reset_after: Duration::from_secs(1),
        }
    );
}

#[tokio::test]
async fn check_takes_nothing_and_status_reports_remaining() {
    let (limiters, clock) =
        fake("[limits.l]\nkind = \"token_bucket\"\nrate = 4\nperiod = \"1s\"\n");
    for _ in 0..3 {
        assert_eq!(
            limiters.check("l", "k", 4).await.ok(),
            Some(Admission::Admitted)
        );
    }
    limiters.limit("l", "k", 3).await.expect("limit");
    assert_eq!(limiters.check("l", "k", 2).await.ok(), Some(limited(250)));
    assert_eq!(
        limiters.check("l", "k", 1).await.ok(),
        Some(Admission::Admitted)
    );
    let status = limiters.status("l", "k").await.expect("status");
    assert_eq!((status.capacity, status.remaining), (4, 1));
    assert_eq!(status.reset_after, Duration::from_millis(750));
    clock.advance(Duration::from_millis(750));
    let status = limiters.status("l", "k").await.expect("status");
    assert_eq!((status.remaining, status.reset_after), (4, Duration::ZERO));
    assert_eq!(limiters.stats("l").ok().flatten().map(|s| s.keys), Some(1));
}

#[tokio::test]
async fn refunds_come_back_but_never_beyond_capacity() {
    let (limiters, _clock) = fake(
        "[limits.tokens]\nkind = \"token_bucket\"\nrate = 1000\nperiod = \"1m\"\nunit = \"tokens\"\n\
         [limits.w]\nkind = \"fixed_window\"\nrate = 10\nperiod = \"1m\"\n",
    );
    for name in ["tokens", "w"] {
        let capacity = limiters.status(name, "k").await.expect("status").capacity;
        limiters.limit(name, "k", capacity).await.expect("limit");
        assert!(!limiters
            .limit(name, "k", 1)
            .await
            .expect("limit")
            .is_admitted());
        limiters.refund(name, "k", 3).await.expect("refund");
        assert_eq!(
            limiters.status(name, "k").await.expect("status").remaining,
            3
        );
        assert_eq!(
            limiters
                .limit(name, "k", 4)
                .await
                .ok()
                .map(|a| a.is_admitted()),
            Some(false)
        );
        assert_eq!(
            limiters.limit(name, "k", 3).await.ok(),
            Some(Admission::Admitted)
        );
        limiters
            .refund(name, "k", capacity * 10)
            .await
            .expect("refund");
        assert_eq!(
            limiters.status(name, "k").await.expect("status").remaining,
            capacity,
            "{name}: a refund never fills beyond the capacity"
        );
    }
}

#[tokio::test]
async fn reservations_are_served_in_order_up_to_max_reserved() {
    let (limiters, clock) =
        fake("[limits.r]\nkind = \"token_bucket\"\nrate = 2\nperiod = \"1s\"\nmax_reserved = 3\n");
    assert_eq!(
        limiters.limit("r", "k", 2).await.ok(),
        Some(Admission::Admitted)
    );
    let first = limiters
        .reserve("r", "k", 1)
        .await
        .expect("first reservation");
    let second = limiters
        .reserve("r", "k", 2)
        .await
        .expect("second reservation");
    assert_eq!((first.wait, second.wait), (500 * MS, 1_500 * MS));
    assert!(
        first.ready_at < second.ready_at,
        "served in the order reserved"
    );
    // Four units promised beyond the bucket would exceed max_reserved = 3.
    match limiters.reserve("r", "k", 1).await {
        Err(LimitError::TooManyReserved {
            max_reserved: 3,
            retry_after,
            ..
        }) => assert_eq!(retry_after, 500 * MS),
        other => panic!("expected TooManyReserved, got {other:?}"),
    }
    // A plain call queues behind the reservations.
    assert_eq!(limiters.limit("r", "k", 1).await.ok(), Some(limited(2_000)));
    clock.advance(500 * MS);
    let third = limiters.reserve("r", "k", 1).await.expect("room again");
    assert_eq!(third.wait, 1_500 * MS);
    // Units that fit now are reserved with no wait.
    let now = limiters
        .reserve("r", "other", 2)
        .await
        .expect("reservation");
    assert_eq!(now.wait, Duration::ZERO);
}

#[tokio::test]
async fn penalize_holds_the_key_until_retry_after() {
    let (limiters, clock) = fake(
        "[limits.tb]\nkind = \"token_bucket\"\nrate = 2\nperiod = \"1s\"\n\
         [limits.w]\nkind = \"fixed_window\"\nrate = 2\nperiod = \"1s\"\n",
    );
    use Admission::Admitted as A;
    limiters
        .penalize("tb", "k", Duration::from_secs(3))
        .await
        .expect("penalize");
    // After the penalty the bucket refills from empty at its rate: no burst.
    check(
        &limiters,
        &clock,
        "tb",
        &[
            (0, 1, limited(3_000)),
            (2_999, 1, limited(1)),
            (1, 1, A),
            (0, 1, limited(500)),
        ],
    )
    .await;
    limiters
        .penalize("w", "k", Duration::from_millis(2_500))
        .await
        .expect("penalize");
    check(
        &limiters,
        &clock,
        "w",
        &[(0, 1, limited(2_500)), (2_500, 2, A)],
    )
    .await;
    // Other keys are not held; a zero penalty does nothing.
    assert_eq!(limiters.limit("tb", "other", 2).await.ok(), Some(A));
    limiters
        .penalize("tb", "fresh", Duration::ZERO)
        .await
        .expect("penalize");
    assert_eq!(limiters.limit("tb", "fresh", 2).await.ok(), Some(A));
}

#[tokio::test]
async fn more_than_capacity_fails_at_once() {
    let (limiters, _clock) = fake(
        "[limits.l]\nkind = \"token_bucket\"\nrate = 10\nperiod = \"1m\"\ncapacity = 2\nmax_wait = \"1h\"\n\
         [limits.w]\nkind = \"fixed_window\"\nrate = 2\nperiod = \"1m\"\nmax_wait = \"1h\"\n",
    );
    for name in ["l", "w"] {
        let started = Instant::now();
        let results = [
            limiters.limit(name, "k", 3).await.map(drop),
            limiters.check(name, "k", 3).await.map(drop),
            limiters.reserve(name, "k", 3).await.map(drop),
            limiters.acquire(name, "k", 3, None).await.map(drop),
        ];
        for result in results {
            match result {
                Err(LimitError::ExceedsCapacity {
                    requested: 3,
                    capacity: 2,
                    ..
                }) => {}
                other => panic!("{name}: expected ExceedsCapacity, got {other:?}"),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(1), "no waiting");
        assert!(!LimitError::ExceedsCapacity {
            limit: name.into(),
            requested: 3,
            capacity: 2
        }
        .is_retryable());
    }
    assert_eq!(
        limiters.limit("l", "k", 0).await.ok(),
        Some(Admission::Admitted)
    );
}

#[tokio::test]
async fn acquire_waits_its_turn_or_fails_fast() {
    // One unit every 50 ms; the fake clock stands still, so waits are exact.
    let (limiters, _clock) = fake(
        "[limits.l]\nkind = \"token_bucket\"\nrate = 20\nperiod = \"1s\"\ncapacity = 1\nmax_wait = \"1s\"\nmax_reserved = 10\n",
    );
    assert_eq!(
        limiters.limit("l", "k", 1).await.ok(),
        Some(Admission::Admitted)
    );
    let acquired = limiters
        .acquire("l", "k", 1, Some(100 * MS))
        .await
        .expect("acquire");
    assert_eq!(acquired.waited, 50 * MS);
    match limiters.acquire("l", "k", 1, Some(10 * MS)).await {
        Err(err @ LimitError::RateLimited { .. }) => {
            assert_eq!(err.retry_after(), Some(100 * MS));
            assert!(err.is_retryable());
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Without a max_wait, the limit's own (1 s) applies.
    let acquired = limiters.acquire("l", "k", 1, None).await.expect("acquire");
    assert_eq!(acquired.waited, 100 * MS);
}

#[tokio::test]
async fn dropped_acquire_gives_its_units_back() {
    let (limiters, _clock) =
        fake("[limits.l]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1h\"\ncapacity = 1\nmax_reserved = 1\n");
    assert_eq!(
        limiters.limit("l", "k", 1).await.ok(),
        Some(Admission::Admitted)
    );
    let waiting = limiters.acquire("l", "k", 1, Some(Duration::from_secs(7200)));
    let gave_up = tokio::time::timeout(10 * MS, waiting).await;
    assert!(gave_up.is_err(), "the acquire waits an hour");
    let status = limiters.status("l", "k").await.expect("status");
    assert_eq!(
        status.reset_after,
        Duration::from_secs(3600),
        "only the first unit is owed"
    );
    let reservation = limiters
        .reserve("l", "k", 1)
        .await
        .expect("the slot is free again");
    assert_eq!(reservation.wait, Duration::from_secs(3600));
}

#[tokio::test]
async fn shards_split_the_capacity() {
    let (limiters, _clock) =
        fake("[limits.s]\nkind = \"token_bucket\"\nrate = 4\nperiod = \"1m\"\nshards = 2\n");
    for _ in 0..4 {
        assert_eq!(
            limiters.limit("s", "k", 1).await.ok(),
            Some(Admission::Admitted)
        );
    }
    assert!(!limiters
        .limit("s", "k", 1)
        .await
        .expect("limit")
        .is_admitted());
    match limiters.limit("s", "k", 3).await {
        Err(LimitError::ExceedsCapacity { capacity: 2, .. }) => {}
        other => panic!("a shard holds 2: {other:?}"),
    }
    let status = limiters.status("s", "k").await.expect("status");
    assert_eq!((status.capacity, status.remaining), (4, 0));
    assert_eq!(limiters.stats("s").ok().flatten().map(|s| s.keys), Some(2));
    limiters.reset("s", "k").await.expect("reset");
    assert_eq!(
        limiters.status("s", "k").await.expect("status").remaining,
        4
    );
}

// ---- memory -----------------------------------------------------------------------------------

#[tokio::test]
async fn pruning_returns_memory_to_the_active_set() {
    let (limiters, clock) = fake(
        "[limits.tb]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1s\"\nkey = \"user\"\n\
         [limits.w]\nkind = \"fixed_window\"\nrate = 1\nperiod = \"1s\"\nkey = \"user\"\n",
    );
    const KEYS: usize = 1_000_000;
    const ACTIVE: usize = 100;
    for i in 0..KEYS {
        let key = format!("user-{i}");
        let name = if i % 10 == 0 { "w" } else { "tb" };
        limiters.limit(name, &key, 1).await.expect("limit");
    }
    let tb = limiters.stats("tb").ok().flatten().expect("local");
    let w = limiters.stats("w").ok().flatten().expect("local");
    assert_eq!(tb.keys + w.keys, KEYS);
    assert!(tb.slots >= tb.keys && w.slots >= w.keys);
    // Everyone goes idle; a few keep calling.
    clock.advance(Duration::from_secs(5));
    for i in 0..ACTIVE {
        let key = format!("user-{i}");
        limiters.limit("tb", &key, 1).await.expect("limit");
        limiters.limit("w", &key, 1).await.expect("limit");
    }
    let report = limiters.prune();
    // Each active key is now in both limits: a tenth of them were new to "tb", the rest to "w".
    assert_eq!(report.before, KEYS + ACTIVE);
    assert_eq!(report.after, 2 * ACTIVE);
    let tb_after = limiters.stats("tb").ok().flatten().expect("local");
    let w_after = limiters.stats("w").ok().flatten().expect("local");
    assert_eq!((tb_after.keys, w_after.keys), (ACTIVE, ACTIVE));
    // The tables shrank with them: slots for the active set, not for a million keys.
    assert!(
        tb_after.slots + w_after.slots < 8 * 1024,
        "slots after pruning: {tb_after:?} {w_after:?} (before: {tb:?} {w:?})"
    );
    // The active keys kept their state; pruned ones start full.
    assert!(!limiters
        .limit("tb", "user-0", 1)
        .await
        .expect("limit")
        .is_admitted());
    assert!(limiters
        .limit("tb", "user-999999", 1)
        .await
        .expect("limit")
        .is_admitted());
}

#[actix::test]
async fn janitor_actor_prunes_under_a_supervisor() {
    let (limiters, clock) =
        fake("[limits.tb]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1s\"\n");
    for i in 0..1_000 {
        limiters
            .limit("tb", &format!("k{i}"), 1)
            .await
            .expect("limit");
    }
    clock.advance(Duration::from_secs(2));
    let mut infra = SupervisorSpec::new("infra", Intensity::default());
    let handle = limiters.clone();
    let janitor = infra.child("limit-janitor", ChildOptions::default(), move |_| {
        handle.janitor(Duration::from_secs(3600))
    });
    let (_infra, life) = infra.start();
    let report = eventually("the janitor answers", WAIT, || async {
        match janitor.send(Prune).await {
            Err(err) if err.is_retryable() => Err(format!("the janitor did not answer: {err}")),
            other => Ok(other),
        }
    })
    .await
    .unwrap_or_else(|err| panic!("the janitor did not answer: {err}"));
    assert_eq!((report.before, report.after), (1_000, 0));
    life.stop();
}

// ---- model calls -------------------------------------------------------------------------------

#[tokio::test]
async fn model_calls_take_requests_and_tokens_all_or_nothing() {
    let (limiters, _clock) = fake(
        "[limits.requests]\nkind = \"token_bucket\"\nrate = 10\nperiod = \"1m\"\nkey = \"group\"\n\
         [limits.tokens]\nkind = \"token_bucket\"\nrate = 1000\nperiod = \"1m\"\nunit = \"tokens\"\nkey = \"user\"\n",
    );
    let limits = ["requests".to_owned(), "tokens".to_owned()];
    let alice = Scope {
        group: "acme",
        user: Some("alice"),
    };
    assert_eq!(
        limiters.key_for("tokens", alice).ok().as_deref(),
        Some("acme/alice")
    );
    assert_eq!(
        limiters.key_for("requests", alice).ok().as_deref(),
        Some("acme")
    );
    limiters
        .acquire_call(&limits, alice, 600)
        .await
        .expect("first call");
    let remaining = |name: &'static str, key: &'static str| {
        let limiters = limiters.clone();
        async move { limiters.status(name, key).await.expect("status").remaining }
    };
    assert_eq!(
        (
            remaining("requests", "acme").await,
            remaining("tokens", "acme/alice").await
        ),
        (9, 400)
    );
    // The second estimate does not fit the token limit: the request unit is given back.
    match limiters.acquire_call(&limits, alice, 600).await {
        Err(LimitError::RateLimited { limit, .. }) => assert_eq!(limit, "tokens"),
        other => panic!("expected RateLimited by tokens, got {other:?}"),
    }
    assert_eq!(remaining("requests", "acme").await, 9);
    // The first call used 200 tokens, not 600: the rest comes back.
    limiters
        .settle_call(&limits, alice, 600, 200)
        .await
        .expect("settle");
    assert_eq!(remaining("tokens", "acme/alice").await, 800);
    // Using more than estimated is charged.
    limiters
        .settle_call(&limits, alice, 100, 300)
        .await
        .expect("settle");
    assert_eq!(remaining("tokens", "acme/alice").await, 600);
    // A larger estimate than the limit ever holds fails at once.
    let too_big = limiters.acquire_call(&limits, alice, 5_000).await;
    assert!(
        matches!(too_big, Err(LimitError::ExceedsCapacity { .. })),
        "{too_big:?}"
    );
    assert_eq!(remaining("requests", "acme").await, 9);
    // Another user of the group has their own tokens, but shares the group's requests.
    let bob = Scope {
        group: "acme",
        user: Some("bob"),
    };
    limiters
        .acquire_call(&limits, bob, 1_000)
        .await
        .expect("bob's call");
    assert_eq!(remaining("requests", "acme").await, 8);
}

#[tokio::test]
async fn unknown_limits_and_unenforceable_settings_are_errors() {
    let (limiters, _clock) =
        fake("[limits.l]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1s\"\n");
    assert!(matches!(
        limiters.limit("nope", "k", 1).await,
        Err(LimitError::UnknownLimit { name }) if name == "nope"
    ));
    let huge =
        settings("[limits.huge]\nkind = \"token_bucket\"\nrate = 5000000000\nperiod = \"1s\"\n");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    match Limiters::new(&huge, store) {
        Err(err @ LimitError::Settings { .. }) => assert!(!err.is_retryable()),
        other => panic!("a local bucket of 5e9 units is refused: {other:?}"),
    }
}

// ---- distributed -------------------------------------------------------------------------------

fn redis_options(url: String, prefix: String) -> RedisOptions {
    RedisOptions {
        prefix,
        connect_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(500),
        reconnect_max_delay: Duration::from_millis(100),
        ..RedisOptions::new(url)
    }
}

async fn redis_store(url: String, prefix: String) -> Arc<dyn Store> {
    Arc::new(
        RedisStore::connect(redis_options(url, prefix))
            .await
            .expect("a Redis store (it need not be reachable)"),
    )
}

#[tokio::test]
async fn a_distributed_limit_is_shared_by_every_handle() -> Result<()> {
    // The window starts now, so no window boundary falls inside the test.
    let start = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let limits = format!(
        "[limits.tb]\nkind = \"token_bucket\"\nrate = 5\nperiod = \"1m\"\nbackend = \"redis\"\n\
         [limits.w]\nkind = \"fixed_window\"\nrate = 5\nperiod = \"1h\"\nstart = \"{start}\"\n\
         backend = \"redis\"\n"
    );
    let prefix = unique_prefix("shared");
    let one = Limiters::new(
        &settings(&limits),
        redis_store(redis_url(), prefix.clone()).await,
    )?;
    let two = Limiters::new(&settings(&limits), redis_store(redis_url(), prefix).await)?;
    for name in ["tb", "w"] {
        let mut admitted = 0;
        for i in 0..20 {
            let handle = if i % 2 == 0 { &one } else { &two };
            if handle.limit(name, "k", 1).await?.is_admitted() {
                admitted += 1;
            }
        }
        ensure!(
            admitted == 5,
            "{name}: {admitted} admitted across two handles"
        );
        let status = two.status(name, "k").await?;
        ensure!(status.remaining == 0 && status.capacity == 5, "{status:?}");
        one.refund(name, "k", 2).await?;
        ensure!(two.status(name, "k").await?.remaining == 2);
        one.reset(name, "k").await?;
        ensure!(two.status(name, "k").await?.remaining == 5);
        two.penalize(name, "k", Duration::from_secs(30)).await?;
        let held = one.limit(name, "k", 1).await?;
        ensure!(
            matches!(held, Admission::Limited { retry_after } if retry_after > Duration::from_secs(29)),
            "{held:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_dropped_distributed_acquire_gives_its_units_back() -> Result<()> {
    let limits =
        "[limits.l]\nkind = \"token_bucket\"\nrate = 5\nperiod = \"1m\"\nbackend = \"redis\"\n";
    let store = redis_store(redis_url(), unique_prefix("dropped")).await;
    let limiters = Limiters::new(&settings(limits), store)?;
    ensure!(limiters.limit("l", "k", 5).await?.is_admitted());
    let owed = limiters.status("l", "k").await?.reset_after;
    let waiting = limiters.acquire("l", "k", 1, Some(Duration::from_secs(60)));
    ensure!(
        tokio::time::timeout(50 * MS, waiting).await.is_err(),
        "it waits 12 s"
    );
    // The refund runs in a task of its own: poll (bounded) until the reservation is gone.
    eventually("the reservation given back", WAIT, || async {
        match limiters.status("l", "k").await {
            Ok(status) if status.reset_after > owed => {
                Err(format!("still owed {:?}, was {owed:?}", status.reset_after))
            }
            other => Ok(other),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn without_redis_fail_open_admits_and_fail_closed_refuses() -> Result<()> {
    let limits = "[limits.open]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1m\"\nbackend = \"redis\"\non_store_error = \"fail_open\"\n\
        [limits.closed]\nkind = \"token_bucket\"\nrate = 1\nperiod = \"1m\"\nbackend = \"redis\"\non_store_error = \"fail_closed\"\n";
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let limiters = Limiters::new(
        &settings(limits),
        redis_store(dead, unique_prefix("dead")).await,
    )?;
    let started = Instant::now();
    for _ in 0..3 {
        ensure!(limiters.limit("open", "k", 1).await? == Admission::Admitted);
        match limiters.limit("closed", "k", 1).await {
            Err(err @ LimitError::StoreUnavailable { .. }) => ensure!(err.is_retryable()),
            other => anyhow::bail!("expected StoreUnavailable, got {other:?}"),
        }
    }
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "calls fail fast: {:?}",
        started.elapsed()
    );
    // Only admissions fail open: the rest reports the outage.
    let status = limiters.status("open", "k").await;
    ensure!(
        matches!(status, Err(LimitError::StoreUnavailable { .. })),
        "{status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_distributed_limit_recovers_when_redis_returns() -> Result<()> {
    let mut server = RedisServer::start();
    let limits =
        "[limits.l]\nkind = \"token_bucket\"\nrate = 2\nperiod = \"1m\"\nbackend = \"redis\"\n";
    let limiters = Limiters::new(
        &settings(limits),
        redis_store(server.url(), unique_prefix("restart")).await,
    )?;
    ensure!(limiters.limit("l", "k", 2).await?.is_admitted());
    ensure!(!limiters.limit("l", "k", 1).await?.is_admitted());
    server.stop();
    let down = limiters.limit("l", "k", 1).await;
    ensure!(
        matches!(down, Err(LimitError::StoreUnavailable { .. })),
        "{down:?}"
    );
    server.restart();
    // Bounded polling until the store has reconnected; the restarted Redis is empty.
    let admission = eventually("the store reconnects", WAIT, || async {
        match limiters.limit("l", "k", 2).await {
            Err(err) if err.is_retryable() => Err(err.to_string()),
            other => Ok(other),
        }
    })
    .await?;
    ensure!(admission.is_admitted(), "{admission:?}");
    ensure!(
        !limiters.limit("l", "k", 1).await?.is_admitted(),
        "enforcing again"
    );
    Ok(())
}

// ---- two processes ------------------------------------------------------------------------------

/// What one `troupe limits try` run printed.
#[derive(Debug)]
struct Tally {
    admitted: u64,
    limited: u64,
    errors: u64,
}

fn parse_tally(stdout: &str) -> Result<Tally> {
    let field = |name: &str| -> Result<u64> {
        let value = stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in {stdout:?}"))?;
        Ok(value.parse()?)
    };
    Ok(Tally {
        admitted: field("admitted")?,
        limited: field("limited")?,
        errors: field("errors")?,
    })
}

fn troupe(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `troupe limits try shared` in two processes at once for `secs`; returns their tallies
/// and how long the whole run took (an upper bound of the time they were admitting).
fn two_processes(config: &Path, secs: u64) -> Result<(Vec<Tally>, Duration)> {
    let config = config.to_str().context("a UTF-8 path")?;
    let run_for = format!("{secs}s");
    let args = [
        "limits", "try", "shared", "--key", "k", "--config", config, "--for", &run_for,
    ];
    let started = Instant::now();
    let children = [troupe(&args).spawn()?, troupe(&args).spawn()?];
    let mut tallies = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "troupe limits try failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        tallies.push(parse_tally(&stdout)?);
    }
    Ok((tallies, started.elapsed()))
}

fn config_file(backend: &str) -> Result<tempfile::NamedTempFile> {
    let text = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{}\"\n\n\
         [limits.shared]\nkind = \"token_bucket\"\nrate = 20\nperiod = \"500ms\"\nbackend = \"{backend}\"\n",
        redis_url(),
        unique_prefix("two-processes"),
    );
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(file)
}

/// The most a bucket of 20, earning 20 per 500 ms, admits in `elapsed` from full.
fn allowed_in(elapsed: Duration) -> u64 {
    20 + (elapsed.as_millis() * 20 / 500) as u64
}

#[test]
fn two_processes_sharing_a_redis_limit_never_exceed_it() -> Result<()> {
    let config = config_file("redis")?;
    let (tallies, elapsed) = two_processes(config.path(), 3)?;
    let admitted: u64 = tallies.iter().map(|t| t.admitted).sum();
    let bound = allowed_in(elapsed);
    eprintln!("two processes on one Redis limit: {tallies:?} in {elapsed:?}: {admitted} admitted, at most {bound} allowed");
    ensure!(
        admitted <= bound,
        "{admitted} admitted, the limit allows {bound}: {tallies:?}"
    );
    // The limit was really exercised, by both: the burst and a good part of the 120 refills
    // of the 3 s they ran (sleeps overshoot on a loaded machine, so not all of them).
    ensure!(admitted >= 20 + 40, "only {admitted} admitted: {tallies:?}");
    for t in &tallies {
        ensure!(
            t.admitted > 0 && t.limited > 0 && t.errors == 0,
            "{tallies:?}"
        );
    }
    // The operator tools see the same counter, and reset it.
    let path = config.path().to_str().context("a UTF-8 path")?;
    let status =
        troupe(&["limits", "status", "shared", "--config", path, "--key", "k"]).output()?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(status.contains("capacity=20"), "{status}");
    let reset = troupe(&["limits", "reset", "shared", "--config", path, "--key", "k"]).output()?;
    ensure!(reset.status.success(), "{reset:?}");
    let status =
        troupe(&["limits", "status", "shared", "--config", path, "--key", "k"]).output()?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(status.contains("remaining=20"), "{status}");
    Ok(())
}

/// The control for the test above: with local limits each process has its own bucket, and
/// together they admit far more than one shared limit would — so that test can fail.
#[test]
fn two_processes_with_local_limits_each_get_their_own() -> Result<()> {
    let config = config_file("local")?;
    let (tallies, elapsed) = two_processes(config.path(), 2)?;
    let admitted: u64 = tallies.iter().map(|t| t.admitted).sum();
    let bound = allowed_in(elapsed);
    eprintln!("two processes with local limits: {tallies:?} in {elapsed:?}: {admitted} admitted, one shared limit allows {bound}");
    ensure!(
        admitted > bound,
        "{admitted} admitted, expected more than {bound}: {tallies:?}"
    );
    Ok(())
}
