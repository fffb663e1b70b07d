//! Hashes on Redis: `HSET`, `HGET`, `HGETALL` (sorted by field), `HDEL`, `HINCRBY`.

use super::link::Ctx;
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::StoreResult;

pub(super) async fn hset(
    store: &RedisStore,
    key: &str,
    fields: &[(&str, &[u8])],
) -> StoreResult<()> {
    if fields.is_empty() {
        return Ok(());
    }
    let mut c = cmd("HSET");
    c.arg(store.k(key));
    for (f, v) in fields {
        c.arg(*f).arg(*v);
    }
    store.write(Ctx::new("hset", key), &c).await.map(drop)
}

pub(super) async fn hget(
    store: &RedisStore,
    key: &str,
    field: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let c = cmd("HGET").arg(store.k(key)).arg(field).clone();
    let v = store.read(Ctx::new("hget", key), &c).await?;
    Reply { op: "hget" }.bytes_opt(v)
}

pub(super) async fn hgetall(store: &RedisStore, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
    let v = store
        .read(Ctx::new("hgetall", key), cmd("HGETALL").arg(store.k(key)))
        .await?;
    let mut pairs = Reply { op: "hgetall" }.pairs(v)?;
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs)
}

pub(super) async fn hdel(store: &RedisStore, key: &str, fields: &[&str]) -> StoreResult<u64> {
    if fields.is_empty() {
        return Ok(0);
    }
    let c = cmd("HDEL").arg(store.k(key)).arg(fields).clone();
    let v = store.write(Ctx::new("hdel", key), &c).await?;
    Reply { op: "hdel" }.count(v)
}

pub(super) async fn hincr_by(
    store: &RedisStore,
    key: &str,
    field: &str,
    delta: i64,
) -> StoreResult<i64> {
    let c = cmd("HINCRBY")
        .arg(store.k(key))
        .arg(field)
        .arg(delta)
        .clone();
    let v = store.write(Ctx::new("hincr_by", key), &c).await?;
    Reply { op: "hincr_by" }.int(v)
}
