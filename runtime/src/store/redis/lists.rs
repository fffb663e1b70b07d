//! Append-only lists on Redis: `RPUSH`, `LRANGE`, `LLEN`.

use super::link::Ctx;
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::{Store, StoreError, StoreResult};

pub(super) async fn push(store: &RedisStore, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
    if values.is_empty() {
        return store.len(key).await;
    }
    let mut c = cmd("RPUSH");
    c.arg(store.k(key));
    for v in values {
        c.arg(*v);
    }
    let v = store.write(Ctx::new("push", key), &c).await?;
    Reply { op: "push" }.count(v)
}

pub(super) async fn range(
    store: &RedisStore,
    key: &str,
    start: i64,
    stop: i64,
) -> StoreResult<Vec<Vec<u8>>> {
    let c = cmd("LRANGE").arg(store.k(key)).arg(start).arg(stop).clone();
    let r = Reply { op: "range" };
    r.array(store.read(Ctx::new(r.op, key), &c).await?)?
        .into_iter()
        .map(|v| {
            r.bytes_opt(v)?.ok_or_else(|| StoreError::Protocol {
                op: r.op,
                message: "nil list element".into(),
            })
        })
        .collect()
}

pub(super) async fn len(store: &RedisStore, key: &str) -> StoreResult<u64> {
    let v = store
        .read(Ctx::new("len", key), cmd("LLEN").arg(store.k(key)))
        .await?;
    Reply { op: "len" }.count(v)
}
