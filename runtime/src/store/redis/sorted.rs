//! Sorted sets on Redis: `ZREVRANGE`, `ZCARD` (writes go through batches, `batch.rs`).

use super::link::Ctx;
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::{StoreError, StoreResult};

pub(super) async fn zrevrange(
    store: &RedisStore,
    key: &str,
    start: u64,
    stop: u64,
) -> StoreResult<Vec<Vec<u8>>> {
    // Redis reads ranks as signed 64-bit integers; past the end is the end.
    let rank = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
    let c = cmd("ZREVRANGE")
        .arg(store.k(key))
        .arg(rank(start))
        .arg(rank(stop))
        .clone();
    let r = Reply { op: "zrevrange" };
    r.array(store.read(Ctx::new(r.op, key), &c).await?)?
        .into_iter()
        .map(|v| {
            r.bytes_opt(v)?.ok_or_else(|| StoreError::Protocol {
                op: r.op,
                message: "nil sorted set member".into(),
            })
        })
        .collect()
}

pub(super) async fn zcard(store: &RedisStore, key: &str) -> StoreResult<u64> {
    let v = store
        .read(Ctx::new("zcard", key), cmd("ZCARD").arg(store.k(key)))
        .await?;
    Reply { op: "zcard" }.count(v)
}
