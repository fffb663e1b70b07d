//! Consumer groups on Redis: `XGROUP CREATE`, `XREADGROUP`, `XACK`, `XPENDING`, `XAUTOCLAIM`,
//! `XCLAIM ... JUSTID`, `XINFO GROUPS`/`CONSUMERS`, and the idle-consumer delete script.

use std::time::Duration;

use super::link::{Ctx, Request, Retry};
use super::reply::Reply;
use super::{cmd, ms, RedisStore};
use crate::store::args::{block_millis, check_claim_count};
use crate::store::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, IdleClaim, PendingEntry, PendingRange,
    PendingSummary, ReadFrom, Store, StoreError, StoreResult, StreamEntry,
};

pub(super) async fn xgroup_create(
    store: &RedisStore,
    stream: &str,
    group: &str,
    start: &str,
) -> StoreResult<bool> {
    let c = cmd("XGROUP")
        .arg("CREATE")
        .arg(store.k(stream))
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .clone();
    let ctx = Ctx::new("xgroup_create", stream).group(group).ids(start);
    match store.write(ctx, &c).await {
        Ok(_) => Ok(true),
        Err(StoreError::Other { message, .. }) if message.starts_with("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) async fn xreadgroup(
    store: &RedisStore,
    read: GroupRead<'_>,
) -> StoreResult<Vec<StreamEntry>> {
    let mut c = cmd("XREADGROUP");
    c.arg("GROUP").arg(read.group).arg(read.consumer);
    if read.count > 0 {
        c.arg("COUNT").arg(read.count);
    }
    let (id, block) = match &read.from {
        ReadFrom::New => (">", read.block),
        // Redis ignores BLOCK when reading history.
        ReadFrom::Pending(id) => (id.as_str(), None),
    };
    if let Some(b) = block {
        c.arg("BLOCK").arg(block_millis(b));
    }
    c.arg("STREAMS").arg(store.k(read.stream)).arg(id);
    let ctx = Ctx::new("xreadgroup", read.stream)
        .group(read.group)
        .ids(id);
    // Not retried: a read from a group moves entries into the pending list.
    let v = match block {
        Some(b) => store.link.query_blocking(&ctx, &c, b).await?,
        None => {
            store
                .link
                .query(&ctx, &Request::Cmd(&c), Retry::Never)
                .await?
        }
    };
    // Entries deleted while pending come back with nil fields; XAUTOCLAIM reports them.
    Reply { op: "xreadgroup" }.read(v)
}

pub(super) async fn xack(
    store: &RedisStore,
    stream: &str,
    group: &str,
    ids: &[EntryId],
) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let c = cmd("XACK").arg(store.k(stream)).arg(group).arg(ids).clone();
    let joined = ids.join(" ");
    let ctx = Ctx::new("xack", stream).group(group).ids(&joined);
    let v = store.write(ctx, &c).await?;
    Reply { op: "xack" }.count(v)
}

pub(super) async fn xpending(
    store: &RedisStore,
    stream: &str,
    group: &str,
) -> StoreResult<PendingSummary> {
    let c = cmd("XPENDING").arg(store.k(stream)).arg(group).clone();
    let v = store
        .read(Ctx::new("xpending", stream).group(group), &c)
        .await?;
    Reply { op: "xpending" }.pending_summary(v)
}

pub(super) async fn xpending_range(
    store: &RedisStore,
    range: PendingRange<'_>,
) -> StoreResult<Vec<PendingEntry>> {
    let PendingRange {
        stream,
        group,
        start,
        end,
        count,
        consumer,
    } = range;
    let mut c = cmd("XPENDING");
    c.arg(store.k(stream))
        .arg(group)
        .arg(start)
        .arg(end)
        .arg(count);
    if let Some(consumer) = consumer {
        c.arg(consumer);
    }
    let ids = format!("{start} {end}");
    let ctx = Ctx::new("xpending_range", stream).group(group).ids(&ids);
    let v = store.read(ctx, &c).await?;
    Reply {
        op: "xpending_range",
    }
    .pending_entries(v)
}

pub(super) async fn xautoclaim(store: &RedisStore, claim: IdleClaim<'_>) -> StoreResult<AutoClaim> {
    let IdleClaim {
        stream,
        group,
        consumer,
        min_idle,
        start,
        count,
    } = claim;
    let op = "xautoclaim";
    check_claim_count(count)?;
    let c = cmd("XAUTOCLAIM")
        .arg(store.k(stream))
        .arg(group)
        .arg(consumer)
        .arg(ms(min_idle))
        .arg(start)
        .arg("COUNT")
        .arg(count)
        .clone();
    let ctx = Ctx::new(op, stream).group(group).ids(start);
    let v = store.write(ctx, &c).await?;
    let (next, claimed, deleted) = Reply { op }.autoclaim(v)?;
    if !deleted.is_empty() {
        tracing::warn!(
            stream,
            group,
            count = deleted.len(),
            "pending entries were trimmed before processing; counted as lost"
        );
    }
    Ok(AutoClaim {
        next,
        claimed,
        deleted,
    })
}

pub(super) async fn xclaim_touch(
    store: &RedisStore,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[EntryId],
) -> StoreResult<Vec<EntryId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = cmd("XCLAIM");
    c.arg(store.k(stream))
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(ids);
    c.arg("JUSTID");
    let ctx = Ctx::new("xclaim_touch", stream).group(group);
    // Idempotent: claiming again only resets the idle time again.
    let v = store.read(ctx, &c).await?;
    Reply { op: "xclaim_touch" }.ids(v)
}

pub(super) async fn xgroups(store: &RedisStore, stream: &str) -> StoreResult<Vec<GroupInfo>> {
    if !store.exists(stream).await? {
        return Ok(Vec::new());
    }
    let c = cmd("XINFO").arg("GROUPS").arg(store.k(stream)).clone();
    let v = store.read(Ctx::new("xgroups", stream), &c).await?;
    Reply { op: "xgroups" }.groups(v)
}

pub(super) async fn xconsumers(
    store: &RedisStore,
    stream: &str,
    group: &str,
) -> StoreResult<Vec<ConsumerInfo>> {
    let c = cmd("XINFO")
        .arg("CONSUMERS")
        .arg(store.k(stream))
        .arg(group)
        .clone();
    let v = store
        .read(Ctx::new("xconsumers", stream).group(group), &c)
        .await?;
    Reply { op: "xconsumers" }.consumers(v)
}

pub(super) async fn xdelconsumer_idle(
    store: &RedisStore,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
) -> StoreResult<bool> {
    let min_idle = ms(min_idle).to_string();
    store
        .script(
            Ctx::new("xdelconsumer_idle", stream).group(group),
            &store.scripts.delete_idle_consumer,
            stream,
            &[group.as_bytes(), consumer.as_bytes(), min_idle.as_bytes()],
        )
        .await
}
