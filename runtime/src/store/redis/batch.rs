//! [`Store::apply`](crate::store::Store::apply) on Redis: the batch's writes as one
//! `MULTI`/`EXEC` transaction (a single write is sent alone), errors reported per write.

use std::time::{Duration, Instant};

use redis::Value;

use super::link::{self, Ctx, Request, Retry};
use super::renewals::Slot;
use super::reply::Reply;
use super::RedisStore;
use crate::store::args::{check_writes, ttl_millis};
use crate::store::{StoreResult, Trim, Write};

pub(super) async fn apply(store: &RedisStore, mut writes: Vec<Write>) -> StoreResult<()> {
    check_writes(&writes)?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let now = Instant::now();
    let mut renewed = Vec::new();
    let mut sent = Vec::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        let lazy = match w {
            Write::Renew { key, ttl } => Some((Slot::Expiry, key, *ttl)),
            Write::Prune { key, .. } => Some((Slot::Prune, key, Duration::MAX)),
            _ => None,
        };
        let added = match lazy {
            Some((slot, key, ttl)) => {
                let due = store.renewals.due(slot, key, ttl, now);
                if due {
                    renewed.push((slot, key.clone()));
                    add_write(store, &mut pipe, w);
                }
                due
            }
            None => add_write(store, &mut pipe, w),
        };
        if added {
            sent.push(i);
        }
    }
    if sent.is_empty() {
        return Ok(());
    }
    // The pipeline holds the values now; while the batch waits for its turn on the
    // connection (thousands may, under load), the writes keep only what names them in errors.
    writes.iter_mut().for_each(thin);
    let result = send(store, pipe, &writes, &sent).await;
    if result.is_err() {
        // Perhaps not renewed: the next write renews them.
        store.renewals.forget(&renewed);
    }
    result
}

async fn send(
    store: &RedisStore,
    mut pipe: redis::Pipeline,
    writes: &[Write],
    sent: &[usize],
) -> StoreResult<()> {
    // One command is atomic on its own: MULTI/EXEC would only add two commands.
    if sent.len() > 1 {
        pipe.atomic();
    }
    let v = store
        .link
        .query(&Ctx::new("apply", ""), &Request::Pipe(&pipe), Retry::Never)
        .await?;
    let results = Reply { op: "apply" }.array(v)?;
    // Like the memory store: every write ran; the first failure is reported.
    for (&i, result) in sent.iter().zip(results) {
        if let Value::ServerError(e) = result {
            return Err(link::server_error(
                &write_ctx(&writes[i]),
                e.code(),
                e.details().unwrap_or_default(),
            ));
        }
    }
    Ok(())
}

/// Drops what `w` writes (its values), keeping what names it.
fn thin(w: &mut Write) {
    match w {
        Write::Set { value, .. } => *value = Vec::new(),
        Write::HSet { fields, .. } => *fields = Vec::new(),
        Write::Push { values, .. } => *values = Vec::new(),
        Write::XAdd { fields, .. } => *fields = Vec::new(),
        Write::XAck { ids, .. } | Write::XDel { ids, .. } => *ids = Vec::new(),
        Write::HDel { fields, .. } => *fields = Vec::new(),
        _ => {}
    }
}

/// Appends one write to a transaction; `false` if it is a no-op and was left out.
fn add_write(store: &RedisStore, pipe: &mut redis::Pipeline, w: &Write) -> bool {
    match w {
        Write::Set { key, value, ttl } => {
            let c = pipe.cmd("SET").arg(store.k(key)).arg(value.as_slice());
            if let Some(ttl) = ttl {
                c.arg("PX").arg(ttl_millis(*ttl));
            }
        }
        Write::Del { key } => {
            pipe.cmd("DEL").arg(store.k(key));
        }
        Write::HSet { key, fields } => {
            if fields.is_empty() {
                return false;
            }
            let c = pipe.cmd("HSET").arg(store.k(key));
            for (f, v) in fields {
                c.arg(f.as_str()).arg(v.as_slice());
            }
        }
        Write::Push { key, values } => {
            if values.is_empty() {
                return false;
            }
            let c = pipe.cmd("RPUSH").arg(store.k(key));
            for v in values {
                c.arg(v.as_slice());
            }
        }
        Write::XAdd {
            stream,
            fields,
            trim,
        } => {
            let c = pipe.cmd("XADD").arg(store.k(stream));
            match trim {
                Some(Trim::MaxLen(n)) => c.arg("MAXLEN").arg(*n),
                Some(Trim::MinId(id)) => c.arg("MINID").arg(id.as_str()),
                None => c,
            };
            c.arg("*");
            for (f, v) in fields {
                c.arg(f.as_slice()).arg(v.as_slice());
            }
        }
        Write::XAck { stream, group, ids } => {
            if ids.is_empty() {
                return false;
            }
            pipe.cmd("XACK").arg(store.k(stream)).arg(group).arg(ids);
        }
        Write::XDel { stream, ids } => {
            if ids.is_empty() {
                return false;
            }
            pipe.cmd("XDEL").arg(store.k(stream)).arg(ids);
        }
        Write::HDel { key, fields } => {
            if fields.is_empty() {
                return false;
            }
            pipe.cmd("HDEL").arg(store.k(key)).arg(fields);
        }
        Write::Expire { key, ttl } | Write::Renew { key, ttl } => {
            pipe.cmd("PEXPIRE").arg(store.k(key)).arg(ttl_millis(*ttl));
        }
        Write::Persist { key } => {
            pipe.cmd("PERSIST").arg(store.k(key));
        }
        Write::HIncrBy { key, field, delta } => {
            pipe.cmd("HINCRBY").arg(store.k(key)).arg(field).arg(*delta);
        }
        Write::ZAdd { key, member, score } => {
            pipe.cmd("ZADD")
                .arg(store.k(key))
                .arg(*score)
                .arg(member.as_slice());
        }
        Write::ZRem { key, member } => {
            pipe.cmd("ZREM").arg(store.k(key)).arg(member.as_slice());
        }
        Write::ZRemBelow { key, below } | Write::Prune { key, below } => {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(store.k(key))
                .arg("-inf")
                .arg(format!("({below}"));
        }
    }
    true
}

fn write_ctx(w: &Write) -> Ctx<'_> {
    match w {
        Write::Set { key, .. } => Ctx::new("apply(set)", key),
        Write::Del { key } => Ctx::new("apply(del)", key),
        Write::HSet { key, .. } => Ctx::new("apply(hset)", key),
        Write::HDel { key, .. } => Ctx::new("apply(hdel)", key),
        Write::Push { key, .. } => Ctx::new("apply(push)", key),
        Write::XAdd { stream, .. } => Ctx::new("apply(xadd)", stream),
        Write::XAck { stream, group, .. } => Ctx::new("apply(xack)", stream).group(group),
        Write::XDel { stream, .. } => Ctx::new("apply(xdel)", stream),
        Write::Expire { key, .. } | Write::Renew { key, .. } => Ctx::new("apply(expire)", key),
        Write::Persist { key } => Ctx::new("apply(persist)", key),
        Write::HIncrBy { key, .. } => Ctx::new("apply(hincrby)", key),
        Write::ZAdd { key, .. } => Ctx::new("apply(zadd)", key),
        Write::ZRem { key, .. } => Ctx::new("apply(zrem)", key),
        Write::ZRemBelow { key, .. } | Write::Prune { key, .. } => {
            Ctx::new("apply(zremrangebyscore)", key)
        }
    }
}
