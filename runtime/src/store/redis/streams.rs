//! Streams on Redis: `XADD`, `XLEN`, `XRANGE`, `XREAD` (blocking ones on a dedicated
//! connection, `link.rs`), `XTRIM`. Consumer-group commands are in `groups.rs`.

use std::time::Duration;

use redis::Cmd;

use super::link::Ctx;
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::args::{block_millis, check_entry};
use crate::store::{EntryId, StoreResult, StreamEntry, Trim};

/// Adds the trim (`MAXLEN n` or `MINID id`) to an `XADD` or `XTRIM`.
fn add_trim(c: &mut Cmd, trim: &Trim) {
    match trim {
        Trim::MaxLen(n) => c.arg("MAXLEN").arg(*n),
        Trim::MinId(id) => c.arg("MINID").arg(id.as_str()),
    };
}

pub(super) async fn xadd(
    store: &RedisStore,
    stream: &str,
    fields: &[(&str, &[u8])],
    trim: Option<Trim>,
) -> StoreResult<EntryId> {
    check_entry("xadd", stream, fields.len())?;
    let mut c = cmd("XADD");
    c.arg(store.k(stream));
    let ids = match &trim {
        Some(t) => {
            add_trim(&mut c, t);
            match t {
                Trim::MinId(id) => id.as_str(),
                Trim::MaxLen(_) => "",
            }
        }
        None => "",
    };
    c.arg("*");
    for (f, v) in fields {
        c.arg(*f).arg(*v);
    }
    let v = store.write(Ctx::new("xadd", stream).ids(ids), &c).await?;
    Reply { op: "xadd" }.string(v)
}

pub(super) async fn xlen(store: &RedisStore, stream: &str) -> StoreResult<u64> {
    let v = store
        .read(Ctx::new("xlen", stream), cmd("XLEN").arg(store.k(stream)))
        .await?;
    Reply { op: "xlen" }.count(v)
}

pub(super) async fn xrange(
    store: &RedisStore,
    stream: &str,
    start: &str,
    end: &str,
    count: Option<usize>,
) -> StoreResult<Vec<StreamEntry>> {
    let mut c = cmd("XRANGE");
    c.arg(store.k(stream)).arg(start).arg(end);
    if let Some(n) = count {
        c.arg("COUNT").arg(n);
    }
    let ids = format!("{start} {end}");
    let v = store.read(Ctx::new("xrange", stream).ids(&ids), &c).await?;
    Reply { op: "xrange" }.entries(v)
}

pub(super) async fn xread(
    store: &RedisStore,
    stream: &str,
    after: &str,
    count: usize,
    block: Option<Duration>,
) -> StoreResult<Vec<StreamEntry>> {
    let mut c = cmd("XREAD");
    if count > 0 {
        c.arg("COUNT").arg(count);
    }
    if let Some(b) = block {
        c.arg("BLOCK").arg(block_millis(b));
    }
    c.arg("STREAMS").arg(store.k(stream)).arg(after);
    let ctx = Ctx::new("xread", stream).ids(after);
    let v = match block {
        Some(b) => store.link.query_blocking(&ctx, &c, b).await?,
        None => store.read(ctx, &c).await?,
    };
    Reply { op: "xread" }.read(v)
}

pub(super) async fn xtrim(store: &RedisStore, stream: &str, trim: Trim) -> StoreResult<u64> {
    let mut c = cmd("XTRIM");
    c.arg(store.k(stream));
    add_trim(&mut c, &trim);
    let ids = match &trim {
        Trim::MinId(id) => id.as_str(),
        Trim::MaxLen(_) => "",
    };
    let v = store.write(Ctx::new("xtrim", stream).ids(ids), &c).await?;
    Reply { op: "xtrim" }.count(v)
}
