//! The store conformance suite: every case is written once and run against both backends
//! (`store::memory::*`, `store::redis::*`), so their semantics cannot drift. Redis-only cases
//! at the end cover key prefixes and faults: no server, a server started late, a server
//! killed and restarted, a server paused.

use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_runtime::retry::Transient as _;

use anyhow::{ensure, Context as _, Result};
use troupe_runtime::store::{
    GroupRead, IdleClaim, MemoryStore, PendingRange, ReadFrom, RedisOptions, RedisStore, Store,
    StoreError, StreamEntry, Trim, Write,
};
use troupe_testkit::{eventually, WAIT};

use crate::support::redis::{free_port, redis_url, unique_prefix, RedisServer};

/// Upper bound on what a case measures to be prompt (a blocked read woken by a write, a call
/// failing fast, an entry's idle time just after its delivery): well under the reads' 10 s
/// block timeouts, so a read woken by its write is told apart from one that timed out.
const PROMPT: Duration = Duration::from_secs(5);

// ---- harness -----------------------------------------------------------------------------------

async fn memory_store(_case: &str) -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn options(url: String, prefix: String) -> RedisOptions {
    RedisOptions {
        prefix,
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        reconnect_max_delay: Duration::from_millis(200),
        ..RedisOptions::new(url)
    }
}

async fn redis_store(case: &str) -> Arc<dyn Store> {
    let store = RedisStore::connect(options(redis_url(), unique_prefix(case)))
        .await
        .expect("connect to the private redis-server");
    Arc::new(store)
}

/// One `#[tokio::test]` per case for a backend.
macro_rules! conformance {
    ($backend:ident, $make:path; $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$case($make(stringify!($case)).await).await
                }
            )*
        }
    };
}

/// The cases every backend must pass.
macro_rules! all_cases {
    ($backend:ident, $make:path) => {
        conformance!($backend, $make;
            ping_and_backend,
            get_set_del_exists,
            get_many_reads_other_kinds_as_missing,
            ttl_expires_keys,
            set_nx_only_when_absent,
            compare_and_set_cases,
            leases_have_one_owner,
            lease_expiry_frees_it,
            renew_leases_renews_only_the_owners,
            persist_in_a_batch_removes_the_ttl,
            incr_by_counts_and_refuses_non_integers,
            wrong_type_is_reported,
            hashes,
            lists_follow_lrange_rules,
            sorted_sets_rank_by_score_and_trim_below,
            keys_with_prefix_lists_and_escapes,
            empty_arguments,
            xadd_ids_increase,
            xrange_bounds_and_count,
            xtrim_maxlen_and_minid,
            xread_from_ids,
            xread_blocks_until_an_xadd,
            xread_block_times_out_empty,
            xgroup_create_is_idempotent,
            xreadgroup_new_then_own_pending,
            xpending_summary_and_range,
            xack_removes_from_pending,
            xautoclaim_moves_idle_entries,
            xautoclaim_reports_trimmed,
            byte_field_names_read_back_on_every_read,
            xclaim_touch_keeps_entries_from_reclaim,
            xinfo_groups_and_consumers,
            xdelconsumer_idle_deletes_only_idle_consumers_owning_nothing,
            xdel_in_a_batch,
            missing_group_is_no_group,
            xreadgroup_blocks_until_an_entry,
            xreadgroup_block_times_out_empty,
            blocking_read_does_not_stall_other_calls,
            invalid_ids_are_refused,
            apply_writes_everything,
            apply_reports_a_failing_write_like_exec,
            apply_is_atomic_for_readers,
            rate_limit_token_bucket,
            rate_limit_fixed_window,
            rate_limit_window_rolls_over,
            rate_limit_keys_expire_when_full,
            rate_limit_refuses_other_kinds_and_bad_arguments,
        );
    };
}

all_cases!(memory, super::memory_store);
all_cases!(redis, super::redis_store);

fn keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| (*k).to_owned()).collect()
}

fn ids(entries: &[StreamEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn parse_id(id: &str) -> Result<(u64, u64)> {
    let (ms, seq) = id.split_once('-').context("id has a dash")?;
    Ok((ms.parse()?, seq.parse()?))
}

async fn add(s: &dyn Store, stream: &str, n: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..n {
        let v = i.to_string();
        out.push(s.xadd(stream, &[("n", v.as_bytes())], None).await?);
    }
    Ok(out)
}

/// Every pending entry of group `g` of `stream` (at most 10).
fn all_pending(stream: &str) -> PendingRange<'_> {
    PendingRange {
        stream,
        group: "g",
        start: "-",
        end: "+",
        count: 10,
        consumer: None,
    }
}

/// A claim for `consumer` of at most `count` entries of group `g` of `s` idle for
/// `min_idle`, scanning from `start`.
fn claim<'a>(consumer: &'a str, min_idle: Duration, start: &'a str, count: usize) -> IdleClaim<'a> {
    IdleClaim {
        stream: "s",
        group: "g",
        consumer,
        min_idle,
        start,
        count,
    }
}

fn read<'a>(stream: &'a str, consumer: &'a str, count: usize, from: ReadFrom) -> GroupRead<'a> {
    GroupRead {
        stream,
        group: "g",
        consumer,
        count,
        block: None,
        from,
    }
}

fn read_group<'a>(
    stream: &'a str,
    group: &'a str,
    consumer: &'a str,
    count: usize,
) -> GroupRead<'a> {
    GroupRead {
        group,
        ..read(stream, consumer, count, ReadFrom::New)
    }
}

fn pending(id: &str) -> ReadFrom {
    ReadFrom::Pending(id.to_owned())
}

// ---- keys and values ---------------------------------------------------------------------------

async fn ping_and_backend(s: Arc<dyn Store>) -> Result<()> {
    s.ping().await?;
    ensure!(["memory", "redis"].contains(&s.backend()));
    Ok(())
}

async fn get_set_del_exists(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.get("k").await?, None);
    ensure!(!s.exists("k").await?);
    s.set("k", b"one", None).await?;
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"one"[..]));
    s.set("k", b"\x00two\xff", None).await?;
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"\x00two\xff"[..]));
    ensure!(s.exists("k").await?);
    s.set("k2", b"", None).await?;
    assert_eq!(s.get("k2").await?, Some(Vec::new()), "empty values exist");
    assert_eq!(s.del(&keys(&["k", "k2", "missing"])).await?, 2);
    ensure!(!s.exists("k").await?);
    assert_eq!(s.del(&keys(&["k"])).await?, 0);
    Ok(())
}

async fn get_many_reads_other_kinds_as_missing(s: Arc<dyn Store>) -> Result<()> {
    s.set("a", b"1", None).await?;
    s.set("c", b"3", None).await?;
    s.hset("h", &[("f", b"v")]).await?;
    let got = s.get_many(&keys(&["a", "b", "h", "c"])).await?;
    assert_eq!(
        got,
        vec![Some(b"1".to_vec()), None, None, Some(b"3".to_vec())]
    );
    Ok(())
}

async fn ttl_expires_keys(s: Arc<dyn Store>) -> Result<()> {
    s.set("short", b"v", Some(Duration::from_millis(80)))
        .await?;
    let ttl = s.ttl("short").await?.context("a TTL is set")?;
    ensure!(
        ttl > Duration::ZERO && ttl <= Duration::from_millis(80),
        "ttl {ttl:?}"
    );
    eventually("the key to expire", WAIT, || async {
        s.get("short").await.expect("get").is_none()
    })
    .await;
    ensure!(!s.exists("short").await?);
    assert_eq!(s.ttl("short").await?, None);

    // No TTL; SET clears an existing one; EXPIRE sets one on any kind of key.
    s.set("k", b"v", Some(Duration::from_secs(60))).await?;
    s.set("k", b"v", None).await?;
    assert_eq!(s.ttl("k").await?, None);
    ensure!(!s.expire("missing", Duration::from_secs(1)).await?);
    s.push("list", &[b"x"]).await?;
    ensure!(s.expire("list", Duration::from_millis(60)).await?);
    ensure!(s.ttl("list").await?.is_some());
    eventually("the list to expire", WAIT, || async {
        s.len("list").await.expect("len") == 0
    })
    .await;
    ensure!(!s.exists("list").await?);
    Ok(())
}

async fn set_nx_only_when_absent(s: Arc<dyn Store>) -> Result<()> {
    ensure!(s.set_nx("k", b"first", None).await?);
    ensure!(!s.set_nx("k", b"second", None).await?);
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"first"[..]));
    s.hset("h", &[("f", b"v")]).await?;
    ensure!(!s.set_nx("h", b"x", None).await?, "any kind of key counts");
    ensure!(s.set_nx("t", b"v", Some(Duration::from_millis(50))).await?);
    ensure!(s.ttl("t").await?.is_some());
    eventually("set_nx to succeed after expiry", WAIT, || async {
        s.set_nx("t", b"again", None).await.expect("set_nx")
    })
    .await;
    Ok(())
}

async fn compare_and_set_cases(s: Arc<dyn Store>) -> Result<()> {
    // Absent: expected None swaps, expected Some does not.
    ensure!(!s.compare_and_set("k", Some(b"x"), Some(b"y"), None).await?);
    ensure!(s.compare_and_set("k", None, Some(b"v1"), None).await?);
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"v1"[..]));
    // Present: expected None and a mismatch refuse; a match swaps.
    ensure!(!s.compare_and_set("k", None, Some(b"v2"), None).await?);
    ensure!(
        !s.compare_and_set("k", Some(b"nope"), Some(b"v2"), None)
            .await?
    );
    let ttl = Some(Duration::from_secs(30));
    ensure!(
        s.compare_and_set("k", Some(b"v1"), Some(b"v2"), ttl)
            .await?
    );
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"v2"[..]));
    ensure!(s.ttl("k").await?.is_some());
    // Delete.
    ensure!(!s.compare_and_set("k", Some(b"v1"), None, None).await?);
    ensure!(s.compare_and_set("k", Some(b"v2"), None, None).await?);
    ensure!(!s.exists("k").await?);
    // Another kind of key.
    s.hset("h", &[("f", b"v")]).await?;
    let err = s.compare_and_set("h", None, Some(b"v"), None).await;
    ensure!(matches!(err, Err(StoreError::WrongType { .. })), "{err:?}");
    Ok(())
}

async fn leases_have_one_owner(s: Arc<dyn Store>) -> Result<()> {
    let ttl = Duration::from_secs(30);
    ensure!(s.acquire_lease("lease", "a", ttl).await?);
    ensure!(!s.acquire_lease("lease", "b", ttl).await?, "held by a");
    ensure!(
        s.acquire_lease("lease", "a", ttl).await?,
        "same owner renews"
    );
    ensure!(s.renew_lease("lease", "a", Duration::from_secs(60)).await?);
    let left = s.ttl("lease").await?.context("lease has a TTL")?;
    ensure!(
        left > Duration::from_secs(30),
        "renewed to 60 s, {left:?} left"
    );
    ensure!(!s.renew_lease("lease", "b", ttl).await?);
    ensure!(!s.release_lease("lease", "b").await?, "wrong owner");
    ensure!(s.exists("lease").await?);
    ensure!(s.release_lease("lease", "a").await?);
    ensure!(!s.release_lease("lease", "a").await?, "already released");
    ensure!(!s.renew_lease("lease", "a", ttl).await?, "nothing to renew");
    ensure!(s.acquire_lease("lease", "b", ttl).await?);
    Ok(())
}

async fn renew_leases_renews_only_the_owners(s: Arc<dyn Store>) -> Result<()> {
    let short = Duration::from_secs(5);
    ensure!(s.acquire_lease("l1", "a", short).await?);
    ensure!(s.acquire_lease("l2", "b", short).await?);
    ensure!(s.acquire_lease("l3", "a", short).await?);
    let renewed = s
        .renew_leases(
            &keys(&["l1", "l2", "l3", "l4"]),
            "a",
            Duration::from_secs(60),
        )
        .await?;
    ensure!(renewed == [true, false, true, false], "{renewed:?}");
    for (key, renewed) in [("l1", true), ("l2", false), ("l3", true)] {
        let left = s.ttl(key).await?.context("a lease has a TTL")?;
        ensure!(
            (left > Duration::from_secs(30)) == renewed,
            "{key}: {left:?} left"
        );
    }
    ensure!(!s.exists("l4").await?, "a missing lease is not created");
    ensure!(s.renew_leases(&[], "a", short).await?.is_empty());
    Ok(())
}

async fn persist_in_a_batch_removes_the_ttl(s: Arc<dyn Store>) -> Result<()> {
    let ttl = Some(Duration::from_secs(30));
    s.set("kept", b"v", ttl).await?;
    s.push("list", &[b"x"]).await?;
    s.expire("list", Duration::from_secs(30)).await?;
    s.apply(vec![
        Write::Persist { key: "kept".into() },
        Write::Persist { key: "list".into() },
        Write::Persist {
            key: "missing".into(),
        },
    ])
    .await?;
    ensure!(s.ttl("kept").await?.is_none(), "no TTL left");
    ensure!(s.ttl("list").await?.is_none(), "no TTL left");
    ensure!(s.get("kept").await?.as_deref() == Some(&b"v"[..]));
    ensure!(!s.exists("missing").await?, "persist creates nothing");
    Ok(())
}

async fn lease_expiry_frees_it(s: Arc<dyn Store>) -> Result<()> {
    ensure!(
        s.acquire_lease("lease", "a", Duration::from_millis(60))
            .await?
    );
    ensure!(
        !s.acquire_lease("lease", "b", Duration::from_secs(30))
            .await?
    );
    eventually("b to take the expired lease", WAIT, || async {
        s.acquire_lease("lease", "b", Duration::from_secs(30))
            .await
            .expect("acquire_lease")
    })
    .await;
    ensure!(!s.renew_lease("lease", "a", Duration::from_secs(1)).await?);
    Ok(())
}

async fn incr_by_counts_and_refuses_non_integers(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.incr_by("n", 5).await?, 5);
    assert_eq!(s.incr_by("n", -7).await?, -2);
    assert_eq!(s.get("n").await?.as_deref(), Some(&b"-2"[..]));
    s.expire("n", Duration::from_secs(60)).await?;
    s.incr_by("n", 1).await?;
    ensure!(s.ttl("n").await?.is_some(), "INCRBY keeps the TTL");
    s.set("text", b"abc", None).await?;
    let err = s.incr_by("text", 1).await;
    ensure!(matches!(err, Err(StoreError::NotInteger { .. })), "{err:?}");
    s.set("big", i64::MAX.to_string().as_bytes(), None).await?;
    let err = s.incr_by("big", 1).await;
    ensure!(matches!(err, Err(StoreError::NotInteger { .. })), "{err:?}");
    assert_eq!(s.get("big").await?, Some(i64::MAX.to_string().into_bytes()));
    Ok(())
}

async fn wrong_type_is_reported(s: Arc<dyn Store>) -> Result<()> {
    s.hset("h", &[("f", b"v")]).await?;
    s.set("v", b"x", None).await?;
    s.push("l", &[b"x"]).await?;
    s.xadd("s", &[("f", b"v")], None).await?;
    let results = [
        ("get hash", s.get("h").await.map(drop)),
        ("hget value", s.hget("v", "f").await.map(drop)),
        ("hset value", s.hset("v", &[("f", b"v")]).await),
        ("push hash", s.push("h", &[b"x"]).await.map(drop)),
        ("range value", s.range("v", 0, -1).await.map(drop)),
        ("len stream", s.len("s").await.map(drop)),
        (
            "xadd list",
            s.xadd("l", &[("f", b"v")], None).await.map(drop),
        ),
        ("xlen hash", s.xlen("h").await.map(drop)),
        (
            "xrange value",
            s.xrange("v", "-", "+", None).await.map(drop),
        ),
        ("incr hash", s.incr_by("h", 1).await.map(drop)),
        ("hincr list", s.hincr_by("l", "f", 1).await.map(drop)),
        (
            "xreadgroup value",
            s.xreadgroup(read("v", "c", 1, ReadFrom::New))
                .await
                .map(drop),
        ),
    ];
    for (what, result) in results {
        match result {
            Err(StoreError::WrongType { key, .. }) => {
                ensure!(
                    ["h", "v", "l", "s"].contains(&key.as_str()),
                    "{what}: key {key}"
                )
            }
            other => anyhow::bail!("{what}: expected WrongType, got {other:?}"),
        }
    }
    // SET replaces a key of any kind.
    s.set("h", b"now a value", None).await?;
    assert_eq!(s.get("h").await?.as_deref(), Some(&b"now a value"[..]));
    Ok(())
}

async fn hashes(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.hgetall("h").await?, vec![]);
    assert_eq!(s.hget("h", "f").await?, None);
    s.hset("h", &[("b", b"2"), ("a", b"1"), ("c", b"3")])
        .await?;
    s.hset("h", &[("b", b"two")]).await?;
    assert_eq!(s.hget("h", "b").await?.as_deref(), Some(&b"two"[..]));
    assert_eq!(s.hget("h", "zz").await?, None);
    let all = s.hgetall("h").await?;
    let fields: Vec<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["a", "b", "c"], "sorted by field");
    assert_eq!(s.hincr_by("h", "n", 3).await?, 3);
    assert_eq!(s.hincr_by("h", "n", -1).await?, 2);
    let err = s.hincr_by("h", "b", 1).await;
    ensure!(matches!(err, Err(StoreError::NotInteger { .. })), "{err:?}");
    assert_eq!(s.hdel("h", &["a", "missing"]).await?, 1);
    assert_eq!(s.hdel("h", &["b", "c", "n"]).await?, 3);
    ensure!(!s.exists("h").await?, "an empty hash is removed");
    assert_eq!(s.hdel("h", &["a"]).await?, 0);
    Ok(())
}

async fn lists_follow_lrange_rules(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.len("l").await?, 0);
    assert_eq!(s.range("l", 0, -1).await?, Vec::<Vec<u8>>::new());
    assert_eq!(s.push("l", &[b"0", b"1"]).await?, 2);
    assert_eq!(s.push("l", &[b"2", b"3", b"4"]).await?, 5);
    assert_eq!(s.len("l").await?, 5);
    let check = |start: i64, stop: i64, expected: &'static str| {
        let s = s.clone();
        async move {
            let got: String = s
                .range("l", start, stop)
                .await?
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            ensure!(
                got == expected,
                "LRANGE {start} {stop}: {got:?} != {expected:?}"
            );
            Ok::<_, anyhow::Error>(())
        }
    };
    check(0, -1, "01234").await?;
    check(1, 2, "12").await?;
    check(-2, -1, "34").await?;
    check(-100, 1, "01").await?;
    check(3, 100, "34").await?;
    check(5, 9, "").await?;
    check(3, 1, "").await?;
    check(0, -6, "").await?;
    check(-1, -1, "4").await?;
    Ok(())
}

async fn sorted_sets_rank_by_score_and_trim_below(s: Arc<dyn Store>) -> Result<()> {
    let z = |member: &str, score: i64| Write::ZAdd {
        key: "z".into(),
        member: member.as_bytes().to_vec(),
        score,
    };
    let text = |members: Vec<Vec<u8>>| -> Vec<String> {
        members
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect()
    };
    assert_eq!(s.zcard("z").await?, 0);
    ensure!(s.zrevrange("z", 0, 10).await?.is_empty());
    s.apply(vec![z("a", 10), z("b", 30), z("c", 20), z("d", 20)])
        .await?;
    assert_eq!(s.zcard("z").await?, 4);
    // Highest first; equal scores in reverse byte order; positions are inclusive.
    assert_eq!(text(s.zrevrange("z", 0, 100).await?), ["b", "d", "c", "a"]);
    assert_eq!(text(s.zrevrange("z", 1, 2).await?), ["d", "c"]);
    assert_eq!(text(s.zrevrange("z", 4, 9).await?), Vec::<String>::new());
    assert_eq!(text(s.zrevrange("z", 2, 1).await?), Vec::<String>::new());
    // Ranks past what Redis can read mean "to the end", on both backends.
    assert_eq!(text(s.zrevrange("z", 1, u64::MAX).await?), ["d", "c", "a"]);
    assert_eq!(
        text(s.zrevrange("z", u64::MAX, u64::MAX).await?),
        Vec::<String>::new()
    );
    // Re-adding moves a member; ZREM drops one; ZRemBelow drops scores strictly below.
    s.apply(vec![
        z("a", 40),
        Write::ZRem {
            key: "z".into(),
            member: b"b".to_vec(),
        },
    ])
    .await?;
    assert_eq!(text(s.zrevrange("z", 0, 100).await?), ["a", "d", "c"]);
    s.apply(vec![Write::ZRemBelow {
        key: "z".into(),
        below: 20,
    }])
    .await?;
    assert_eq!(s.zcard("z").await?, 3, "20 is not below 20");
    s.apply(vec![Write::ZRemBelow {
        key: "z".into(),
        below: 21,
    }])
    .await?;
    assert_eq!(text(s.zrevrange("z", 0, 100).await?), ["a"]);
    // An emptied set is gone, as in Redis; another kind of key is WRONGTYPE.
    s.apply(vec![Write::ZRemBelow {
        key: "z".into(),
        below: i64::MAX,
    }])
    .await?;
    ensure!(!s.exists("z").await?, "an empty sorted set is deleted");
    s.set("str", b"x", None).await?;
    let err = s.zcard("str").await.expect_err("WRONGTYPE");
    ensure!(matches!(err, StoreError::WrongType { .. }), "{err:?}");
    Ok(())
}

async fn keys_with_prefix_lists_and_escapes(s: Arc<dyn Store>) -> Result<()> {
    s.set("a:1", b"v", None).await?;
    s.set("a:2", b"v", None).await?;
    s.hset("a:h", &[("f", b"v")]).await?;
    s.set("b:1", b"v", None).await?;
    s.set("x*", b"v", None).await?;
    s.set("xy", b"v", None).await?;
    s.set("a:gone", b"v", Some(Duration::from_millis(1)))
        .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.keys_with_prefix("a:").await?,
        keys(&["a:1", "a:2", "a:h"])
    );
    assert_eq!(
        s.keys_with_prefix("x*").await?,
        keys(&["x*"]),
        "glob characters are literal"
    );
    assert_eq!(s.keys_with_prefix("zzz").await?, Vec::<String>::new());
    assert_eq!(s.keys_with_prefix("").await?.len(), 6);
    Ok(())
}

async fn empty_arguments(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.del(&[]).await?, 0);
    assert_eq!(s.get_many(&[]).await?, vec![]);
    s.hset("h", &[]).await?;
    ensure!(!s.exists("h").await?);
    assert_eq!(s.hdel("h", &[]).await?, 0);
    assert_eq!(s.push("l", &[]).await?, 0);
    s.push("l", &[b"x"]).await?;
    assert_eq!(s.push("l", &[]).await?, 1);
    assert_eq!(s.xack("s", "g", &[]).await?, 0);
    let err = s.xadd("s", &[], None).await;
    ensure!(
        matches!(err, Err(StoreError::InvalidArgument { .. })),
        "{err:?}"
    );
    s.xgroup_create("s", "g", "0").await?;
    let err = s.xautoclaim(claim("c", Duration::ZERO, "0", 0)).await;
    ensure!(
        matches!(err, Err(StoreError::InvalidArgument { .. })),
        "{err:?}"
    );
    s.apply(Vec::new()).await?;
    Ok(())
}

// ---- streams -----------------------------------------------------------------------------------

async fn xadd_ids_increase(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 50).await?;
    let parsed = added
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        parsed.windows(2).all(|w| w[0] < w[1]),
        "ids increase: {added:?}"
    );
    assert_eq!(s.xlen("s").await?, 50);
    // Still increasing after the stream was emptied.
    s.xtrim("s", Trim::MaxLen(0)).await?;
    assert_eq!(s.xlen("s").await?, 0);
    ensure!(s.exists("s").await?, "an empty stream still exists");
    let next = s.xadd("s", &[("n", b"x")], None).await?;
    ensure!(parse_id(&next)? > parsed[49]);
    assert_eq!(s.xlen("missing").await?, 0);
    Ok(())
}

async fn xrange_bounds_and_count(s: Arc<dyn Store>) -> Result<()> {
    let fields: [(&str, &[u8]); 3] = [("z", b"1"), ("a", b"2"), ("z", b"3")];
    let first = s.xadd("s", &fields, None).await?;
    let rest = add(&*s, "s", 4).await?;
    let all = s.xrange("s", "-", "+", None).await?;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].id, first);
    let expected: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.to_vec()))
        .collect();
    assert_eq!(all[0].fields, expected, "fields keep order and duplicates");
    assert_eq!(all[0].field("z"), Some(&b"1"[..]));
    assert_eq!(
        ids(&s.xrange("s", "-", "+", Some(2)).await?),
        vec![first.clone(), rest[0].clone()]
    );
    assert_eq!(
        ids(&s.xrange("s", &rest[1], &rest[2], None).await?),
        rest[1..=2].to_vec()
    );
    let exclusive = format!("({}", rest[1]);
    assert_eq!(
        ids(&s.xrange("s", &exclusive, "+", None).await?),
        rest[2..].to_vec()
    );
    assert_eq!(s.xrange("s", "+", "-", None).await?, vec![]);
    assert_eq!(s.xrange("missing", "-", "+", None).await?, vec![]);
    Ok(())
}

async fn xtrim_maxlen_and_minid(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 6).await?;
    assert_eq!(s.xtrim("s", Trim::MaxLen(4)).await?, 2);
    assert_eq!(
        ids(&s.xrange("s", "-", "+", None).await?),
        added[2..].to_vec()
    );
    assert_eq!(s.xtrim("s", Trim::MinId(added[4].clone())).await?, 2);
    assert_eq!(
        ids(&s.xrange("s", "-", "+", None).await?),
        added[4..].to_vec()
    );
    assert_eq!(s.xtrim("s", Trim::MaxLen(10)).await?, 0);
    let newest = s.xadd("s", &[("n", b"x")], Some(Trim::MaxLen(1))).await?;
    assert_eq!(
        ids(&s.xrange("s", "-", "+", None).await?),
        vec![newest.clone()]
    );
    let after = s
        .xadd("s", &[("n", b"y")], Some(Trim::MinId(newest)))
        .await?;
    assert_eq!(s.xlen("s").await?, 2);
    assert_eq!(s.xtrim("s", Trim::MinId(after.clone())).await?, 1);
    assert_eq!(s.xtrim("missing", Trim::MaxLen(0)).await?, 0);
    ensure!(!s.exists("missing").await?, "XTRIM does not create streams");
    Ok(())
}

async fn xread_from_ids(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.xread("s", "0", 10, None).await?, vec![]);
    let added = add(&*s, "s", 4).await?;
    assert_eq!(ids(&s.xread("s", "0", 10, None).await?), added);
    assert_eq!(ids(&s.xread("s", "0", 2, None).await?), added[..2].to_vec());
    assert_eq!(
        ids(&s.xread("s", &added[1], 10, None).await?),
        added[2..].to_vec()
    );
    assert_eq!(s.xread("s", "$", 10, None).await?, vec![]);
    assert_eq!(s.xread("s", &added[3], 10, None).await?, vec![]);
    Ok(())
}

async fn xread_blocks_until_an_xadd(s: Arc<dyn Store>) -> Result<()> {
    let last = s.xadd("s", &[("n", b"0")], None).await?;
    let started = Instant::now();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move { s.xread("s", &last, 10, Some(Duration::from_secs(10))).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let new = s.xadd("s", &[("n", b"1")], None).await?;
    let got = tokio::time::timeout(PROMPT, reader).await???;
    assert_eq!(ids(&got), vec![new]);
    ensure!(
        started.elapsed() < PROMPT,
        "woken by the xadd, not the block timeout"
    );
    Ok(())
}

async fn xread_block_times_out_empty(s: Arc<dyn Store>) -> Result<()> {
    s.xadd("s", &[("n", b"0")], None).await?;
    let started = Instant::now();
    let got = s
        .xread("s", "$", 10, Some(Duration::from_millis(100)))
        .await?;
    let waited = started.elapsed();
    assert_eq!(got, vec![]);
    ensure!(
        waited >= Duration::from_millis(90) && waited < PROMPT,
        "waited {waited:?}"
    );
    Ok(())
}

async fn xgroup_create_is_idempotent(s: Arc<dyn Store>) -> Result<()> {
    ensure!(s.xgroup_create("s", "g", "$").await?);
    ensure!(
        !s.xgroup_create("s", "g", "$").await?,
        "second create reports an existing group"
    );
    ensure!(s.exists("s").await?, "the stream is created");
    assert_eq!(s.xlen("s").await?, 0);
    ensure!(s.xgroup_create("s", "other", "0").await?);
    // "$" skips what is already there; "0" delivers it.
    add(&*s, "t", 2).await?;
    s.xgroup_create("t", "g", "$").await?;
    assert_eq!(
        s.xreadgroup(read("t", "c", 10, ReadFrom::New)).await?,
        vec![]
    );
    let mut r = read("t", "c", 10, ReadFrom::New);
    r.group = "all";
    s.xgroup_create("t", "all", "0").await?;
    assert_eq!(s.xreadgroup(r).await?.len(), 2);
    Ok(())
}

async fn xreadgroup_new_then_own_pending(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 3).await?;
    s.xgroup_create("s", "g", "0").await?;
    let first = s.xreadgroup(read("s", "c1", 2, ReadFrom::New)).await?;
    assert_eq!(ids(&first), added[..2].to_vec());
    assert_eq!(first[0].field("n"), Some(&b"0"[..]));
    let second = s.xreadgroup(read("s", "c2", 10, ReadFrom::New)).await?;
    assert_eq!(ids(&second), added[2..].to_vec());
    assert_eq!(
        s.xreadgroup(read("s", "c1", 10, ReadFrom::New)).await?,
        vec![]
    );
    // A restarted consumer reads its own pending entries first.
    let mine = s.xreadgroup(read("s", "c1", 10, pending("0"))).await?;
    assert_eq!(mine, first);
    assert_eq!(
        ids(&s
            .xreadgroup(read("s", "c1", 10, pending(&added[0])))
            .await?),
        added[1..2].to_vec()
    );
    assert_eq!(
        ids(&s.xreadgroup(read("s", "c1", 1, pending("0"))).await?),
        added[..1].to_vec()
    );
    assert_eq!(
        s.xreadgroup(read("s", "c3", 10, pending("0"))).await?,
        vec![]
    );
    Ok(())
}

async fn xpending_summary_and_range(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 4).await?;
    s.xgroup_create("s", "g", "0").await?;
    let summary = s.xpending("s", "g").await?;
    assert_eq!(summary.count, 0);
    assert_eq!((summary.lowest, summary.highest), (None, None));
    ensure!(summary.consumers.is_empty());

    s.xreadgroup(read("s", "zed", 1, ReadFrom::New)).await?;
    s.xreadgroup(read("s", "amy", 2, ReadFrom::New)).await?;
    let summary = s.xpending("s", "g").await?;
    assert_eq!(summary.count, 3);
    assert_eq!(summary.lowest.as_deref(), Some(added[0].as_str()));
    assert_eq!(summary.highest.as_deref(), Some(added[2].as_str()));
    assert_eq!(
        summary.consumers,
        vec![("amy".to_owned(), 2), ("zed".to_owned(), 1)]
    );

    // Re-reading pending entries counts as another delivery.
    s.xreadgroup(read("s", "amy", 1, pending("0"))).await?;
    let range = s.xpending_range(all_pending("s")).await?;
    let rows: Vec<(&str, &str, u64)> = range
        .iter()
        .map(|p| (p.id.as_str(), p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(
        rows,
        vec![
            (added[0].as_str(), "zed", 1),
            (added[1].as_str(), "amy", 2),
            (added[2].as_str(), "amy", 1),
        ]
    );
    ensure!(range.iter().all(|p| p.idle < PROMPT));
    let amy = s
        .xpending_range(PendingRange {
            stream: "s",
            group: "g",
            start: "-",
            end: "+",
            count: 10,
            consumer: Some("amy"),
        })
        .await?;
    assert_eq!(amy.len(), 2);
    let limited = s
        .xpending_range(PendingRange {
            stream: "s",
            group: "g",
            start: &added[1],
            end: "+",
            count: 1,
            consumer: None,
        })
        .await?;
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, added[1]);
    Ok(())
}

async fn xack_removes_from_pending(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 3).await?;
    s.xgroup_create("s", "g", "0").await?;
    s.xreadgroup(read("s", "c", 10, ReadFrom::New)).await?;
    assert_eq!(s.xack("s", "g", &added[..2]).await?, 2);
    assert_eq!(
        s.xack("s", "g", &added[..2]).await?,
        0,
        "already acknowledged"
    );
    let summary = s.xpending("s", "g").await?;
    assert_eq!(summary.count, 1);
    assert_eq!(summary.lowest.as_deref(), Some(added[2].as_str()));
    assert_eq!(
        ids(&s.xreadgroup(read("s", "c", 10, pending("0"))).await?),
        added[2..].to_vec()
    );
    assert_eq!(s.xack("s", "nogroup", &added).await?, 0);
    assert_eq!(s.xack("nostream", "g", &added).await?, 0);
    assert_eq!(s.xlen("s").await?, 3, "acknowledging does not delete");
    Ok(())
}

async fn xautoclaim_moves_idle_entries(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 3).await?;
    s.xgroup_create("s", "g", "0").await?;
    s.xreadgroup(read("s", "dead", 2, ReadFrom::New)).await?;
    let none = s
        .xautoclaim(claim("live", Duration::from_secs(60), "0", 10))
        .await?;
    ensure!(
        none.claimed.is_empty() && none.deleted.is_empty(),
        "{none:?}"
    );
    // Let the entries idle past min_idle.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let got = s
        .xautoclaim(claim("live", Duration::from_millis(50), "0", 10))
        .await?;
    assert_eq!(ids(&got.claimed), added[..2].to_vec());
    assert_eq!(got.claimed[1].field("n"), Some(&b"1"[..]));
    ensure!(got.deleted.is_empty());
    assert_eq!(got.next, "0-0", "scan complete");
    let range = s.xpending_range(all_pending("s")).await?;
    ensure!(
        range
            .iter()
            .all(|p| p.consumer == "live" && p.deliveries == 2),
        "{range:?}"
    );
    // The new owner reads them as its own pending entries.
    assert_eq!(
        ids(&s.xreadgroup(read("s", "live", 10, pending("0"))).await?),
        added[..2].to_vec()
    );
    assert_eq!(
        s.xreadgroup(read("s", "dead", 10, pending("0"))).await?,
        vec![]
    );

    // COUNT limits the claim and the cursor continues the scan.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let page = s
        .xautoclaim(claim("other", Duration::from_millis(50), "0", 1))
        .await?;
    assert_eq!(ids(&page.claimed), added[..1].to_vec());
    assert_eq!(page.next, added[1]);
    let page = s
        .xautoclaim(claim("other", Duration::from_millis(50), &page.next, 1))
        .await?;
    assert_eq!(ids(&page.claimed), added[1..2].to_vec());
    Ok(())
}

/// Redis keeps any bytes as a field name: an entry whose name is not UTF-8 (or is empty)
/// reads back as written through XRANGE, XREAD, XREADGROUP (new and own pending) and
/// XAUTOCLAIM, beside the valid entries read with it (one such entry once failed whole
/// replies, and so wedged the ingress).
async fn byte_field_names_read_back_on_every_read(s: Arc<dyn Store>) -> Result<()> {
    let before = s.xadd("s", &[("task", b"1")], None).await?;
    let odd: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"\xff\xfe\x00".to_vec(), b"\x80value".to_vec()),
        (Vec::new(), b"empty name".to_vec()),
        (b"task".to_vec(), b"2".to_vec()),
    ];
    s.apply(vec![Write::XAdd {
        stream: "s".into(),
        fields: odd.clone(),
        trim: None,
    }])
    .await?;
    let after = s.xadd("s", &[("task", b"3")], None).await?;
    let check = |entries: &[StreamEntry], what: &str| -> Result<()> {
        ensure!(entries.len() == 3, "{what}: {entries:?}");
        ensure!(entries[0].id == before && entries[2].id == after, "{what}");
        ensure!(entries[1].fields == odd, "{what}: {:?}", entries[1].fields);
        ensure!(entries[1].field("task") == Some(&b"2"[..]), "{what}");
        Ok(())
    };
    check(&s.xrange("s", "-", "+", None).await?, "xrange")?;
    check(&s.xread("s", "0", 10, None).await?, "xread")?;
    s.xgroup_create("s", "g", "0").await?;
    check(
        &s.xreadgroup(read("s", "c", 10, ReadFrom::New)).await?,
        "xreadgroup new",
    )?;
    check(
        &s.xreadgroup(read("s", "c", 10, pending("0"))).await?,
        "xreadgroup pending",
    )?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let claimed = s
        .xautoclaim(claim("d", Duration::from_millis(10), "0", 10))
        .await?;
    check(&claimed.claimed, "xautoclaim")?;
    ensure!(
        claimed.next == "0-0",
        "the claim scan completes: {claimed:?}"
    );
    Ok(())
}

async fn xclaim_touch_keeps_entries_from_reclaim(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 2).await?;
    s.xgroup_create("s", "g", "0").await?;
    s.xreadgroup(read("s", "worker", 2, ReadFrom::New)).await?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    // The worker is still on the first entry: it touches it; the second idles on.
    let touched = s
        .xclaim_touch("s", "g", "worker", &[added[0].clone(), "9-9".to_owned()])
        .await?;
    assert_eq!(
        touched,
        vec![added[0].clone()],
        "only pending ids are touched"
    );
    let got = s
        .xautoclaim(claim("other", Duration::from_millis(50), "0", 10))
        .await?;
    assert_eq!(ids(&got.claimed), added[1..].to_vec());
    let range = s.xpending_range(all_pending("s")).await?;
    assert_eq!(range[0].consumer, "worker");
    assert_eq!(range[0].deliveries, 1, "a touch is not a delivery");
    Ok(())
}

async fn xinfo_groups_and_consumers(s: Arc<dyn Store>) -> Result<()> {
    assert_eq!(s.xgroups("nothing").await?, vec![]);
    let added = add(&*s, "s", 3).await?;
    s.xgroup_create("s", "b", "0").await?;
    s.xgroup_create("s", "a", "$").await?;
    s.xreadgroup(read_group("s", "b", "c1", 2)).await?;
    s.xreadgroup(read_group("s", "b", "c2", 1)).await?;
    s.xack("s", "b", &added[2..]).await?;
    let groups = s.xgroups("s").await?;
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let b = &groups[1];
    assert_eq!((b.consumers, b.pending), (2, 2));
    assert_eq!(b.last_delivered, added[2]);
    assert_eq!(b.lag, Some(0));
    assert_eq!(groups[0].pending, 0);
    let consumers = s.xconsumers("s", "b").await?;
    let summary: Vec<(&str, u64)> = consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(summary, [("c1", 2), ("c2", 0)]);
    ensure!(consumers.iter().all(|c| c.idle < Duration::from_secs(10)));
    Ok(())
}

async fn xdelconsumer_idle_deletes_only_idle_consumers_owning_nothing(
    s: Arc<dyn Store>,
) -> Result<()> {
    let names = |consumers: Vec<troupe_runtime::store::ConsumerInfo>| -> Vec<String> {
        consumers.into_iter().map(|c| c.name).collect()
    };
    let added = add(&*s, "s", 3).await?;
    s.xgroup_create("s", "g", "0").await?;
    for consumer in ["holder", "done", "quiet"] {
        s.xreadgroup(read("s", consumer, 1, ReadFrom::New)).await?;
    }
    s.xack("s", "g", &added[1..]).await?;

    // Holding a pending entry: never deleted, however idle it may be.
    ensure!(
        !s.xdelconsumer_idle("s", "g", "holder", Duration::ZERO)
            .await?
    );
    // Owning nothing but not idle long enough.
    let minute = Duration::from_secs(60);
    ensure!(!s.xdelconsumer_idle("s", "g", "done", minute).await?);
    ensure!(
        s.xdelconsumer_idle("s", "g", "done", Duration::ZERO)
            .await?
    );
    // Gone: deleting again says so.
    ensure!(
        !s.xdelconsumer_idle("s", "g", "done", Duration::ZERO)
            .await?
    );
    ensure!(
        !s.xdelconsumer_idle("s", "g", "nobody", Duration::ZERO)
            .await?
    );
    assert_eq!(names(s.xconsumers("s", "g").await?), ["holder", "quiet"]);

    // Idle past the threshold: deleted.
    tokio::time::sleep(Duration::from_millis(150)).await;
    ensure!(
        s.xdelconsumer_idle("s", "g", "quiet", Duration::from_millis(100))
            .await?
    );
    // The holder keeps its entry; once acked, it owns nothing and goes.
    assert_eq!(s.xpending("s", "g").await?.count, 1);
    s.xack("s", "g", &added[..1]).await?;
    ensure!(
        s.xdelconsumer_idle("s", "g", "holder", Duration::ZERO)
            .await?
    );
    assert_eq!(names(s.xconsumers("s", "g").await?), Vec::<String>::new());

    for (stream, group) in [("nostream", "g"), ("s", "nogroup")] {
        match s
            .xdelconsumer_idle(stream, group, "c", Duration::ZERO)
            .await
        {
            Err(StoreError::NoGroup {
                stream: st,
                group: g,
            }) if st == stream && g == group => {}
            other => anyhow::bail!("{stream}/{group}: expected NoGroup, got {other:?}"),
        }
    }
    Ok(())
}

async fn xdel_in_a_batch(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 3).await?;
    s.apply(vec![
        Write::XDel {
            stream: "s".into(),
            ids: vec![added[1].clone()],
        },
        Write::XAdd {
            stream: "t".into(),
            fields: vec![("n".into(), b"1".to_vec())],
            trim: None,
        },
    ])
    .await?;
    assert_eq!(
        ids(&s.xrange("s", "-", "+", None).await?),
        vec![added[0].clone(), added[2].clone()]
    );
    assert_eq!(s.xlen("t").await?, 1);
    Ok(())
}

async fn xautoclaim_reports_trimmed(s: Arc<dyn Store>) -> Result<()> {
    let added = add(&*s, "s", 4).await?;
    s.xgroup_create("s", "g", "0").await?;
    s.xreadgroup(read("s", "dead", 3, ReadFrom::New)).await?;
    assert_eq!(s.xtrim("s", Trim::MaxLen(2)).await?, 2);
    // The pending list still holds the trimmed ids; the owner's re-read skips them.
    assert_eq!(s.xpending("s", "g").await?.count, 3);
    assert_eq!(
        ids(&s.xreadgroup(read("s", "dead", 10, pending("0"))).await?),
        added[2..3].to_vec()
    );
    let got = s.xautoclaim(claim("live", Duration::ZERO, "0", 10)).await?;
    assert_eq!(got.deleted, added[..2].to_vec());
    assert_eq!(ids(&got.claimed), added[2..3].to_vec());
    let summary = s.xpending("s", "g").await?;
    assert_eq!(summary.count, 1, "deleted ids leave the pending list");
    assert_eq!(summary.consumers, vec![("live".to_owned(), 1)]);
    Ok(())
}

async fn missing_group_is_no_group(s: Arc<dyn Store>) -> Result<()> {
    let check = |what: &str, result: Result<(), StoreError>, stream: &str| match result {
        Err(StoreError::NoGroup { stream: st, group }) if st == stream && group == "g" => Ok(()),
        other => Err(anyhow::anyhow!("{what}: expected NoGroup, got {other:?}")),
    };
    for stream in ["nostream", "s"] {
        if stream == "s" {
            s.xadd("s", &[("n", b"0")], None).await?;
        }
        let r = s.xreadgroup(read(stream, "c", 1, ReadFrom::New)).await;
        check("xreadgroup >", r.map(drop), stream)?;
        let r = s.xreadgroup(read(stream, "c", 1, pending("0"))).await;
        check("xreadgroup 0", r.map(drop), stream)?;
        let mut blocking = read(stream, "c", 1, ReadFrom::New);
        blocking.block = Some(Duration::from_millis(50));
        check(
            "blocking xreadgroup",
            s.xreadgroup(blocking).await.map(drop),
            stream,
        )?;
        check("xpending", s.xpending(stream, "g").await.map(drop), stream)?;
        let r = s.xpending_range(all_pending(stream)).await;
        check("xpending_range", r.map(drop), stream)?;
        let r = s
            .xautoclaim(IdleClaim {
                stream,
                group: "g",
                consumer: "c",
                min_idle: Duration::ZERO,
                start: "0",
                count: 10,
            })
            .await;
        check("xautoclaim", r.map(drop), stream)?;
    }
    Ok(())
}

async fn xreadgroup_blocks_until_an_entry(s: Arc<dyn Store>) -> Result<()> {
    s.xgroup_create("s", "g", "$").await?;
    let started = Instant::now();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut r = read("s", "c", 10, ReadFrom::New);
            r.block = Some(Duration::from_secs(10));
            s.xreadgroup(r).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = s.xadd("s", &[("n", b"1")], None).await?;
    let got = tokio::time::timeout(PROMPT, reader).await???;
    assert_eq!(ids(&got), vec![id]);
    ensure!(started.elapsed() < PROMPT);
    assert_eq!(s.xpending("s", "g").await?.count, 1);
    Ok(())
}

async fn xreadgroup_block_times_out_empty(s: Arc<dyn Store>) -> Result<()> {
    s.xgroup_create("s", "g", "$").await?;
    let mut r = read("s", "c", 10, ReadFrom::New);
    r.block = Some(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(s.xreadgroup(r).await?, vec![]);
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_millis(90) && waited < PROMPT,
        "waited {waited:?}"
    );
    Ok(())
}

async fn blocking_read_does_not_stall_other_calls(s: Arc<dyn Store>) -> Result<()> {
    s.xgroup_create("s", "g", "$").await?;
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let consumer = format!("c{i}");
                let mut r = read("s", &consumer, 1, ReadFrom::New);
                r.block = Some(Duration::from_millis(1500));
                s.xreadgroup(r).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    for _ in 0..10 {
        s.set("k", b"v", None).await?;
        s.get("k").await?;
    }
    let took = started.elapsed();
    ensure!(
        took < Duration::from_millis(1000),
        "other calls took {took:?} behind blocked reads"
    );
    for r in readers {
        tokio::time::timeout(PROMPT, r).await???;
    }
    Ok(())
}

async fn invalid_ids_are_refused(s: Arc<dyn Store>) -> Result<()> {
    add(&*s, "s", 1).await?;
    s.xgroup_create("s", "g", "0").await?;
    let results = [
        ("xrange", s.xrange("s", "bogus", "+", None).await.map(drop)),
        ("xread", s.xread("s", "1-x", 1, None).await.map(drop)),
        (
            "xack",
            s.xack("s", "g", &["nope".to_owned()]).await.map(drop),
        ),
        (
            "xgroup_create",
            s.xgroup_create("s", "g2", "x-1").await.map(drop),
        ),
        (
            "xtrim",
            s.xtrim("s", Trim::MinId("bad".into())).await.map(drop),
        ),
        (
            "xreadgroup",
            s.xreadgroup(read("s", "c", 1, pending("zz")))
                .await
                .map(drop),
        ),
    ];
    for (what, result) in results {
        ensure!(
            matches!(result, Err(StoreError::InvalidId { .. })),
            "{what}: {result:?}"
        );
    }
    assert_eq!(s.xpending("s", "g").await?.count, 0);
    Ok(())
}

async fn apply_writes_everything(s: Arc<dyn Store>) -> Result<()> {
    s.xgroup_create("q", "g", "0").await?;
    let queued = s.xadd("q", &[("task", b"1")], None).await?;
    s.xreadgroup(read("q", "c", 10, ReadFrom::New)).await?;
    s.set("old", b"x", None).await?;
    s.set("ttl", b"x", None).await?;
    s.apply(vec![
        Write::Set {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl: Some(Duration::from_secs(60)),
        },
        Write::HSet {
            key: "h".into(),
            fields: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        },
        Write::Push {
            key: "l".into(),
            values: vec![b"x".to_vec(), b"y".to_vec()],
        },
        Write::XAdd {
            stream: "events".into(),
            fields: vec![("e".into(), b"done".to_vec())],
            trim: Some(Trim::MaxLen(10)),
        },
        Write::XAck {
            stream: "q".into(),
            group: "g".into(),
            ids: vec![queued],
        },
        Write::Del { key: "old".into() },
        Write::Expire {
            key: "ttl".into(),
            ttl: Duration::from_secs(60),
        },
        Write::HSet {
            key: "empty".into(),
            fields: vec![],
        },
        Write::HIncrBy {
            key: "h".into(),
            field: "a".into(),
            delta: 41,
        },
        Write::HIncrBy {
            key: "counters".into(),
            field: "n".into(),
            delta: -3,
        },
        Write::HSet {
            key: "gone".into(),
            fields: vec![("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())],
        },
        Write::HDel {
            key: "gone".into(),
            fields: vec!["x".into(), "missing".into()],
        },
        Write::HDel {
            key: "h".into(),
            fields: vec![],
        },
    ])
    .await?;
    assert_eq!(
        s.hgetall("gone").await?,
        vec![("y".to_owned(), b"2".to_vec())]
    );
    assert_eq!(s.hget("h", "a").await?.as_deref(), Some(&b"42"[..]));
    assert_eq!(s.hget("counters", "n").await?.as_deref(), Some(&b"-3"[..]));
    assert_eq!(s.get("k").await?.as_deref(), Some(&b"v"[..]));
    ensure!(s.ttl("k").await?.is_some());
    assert_eq!(s.hgetall("h").await?.len(), 2);
    assert_eq!(
        s.range("l", 0, -1).await?,
        vec![b"x".to_vec(), b"y".to_vec()]
    );
    assert_eq!(s.xlen("events").await?, 1);
    assert_eq!(s.xpending("q", "g").await?.count, 0);
    ensure!(!s.exists("old").await?);
    ensure!(s.ttl("ttl").await?.is_some());
    ensure!(!s.exists("empty").await?);
    Ok(())
}

async fn apply_reports_a_failing_write_like_exec(s: Arc<dyn Store>) -> Result<()> {
    s.set("text", b"v", None).await?;
    let result = s
        .apply(vec![
            Write::Set {
                key: "before".into(),
                value: b"1".to_vec(),
                ttl: None,
            },
            Write::Push {
                key: "text".into(),
                values: vec![b"x".to_vec()],
            },
            Write::Set {
                key: "after".into(),
                value: b"2".to_vec(),
                ttl: None,
            },
        ])
        .await;
    ensure!(
        matches!(&result, Err(StoreError::WrongType { key, .. }) if key == "text"),
        "{result:?}"
    );
    // As with MULTI/EXEC, a runtime error does not roll back the other writes.
    ensure!(s.exists("before").await? && s.exists("after").await?);
    // A batch no backend could apply is refused before anything is written.
    let result = s
        .apply(vec![
            Write::Set {
                key: "never".into(),
                value: b"1".to_vec(),
                ttl: None,
            },
            Write::XAdd {
                stream: "s".into(),
                fields: vec![],
                trim: None,
            },
        ])
        .await;
    ensure!(
        matches!(result, Err(StoreError::InvalidArgument { .. })),
        "{result:?}"
    );
    ensure!(!s.exists("never").await?);
    Ok(())
}

async fn apply_is_atomic_for_readers(s: Arc<dyn Store>) -> Result<()> {
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200u32 {
                let v = i.to_string().into_bytes();
                s.apply(vec![
                    Write::Set {
                        key: "a".into(),
                        value: v.clone(),
                        ttl: None,
                    },
                    Write::Set {
                        key: "b".into(),
                        value: v,
                        ttl: None,
                    },
                ])
                .await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, StoreError>(())
        })
    };
    let pair = keys(&["a", "b"]);
    while !writer.is_finished() {
        let got = s.get_many(&pair).await?;
        ensure!(got[0] == got[1], "saw half a batch: {got:?}");
        tokio::task::yield_now().await;
    }
    writer.await??;
    assert_eq!(s.get("a").await?.as_deref(), Some(&b"199"[..]));
    Ok(())
}

// ---- rate limits ---------------------------------------------------------------------------------

use troupe_runtime::store::{RateAlgorithm, RateLimit, RateOp, RateOutcome};

/// `d` is at most `expected` and less than a second below it (the calls take some time).
fn about(d: Duration, expected: Duration) -> bool {
    d <= expected && d + Duration::from_secs(1) > expected
}

fn take(count: u64) -> RateOp {
    RateOp::Take {
        count,
        max_ahead: 0,
    }
}

async fn rate_limit_token_bucket(s: Arc<dyn Store>) -> Result<()> {
    let secs = Duration::from_secs;
    let bucket = |op| RateLimit {
        algorithm: RateAlgorithm::Gcra {
            interval: secs(10),
            capacity: 3,
        },
        op,
    };
    let run = |key: &'static str, op| {
        let s = s.clone();
        async move { s.rate_limit(key, bucket(op)).await }
    };
    // A burst of the capacity, then nothing until an interval has passed.
    for left in [2, 1, 0] {
        let o = run("b", take(1)).await?;
        ensure!(
            o.allowed && o.wait.is_zero() && o.remaining == left,
            "{o:?}"
        );
    }
    let o = run("b", take(1)).await?;
    ensure!(
        !o.allowed && about(o.wait, secs(10)) && o.remaining == 0,
        "{o:?}"
    );
    ensure!(about(o.reset_after, secs(30)), "{o:?}");
    let ttl = s.ttl("b").await?.context("the bucket's key expires")?;
    ensure!(about(ttl, secs(30)), "ttl {ttl:?}");
    let peek = run("b", RateOp::Peek { count: 1 }).await?;
    ensure!(!peek.allowed && about(peek.wait, secs(10)), "{peek:?}");
    // Refunds come back, never beyond the capacity; a full bucket leaves no key.
    let o = run("b", RateOp::Refund { count: 2 }).await?;
    ensure!(o.allowed && o.remaining == 2, "{o:?}");
    let o = run("b", take(2)).await?;
    ensure!(o.allowed && o.remaining == 0, "{o:?}");
    let o = run("b", RateOp::Refund { count: 10 }).await?;
    ensure!(o.remaining == 3 && o.reset_after.is_zero(), "{o:?}");
    ensure!(!s.exists("b").await?, "a full bucket is not stored");
    // Reservations: at most max_ahead units promised beyond the bucket, served in order.
    run("b", take(3)).await?;
    let reserve = |count| RateOp::Take {
        count,
        max_ahead: 2,
    };
    let first = run("b", reserve(1)).await?;
    let second = run("b", reserve(1)).await?;
    let refused = run("b", reserve(1)).await?;
    ensure!(first.allowed && about(first.wait, secs(10)), "{first:?}");
    ensure!(second.allowed && about(second.wait, secs(20)), "{second:?}");
    ensure!(
        !refused.allowed && about(refused.wait, secs(30)),
        "{refused:?}"
    );
    // A penalty holds a fresh key: nothing before it ends.
    let o = run("p", RateOp::Penalize { delay: secs(60) }).await?;
    ensure!(o.allowed && o.remaining == 0, "{o:?}");
    let o = run("p", take(1)).await?;
    ensure!(!o.allowed && about(o.wait, secs(60)), "{o:?}");
    let o = run(
        "q",
        RateOp::Penalize {
            delay: Duration::ZERO,
        },
    )
    .await?;
    ensure!(
        o.remaining == 3 && !s.exists("q").await?,
        "zero does nothing: {o:?}"
    );
    Ok(())
}

async fn rate_limit_fixed_window(s: Arc<dyn Store>) -> Result<()> {
    let secs = Duration::from_secs;
    // Windows of 10 s, one starting now (Redis reads the same clock as this process).
    let origin = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let window = |op| RateLimit {
        algorithm: RateAlgorithm::FixedWindow {
            period: secs(10),
            origin,
            limit: 3,
        },
        op,
    };
    let run = |op| {
        let s = s.clone();
        async move { s.rate_limit("w", window(op)).await }
    };
    let o = run(take(2)).await?;
    ensure!(
        o.allowed && o.remaining == 1 && about(o.reset_after, secs(10)),
        "{o:?}"
    );
    let o = run(take(2)).await?;
    ensure!(
        !o.allowed && about(o.wait, secs(10)) && o.remaining == 1,
        "{o:?}"
    );
    let o = run(take(1)).await?;
    ensure!(o.allowed && o.remaining == 0, "{o:?}");
    let ttl = s.ttl("w").await?.context("the window's key expires")?;
    ensure!(about(ttl, secs(10)), "ttl {ttl:?}");
    // Reservations go to the next windows, each within one window.
    let reserve = |count| RateOp::Take {
        count,
        max_ahead: 4,
    };
    let next = run(reserve(3)).await?;
    ensure!(next.allowed && about(next.wait, secs(10)), "{next:?}");
    let after = run(reserve(1)).await?;
    ensure!(after.allowed && about(after.wait, secs(20)), "{after:?}");
    // Three more would not fit beside the one in the window after next: they would run in
    // the window after that, beyond max_ahead.
    let refused = run(reserve(3)).await?;
    ensure!(
        !refused.allowed && about(refused.wait, secs(30)),
        "{refused:?}"
    );
    ensure!(about(after.reset_after, secs(30)), "{after:?}");
    // The next free unit is beside that one, in the window after next.
    let peek = run(RateOp::Peek { count: 1 }).await?;
    ensure!(!peek.allowed && about(peek.wait, secs(20)), "{peek:?}");
    // A refund credits the current window; nothing left to remember drops the key.
    let o = run(RateOp::Refund { count: 100 }).await?;
    ensure!(o.remaining == 3 && o.reset_after.is_zero(), "{o:?}");
    ensure!(!s.exists("w").await?);
    // A penalty holds everything until it ends, across windows.
    run(RateOp::Penalize { delay: secs(25) }).await?;
    let o = run(take(1)).await?;
    ensure!(
        !o.allowed && about(o.wait, secs(25)) && o.remaining == 0,
        "{o:?}"
    );
    Ok(())
}

async fn rate_limit_window_rolls_over(s: Arc<dyn Store>) -> Result<()> {
    let window = RateAlgorithm::FixedWindow {
        period: Duration::from_millis(200),
        origin: Duration::ZERO,
        limit: 2,
    };
    let run = |op| {
        let s = s.clone();
        async move {
            s.rate_limit(
                "w",
                RateLimit {
                    algorithm: window,
                    op,
                },
            )
            .await
        }
    };
    let mut refused = None;
    for _ in 0..10 {
        let o = run(take(1)).await?;
        if !o.allowed {
            refused = Some(o);
            break;
        }
    }
    let o: RateOutcome = refused.context("a window of 2 refuses within 10 calls")?;
    ensure!(
        o.wait <= Duration::from_millis(200) && o.remaining == 0,
        "{o:?}"
    );
    eventually("the next window", WAIT, || async {
        run(take(1)).await.expect("rate_limit").allowed
    })
    .await;
    Ok(())
}

async fn rate_limit_keys_expire_when_full(s: Arc<dyn Store>) -> Result<()> {
    let bucket = RateLimit {
        algorithm: RateAlgorithm::Gcra {
            interval: Duration::from_millis(50),
            capacity: 2,
        },
        op: take(2),
    };
    ensure!(s.rate_limit("b", bucket).await?.allowed);
    ensure!(s.exists("b").await?);
    eventually("the refilled bucket's key to expire", WAIT, || async {
        !s.exists("b").await.expect("exists")
    })
    .await;
    let o = s.rate_limit("b", bucket).await?;
    ensure!(o.allowed && o.remaining == 0, "full again: {o:?}");
    Ok(())
}

async fn rate_limit_refuses_other_kinds_and_bad_arguments(s: Arc<dyn Store>) -> Result<()> {
    let bucket = |capacity| RateLimit {
        algorithm: RateAlgorithm::Gcra {
            interval: Duration::from_secs(1),
            capacity,
        },
        op: take(1),
    };
    let window = RateLimit {
        algorithm: RateAlgorithm::FixedWindow {
            period: Duration::from_secs(1),
            origin: Duration::ZERO,
            limit: 1,
        },
        op: take(1),
    };
    s.hset("h", &[("f", b"v")]).await?;
    s.set("text", b"abc", None).await?;
    s.hset("odd", &[("w", b"x")]).await?;
    let r = s.rate_limit("h", bucket(1)).await;
    ensure!(matches!(r, Err(StoreError::WrongType { .. })), "{r:?}");
    let r = s.rate_limit("text", bucket(1)).await;
    ensure!(matches!(r, Err(StoreError::NotInteger { .. })), "{r:?}");
    let r = s.rate_limit("text", window).await;
    ensure!(matches!(r, Err(StoreError::WrongType { .. })), "{r:?}");
    let r = s.rate_limit("odd", window).await;
    ensure!(matches!(r, Err(StoreError::NotInteger { .. })), "{r:?}");
    let r = s.rate_limit("new", bucket(0)).await;
    ensure!(
        matches!(r, Err(StoreError::InvalidArgument { .. })),
        "{r:?}"
    );
    ensure!(!s.exists("new").await?);
    assert_eq!(s.get("text").await?.as_deref(), Some(&b"abc"[..]));
    Ok(())
}

// ---- memory only ---------------------------------------------------------------------------------

mod memory_only {
    use super::*;

    /// A long-running embedded daemon frees the keys that expired even if nothing reads them
    /// again: every operation first frees some of the keys whose time has passed (Redis's
    /// active expiry), and only those.
    #[tokio::test]
    async fn expired_keys_are_freed_without_being_read_again() -> Result<()> {
        let (short, long) = (Duration::from_millis(50), Duration::from_secs(2));
        let s = MemoryStore::new();
        for i in 0..1000 {
            s.set(&format!("short:{i}"), b"v", Some(short)).await?;
        }
        // Given a short TTL, then a longer one or none: stale queue entries must not free them.
        s.set("extended", b"v", Some(short)).await?;
        ensure!(s.expire("extended", long).await?);
        s.set("persisted", b"v", Some(short)).await?;
        s.set("persisted", b"v", None).await?;
        ensure!(s.acquire_lease("lease", "me", long).await?);
        s.hset("hash", &[("f", b"v")]).await?;
        assert_eq!(s.held_keys(), 1004);

        tokio::time::sleep(short * 3).await;
        assert_eq!(
            s.held_keys(),
            1004,
            "nothing has run since: nothing freed yet"
        );
        // Unrelated work, none of it touching the expired keys.
        for _ in 0..100 {
            s.incr_by("counter", 1).await?;
        }
        assert_eq!(s.held_keys(), 5, "the 1,000 expired keys are freed");
        for key in ["extended", "persisted", "lease", "hash", "counter"] {
            ensure!(s.exists(key).await?, "{key} is live");
        }
        ensure!(s.ttl("persisted").await?.is_none());

        tokio::time::sleep(long).await;
        s.incr_by("counter", 1).await?;
        assert_eq!(
            s.held_keys(),
            3,
            "the lease and the extended key expire in their turn"
        );
        Ok(())
    }
}

// ---- Redis only ----------------------------------------------------------------------------------

mod redis_only {
    use super::*;

    /// Options with short timeouts for fault tests.
    fn fast(url: String) -> RedisOptions {
        RedisOptions {
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_millis(200),
            ..options(url, unique_prefix("fault"))
        }
    }

    fn retryable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) -> Result<()> {
        match r {
            Err(e) if e.is_retryable() => Ok(()),
            other => Err(anyhow::anyhow!(
                "{what}: expected a retryable error, got {other:?}"
            )),
        }
    }

    async fn ready(store: &RedisStore) {
        eventually("the store to reconnect", WAIT, || async {
            store.ping().await.is_ok()
        })
        .await;
    }

    #[tokio::test]
    async fn key_prefixes_isolate_stores() -> Result<()> {
        let one = RedisStore::connect(options(redis_url(), unique_prefix("one"))).await?;
        let two = RedisStore::connect(options(redis_url(), unique_prefix("two"))).await?;
        one.set("k", b"1", None).await?;
        two.set("k", b"2", None).await?;
        one.xadd("s", &[("n", b"1")], None).await?;
        assert_eq!(one.get("k").await?.as_deref(), Some(&b"1"[..]));
        assert_eq!(two.get("k").await?.as_deref(), Some(&b"2"[..]));
        assert_eq!(one.keys_with_prefix("").await?, keys(&["k", "s"]));
        assert_eq!(two.keys_with_prefix("").await?, keys(&["k"]));
        assert_eq!(two.xlen("s").await?, 0);
        // The prefix really is on the server's keys.
        let raw = RedisStore::connect(options(redis_url(), String::new())).await?;
        let full = format!("{}k", one.prefix());
        assert_eq!(raw.get(&full).await?.as_deref(), Some(&b"1"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn no_server_fails_fast_with_retryable_errors() -> Result<()> {
        let url = format!("redis://127.0.0.1:{}/", free_port());
        let started = Instant::now();
        let store = RedisStore::connect(fast(url)).await?;
        ensure!(
            started.elapsed() < PROMPT,
            "connect took {:?}",
            started.elapsed()
        );
        ensure!(!store.is_connected());
        for _ in 0..3 {
            let started = Instant::now();
            retryable("get", store.get("k").await)?;
            retryable("set", store.set("k", b"v", None).await)?;
            retryable("ping", store.ping().await)?;
            let mut r = read("s", "c", 1, ReadFrom::New);
            r.block = Some(Duration::from_secs(2));
            retryable("blocking xreadgroup", store.xreadgroup(r).await)?;
            ensure!(
                started.elapsed() < PROMPT,
                "calls took {:?}",
                started.elapsed()
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn server_started_later_is_used_without_a_new_store() -> Result<()> {
        let port = free_port();
        let store = RedisStore::connect(fast(format!("redis://127.0.0.1:{port}/"))).await?;
        retryable("ping before the server", store.ping().await)?;
        let _server = RedisServer::start_on(port);
        ready(&store).await;
        store.set("k", b"v", None).await?;
        assert_eq!(store.get("k").await?.as_deref(), Some(&b"v"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn server_killed_and_restarted_recovers() -> Result<()> {
        let mut server = RedisServer::start();
        let store = RedisStore::connect(fast(server.url())).await?;
        store.set("k", b"v", None).await?;
        store.xgroup_create("s", "g", "$").await?;

        server.stop();
        for _ in 0..3 {
            let started = Instant::now();
            retryable("get while down", store.get("k").await)?;
            retryable(
                "xadd while down",
                store.xadd("s", &[("n", b"1")], None).await,
            )?;
            ensure!(
                started.elapsed() < PROMPT,
                "calls took {:?}",
                started.elapsed()
            );
        }

        server.restart();
        ready(&store).await;
        // No persistence: the data and the group are gone, and the consumer is told so.
        assert_eq!(store.get("k").await?, None);
        let r = store.xreadgroup(read("s", "c", 1, ReadFrom::New)).await;
        ensure!(matches!(r, Err(StoreError::NoGroup { .. })), "{r:?}");
        ensure!(store.xgroup_create("s", "g", "$").await?);
        store.xadd("s", &[("n", b"1")], None).await?;
        assert_eq!(
            store
                .xreadgroup(read("s", "c", 1, ReadFrom::New))
                .await?
                .len(),
            1
        );
        Ok(())
    }

    #[tokio::test]
    async fn idempotent_read_survives_a_dropped_connection() -> Result<()> {
        let mut server = RedisServer::start();
        let store = RedisStore::connect(fast(server.url())).await?;
        store.ping().await?;
        // A restart between two calls: the read finds the dead connection, reconnects and
        // is sent again; the caller sees no error.
        server.restart();
        assert_eq!(store.get("k").await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn paused_server_times_out_then_recovers() -> Result<()> {
        let server = RedisServer::start();
        let store = RedisStore::connect(fast(server.url())).await?;
        store.set("k", b"v", None).await?;
        server.pause(true);
        let started = Instant::now();
        let r = store.get("k").await;
        let took = started.elapsed();
        server.pause(false);
        ensure!(matches!(r, Err(StoreError::Timeout { .. })), "{r:?}");
        ensure!(
            took < Duration::from_secs(2),
            "bounded by the response timeout: {took:?}"
        );
        ready(&store).await;
        assert_eq!(store.get("k").await?.as_deref(), Some(&b"v"[..]));
        Ok(())
    }
}
