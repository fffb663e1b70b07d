//! String values on Redis: `GET`, `MGET`, `SET` (with `NX`, `PX`), `INCRBY`, compare-and-set,
//! and the leases built on them (scripts in `scripts.rs`).

use std::time::Duration;

use redis::Value;

use super::link::{Ctx, Request, Retry};
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::args::ttl_millis;
use crate::store::{StoreError, StoreResult};

pub(super) async fn get(store: &RedisStore, key: &str) -> StoreResult<Option<Vec<u8>>> {
    let v = store
        .read(Ctx::new("get", key), cmd("GET").arg(store.k(key)))
        .await?;
    Reply { op: "get" }.bytes_opt(v)
}

pub(super) async fn get_many(
    store: &RedisStore,
    keys: &[String],
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = cmd("MGET");
    for key in keys {
        c.arg(store.k(key));
    }
    let r = Reply { op: "get_many" };
    let values = r.array(store.read(Ctx::new("get_many", &keys[0]), &c).await?)?;
    if values.len() != keys.len() {
        return Err(StoreError::Protocol {
            op: "get_many",
            message: format!("asked for {} keys, got {} values", keys.len(), values.len()),
        });
    }
    values.into_iter().map(|v| r.bytes_opt(v)).collect()
}

pub(super) async fn set(
    store: &RedisStore,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) -> StoreResult<()> {
    let mut c = cmd("SET");
    c.arg(store.k(key)).arg(value);
    if let Some(ttl) = ttl {
        c.arg("PX").arg(ttl_millis(ttl));
    }
    let v = store.write(Ctx::new("set", key), &c).await?;
    Reply { op: "set" }.ok(v)
}

pub(super) async fn set_nx(
    store: &RedisStore,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) -> StoreResult<bool> {
    let mut c = cmd("SET");
    c.arg(store.k(key)).arg(value).arg("NX");
    if let Some(ttl) = ttl {
        c.arg("PX").arg(ttl_millis(ttl));
    }
    let v = store.write(Ctx::new("set_nx", key), &c).await?;
    Ok(!matches!(v, Value::Nil))
}

pub(super) async fn compare_and_set(
    store: &RedisStore,
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
    ttl: Option<Duration>,
) -> StoreResult<bool> {
    let flag = |b: bool| if b { &b"1"[..] } else { &b"0"[..] };
    let ttl = ttl.map_or_else(|| "0".to_owned(), |t| ttl_millis(t).to_string());
    let args = [
        flag(expected.is_some()),
        expected.unwrap_or_default(),
        flag(new.is_some()),
        new.unwrap_or_default(),
        ttl.as_bytes(),
    ];
    store
        .script(
            Ctx::new("compare_and_set", key),
            &store.scripts.compare_and_set,
            key,
            &args,
        )
        .await
}

pub(super) async fn incr_by(store: &RedisStore, key: &str, delta: i64) -> StoreResult<i64> {
    let c = cmd("INCRBY").arg(store.k(key)).arg(delta).clone();
    let v = store.write(Ctx::new("incr_by", key), &c).await?;
    Reply { op: "incr_by" }.int(v)
}

pub(super) async fn acquire_lease(
    store: &RedisStore,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> StoreResult<bool> {
    let script = &store.scripts.acquire_lease;
    lease_script(store, "acquire_lease", script, key, owner, ttl).await
}

pub(super) async fn renew_lease(
    store: &RedisStore,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> StoreResult<bool> {
    let script = &store.scripts.renew_lease;
    lease_script(store, "renew_lease", script, key, owner, ttl).await
}

/// Runs the lease script `script` (operation `op`) on `key` for `owner` with `ttl` (sent in
/// milliseconds): the shared body of acquiring and renewing.
async fn lease_script(
    store: &RedisStore,
    op: &'static str,
    script: &redis::Script,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> StoreResult<bool> {
    let ttl = ttl_millis(ttl).to_string();
    store
        .script(
            Ctx::new(op, key),
            script,
            key,
            &[owner.as_bytes(), ttl.as_bytes()],
        )
        .await
}

pub(super) async fn release_lease(store: &RedisStore, key: &str, owner: &str) -> StoreResult<bool> {
    store
        .script(
            Ctx::new("release_lease", key),
            &store.scripts.release_lease,
            key,
            &[owner.as_bytes()],
        )
        .await
}

pub(super) async fn renew_leases(
    store: &RedisStore,
    keys: &[String],
    owner: &str,
    ttl: Duration,
) -> StoreResult<Vec<bool>> {
    let Some(first) = keys.first() else {
        return Ok(Vec::new());
    };
    let mut inv = store.scripts.renew_leases.prepare_invoke();
    for key in keys {
        inv.key(store.k(key));
    }
    inv.arg(owner).arg(ttl_millis(ttl));
    let ctx = Ctx::new("renew_leases", first);
    let v = store
        .link
        .query(&ctx, &Request::Script(&inv), Retry::Never)
        .await?;
    let r = Reply { op: ctx.op };
    let flags = r.array(v)?;
    if flags.len() != keys.len() {
        return Err(StoreError::Protocol {
            op: ctx.op,
            message: format!("renewed {} leases, got {} flags", keys.len(), flags.len()),
        });
    }
    flags.into_iter().map(|v| r.flag(v)).collect()
}
