//! The Redis store: every [`Store`] method as one Redis round trip (Lua scripts for the atomic
//! ones, `MULTI`/`EXEC` for [`Store::apply`]), with a key prefix, bounded calls and background
//! reconnection.
//!
//! [`RedisStore::connect`] does not need Redis to be up: while it is down, calls fail fast with
//! a retryable [`StoreError`] and the store reconnects on its own (see `link.rs`).

mod link;
mod reply;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};

use self::link::{Ctx, Link, Request, Retry};
use self::reply::Reply;
use self::scripts::Scripts;
use super::args::{block_millis, check_writes, ttl_millis};
use super::{
    AutoClaim, ConsumerInfo, EntryId, GroupInfo, GroupRead, PendingEntry, PendingSummary, ReadFrom,
    Store, StoreError, StoreResult, StreamEntry, Trim, Write,
};

/// How to reach Redis and how patient to be with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prepended to every key and stream name, so deployments can share a server.
    pub prefix: String,
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
    /// Limit for one call; blocking reads get their `BLOCK` time on top.
    pub response_timeout: Duration,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max_delay: Duration,
}

impl RedisOptions {
    /// Options for `url` with the defaults: prefix `troupe:`, 2 s connect and response
    /// timeouts, reconnect backoff capped at 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "troupe:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

/// The Redis store. Cheap to share behind an `Arc`; all calls go through one multiplexed
/// connection except blocking reads, which get a dedicated one each.
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connected", &self.link.is_connected())
            .finish()
    }
}

fn cmd(name: &str) -> Cmd {
    redis::cmd(name)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn add_trim(c: &mut Cmd, trim: &Trim) {
    match trim {
        Trim::MaxLen(n) => c.arg("MAXLEN").arg(*n),
        Trim::MinId(id) => c.arg("MINID").arg(id.as_str()),
    };
}

/// Escapes glob metacharacters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// Creates the store and tries to connect once (bounded by `connect_timeout`). Redis
    /// need not be up: the store is returned either way and keeps reconnecting in the
    /// background. Fails only on an invalid URL.
    pub async fn connect(opts: RedisOptions) -> StoreResult<RedisStore> {
        let prefix = opts.prefix.clone();
        let link = Link::start(opts).await?;
        Ok(RedisStore {
            link,
            prefix,
            scripts: Scripts::new(),
        })
    }

    /// Whether the shared connection is up right now (no round trip; see [`Store::ping`]).
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    async fn read(&self, ctx: Ctx<'_>, c: &Cmd) -> StoreResult<Value> {
        self.link
            .query(&ctx, &Request::Cmd(c), Retry::Idempotent)
            .await
    }

    async fn write(&self, ctx: Ctx<'_>, c: &Cmd) -> StoreResult<Value> {
        self.link.query(&ctx, &Request::Cmd(c), Retry::Never).await
    }

    async fn script(
        &self,
        ctx: Ctx<'_>,
        script: &redis::Script,
        key: &str,
        args: &[&[u8]],
    ) -> StoreResult<bool> {
        let mut inv = script.key(self.k(key));
        for a in args {
            inv.arg(*a);
        }
        let v = self
            .link
            .query(&ctx, &Request::Script(&inv), Retry::Never)
            .await?;
        Reply { op: ctx.op }.flag(v)
    }

    /// Appends one write to a transaction; `false` if it is a no-op and was left out.
    fn add_write(&self, pipe: &mut redis::Pipeline, w: &Write) -> bool {
        match w {
            Write::Set { key, value, ttl } => {
                let c = pipe.cmd("SET").arg(self.k(key)).arg(value.as_slice());
                if let Some(ttl) = ttl {
                    c.arg("PX").arg(ttl_millis(*ttl));
                }
            }
            Write::Del { key } => {
                pipe.cmd("DEL").arg(self.k(key));
            }
            Write::HSet { key, fields } => {
                if fields.is_empty() {
                    return false;
                }
                let c = pipe.cmd("HSET").arg(self.k(key));
                for (f, v) in fields {
                    c.arg(f.as_str()).arg(v.as_slice());
                }
            }
            Write::Push { key, values } => {
                if values.is_empty() {
                    return false;
                }
                let c = pipe.cmd("RPUSH").arg(self.k(key));
                for v in values {
                    c.arg(v.as_slice());
                }
            }
            Write::XAdd {
                stream,
                fields,
                trim,
            } => {
                let c = pipe.cmd("XADD").arg(self.k(stream));
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
                pipe.cmd("XACK").arg(self.k(stream)).arg(group).arg(ids);
            }
            Write::XDel { stream, ids } => {
                if ids.is_empty() {
                    return false;
                }
                pipe.cmd("XDEL").arg(self.k(stream)).arg(ids);
            }
            Write::Expire { key, ttl } => {
                pipe.cmd("PEXPIRE").arg(self.k(key)).arg(ttl_millis(*ttl));
            }
            Write::Persist { key } => {
                pipe.cmd("PERSIST").arg(self.k(key));
            }
            Write::HIncrBy { key, field, delta } => {
                pipe.cmd("HINCRBY").arg(self.k(key)).arg(field).arg(*delta);
            }
            Write::ZAdd { key, member, score } => {
                pipe.cmd("ZADD")
                    .arg(self.k(key))
                    .arg(*score)
                    .arg(member.as_slice());
            }
            Write::ZRem { key, member } => {
                pipe.cmd("ZREM").arg(self.k(key)).arg(member.as_slice());
            }
            Write::ZRemBelow { key, below } => {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(self.k(key))
                    .arg("-inf")
                    .arg(format!("({below}"));
            }
        }
        true
    }
}

fn write_ctx(w: &Write) -> Ctx<'_> {
    match w {
        Write::Set { key, .. } => Ctx::new("apply(set)", key),
        Write::Del { key } => Ctx::new("apply(del)", key),
        Write::HSet { key, .. } => Ctx::new("apply(hset)", key),
        Write::Push { key, .. } => Ctx::new("apply(push)", key),
        Write::XAdd { stream, .. } => Ctx::new("apply(xadd)", stream),
        Write::XAck { stream, group, .. } => Ctx::new("apply(xack)", stream).group(group),
        Write::XDel { stream, .. } => Ctx::new("apply(xdel)", stream),
        Write::Expire { key, .. } => Ctx::new("apply(expire)", key),
        Write::Persist { key } => Ctx::new("apply(persist)", key),
        Write::HIncrBy { key, .. } => Ctx::new("apply(hincrby)", key),
        Write::ZAdd { key, .. } => Ctx::new("apply(zadd)", key),
        Write::ZRem { key, .. } => Ctx::new("apply(zrem)", key),
        Write::ZRemBelow { key, .. } => Ctx::new("apply(zremrangebyscore)", key),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    async fn ping(&self) -> StoreResult<()> {
        let v = self.read(Ctx::new("ping", ""), &cmd("PING")).await?;
        Reply { op: "ping" }.ok(v)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let v = self
            .read(Ctx::new("get", key), cmd("GET").arg(self.k(key)))
            .await?;
        Reply { op: "get" }.bytes_opt(v)
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = cmd("MGET");
        for key in keys {
            c.arg(self.k(key));
        }
        let r = Reply { op: "get_many" };
        let values = r.array(self.read(Ctx::new("get_many", &keys[0]), &c).await?)?;
        if values.len() != keys.len() {
            return Err(StoreError::Protocol {
                op: "get_many",
                message: format!("asked for {} keys, got {} values", keys.len(), values.len()),
            });
        }
        values.into_iter().map(|v| r.bytes_opt(v)).collect()
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let mut c = cmd("SET");
        c.arg(self.k(key)).arg(value);
        if let Some(ttl) = ttl {
            c.arg("PX").arg(ttl_millis(ttl));
        }
        let v = self.write(Ctx::new("set", key), &c).await?;
        Reply { op: "set" }.ok(v)
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let mut c = cmd("SET");
        c.arg(self.k(key)).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            c.arg("PX").arg(ttl_millis(ttl));
        }
        let v = self.write(Ctx::new("set_nx", key), &c).await?;
        Ok(!matches!(v, Value::Nil))
    }

    async fn compare_and_set(
        &self,
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
        self.script(
            Ctx::new("compare_and_set", key),
            &self.scripts.compare_and_set,
            key,
            &args,
        )
        .await
    }

    async fn del(&self, keys: &[String]) -> StoreResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = cmd("DEL");
        for key in keys {
            c.arg(self.k(key));
        }
        let v = self.write(Ctx::new("del", &keys[0]), &c).await?;
        Reply { op: "del" }.count(v)
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        let v = self
            .read(Ctx::new("exists", key), cmd("EXISTS").arg(self.k(key)))
            .await?;
        Reply { op: "exists" }.flag(v)
    }

    async fn expire(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let c = cmd("PEXPIRE").arg(self.k(key)).arg(ttl_millis(ttl)).clone();
        let v = self.write(Ctx::new("expire", key), &c).await?;
        Reply { op: "expire" }.flag(v)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        let v = self
            .read(Ctx::new("ttl", key), cmd("PTTL").arg(self.k(key)))
            .await?;
        let ms = Reply { op: "ttl" }.int(v)?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    async fn incr_by(&self, key: &str, delta: i64) -> StoreResult<i64> {
        let c = cmd("INCRBY").arg(self.k(key)).arg(delta).clone();
        let v = self.write(Ctx::new("incr_by", key), &c).await?;
        Reply { op: "incr_by" }.int(v)
    }

    async fn keys_with_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let r = Reply {
            op: "keys_with_prefix",
        };
        let pattern = format!("{}*", glob_escape(&self.k(prefix)));
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let c = cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, keys) = r.scan(self.read(Ctx::new(r.op, prefix), &c).await?)?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn acquire_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let ttl = ttl_millis(ttl).to_string();
        self.script(
            Ctx::new("acquire_lease", key),
            &self.scripts.acquire_lease,
            key,
            &[owner.as_bytes(), ttl.as_bytes()],
        )
        .await
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let ttl = ttl_millis(ttl).to_string();
        self.script(
            Ctx::new("renew_lease", key),
            &self.scripts.renew_lease,
            key,
            &[owner.as_bytes(), ttl.as_bytes()],
        )
        .await
    }

    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<bool> {
        self.script(
            Ctx::new("release_lease", key),
            &self.scripts.release_lease,
            key,
            &[owner.as_bytes()],
        )
        .await
    }

    async fn renew_leases(
        &self,
        keys: &[String],
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let mut inv = self.scripts.renew_leases.prepare_invoke();
        for key in keys {
            inv.key(self.k(key));
        }
        inv.arg(owner).arg(ttl_millis(ttl));
        let ctx = Ctx::new("renew_leases", first);
        let v = self
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

    async fn hset(&self, key: &str, fields: &[(&str, &[u8])]) -> StoreResult<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut c = cmd("HSET");
        c.arg(self.k(key));
        for (f, v) in fields {
            c.arg(*f).arg(*v);
        }
        self.write(Ctx::new("hset", key), &c).await.map(drop)
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        let c = cmd("HGET").arg(self.k(key)).arg(field).clone();
        let v = self.read(Ctx::new("hget", key), &c).await?;
        Reply { op: "hget" }.bytes_opt(v)
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let v = self
            .read(Ctx::new("hgetall", key), cmd("HGETALL").arg(self.k(key)))
            .await?;
        let mut pairs = Reply { op: "hgetall" }.pairs(v)?;
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(pairs)
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> StoreResult<u64> {
        if fields.is_empty() {
            return Ok(0);
        }
        let c = cmd("HDEL").arg(self.k(key)).arg(fields).clone();
        let v = self.write(Ctx::new("hdel", key), &c).await?;
        Reply { op: "hdel" }.count(v)
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> StoreResult<i64> {
        let c = cmd("HINCRBY")
            .arg(self.k(key))
            .arg(field)
            .arg(delta)
            .clone();
        let v = self.write(Ctx::new("hincr_by", key), &c).await?;
        Reply { op: "hincr_by" }.int(v)
    }

    async fn push(&self, key: &str, values: &[&[u8]]) -> StoreResult<u64> {
        if values.is_empty() {
            return self.len(key).await;
        }
        let mut c = cmd("RPUSH");
        c.arg(self.k(key));
        for v in values {
            c.arg(*v);
        }
        let v = self.write(Ctx::new("push", key), &c).await?;
        Reply { op: "push" }.count(v)
    }

    async fn range(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<Vec<u8>>> {
        let c = cmd("LRANGE").arg(self.k(key)).arg(start).arg(stop).clone();
        let r = Reply { op: "range" };
        r.array(self.read(Ctx::new(r.op, key), &c).await?)?
            .into_iter()
            .map(|v| {
                r.bytes_opt(v)?.ok_or_else(|| StoreError::Protocol {
                    op: r.op,
                    message: "nil list element".into(),
                })
            })
            .collect()
    }

    async fn len(&self, key: &str) -> StoreResult<u64> {
        let v = self
            .read(Ctx::new("len", key), cmd("LLEN").arg(self.k(key)))
            .await?;
        Reply { op: "len" }.count(v)
    }

    async fn zrevrange(&self, key: &str, start: u64, stop: u64) -> StoreResult<Vec<Vec<u8>>> {
        let c = cmd("ZREVRANGE")
            .arg(self.k(key))
            .arg(start)
            .arg(stop)
            .clone();
        let r = Reply { op: "zrevrange" };
        r.array(self.read(Ctx::new(r.op, key), &c).await?)?
            .into_iter()
            .map(|v| {
                r.bytes_opt(v)?.ok_or_else(|| StoreError::Protocol {
                    op: r.op,
                    message: "nil sorted set member".into(),
                })
            })
            .collect()
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        let v = self
            .read(Ctx::new("zcard", key), cmd("ZCARD").arg(self.k(key)))
            .await?;
        Reply { op: "zcard" }.count(v)
    }

    async fn xadd(
        &self,
        stream: &str,
        fields: &[(&str, &[u8])],
        trim: Option<Trim>,
    ) -> StoreResult<EntryId> {
        if fields.is_empty() {
            return Err(StoreError::InvalidArgument {
                op: "xadd",
                message: format!("entry for stream {stream:?} has no fields"),
            });
        }
        let mut c = cmd("XADD");
        c.arg(self.k(stream));
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
        let v = self.write(Ctx::new("xadd", stream).ids(ids), &c).await?;
        Reply { op: "xadd" }.string(v)
    }

    async fn xlen(&self, stream: &str) -> StoreResult<u64> {
        let v = self
            .read(Ctx::new("xlen", stream), cmd("XLEN").arg(self.k(stream)))
            .await?;
        Reply { op: "xlen" }.count(v)
    }

    async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: Option<usize>,
    ) -> StoreResult<Vec<StreamEntry>> {
        let mut c = cmd("XRANGE");
        c.arg(self.k(stream)).arg(start).arg(end);
        if let Some(n) = count {
            c.arg("COUNT").arg(n);
        }
        let ids = format!("{start} {end}");
        let v = self.read(Ctx::new("xrange", stream).ids(&ids), &c).await?;
        Reply { op: "xrange" }.entries(v)
    }

    async fn xread(
        &self,
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
        c.arg("STREAMS").arg(self.k(stream)).arg(after);
        let ctx = Ctx::new("xread", stream).ids(after);
        let v = match block {
            Some(b) => self.link.query_blocking(&ctx, &c, b).await?,
            None => self.read(ctx, &c).await?,
        };
        Reply { op: "xread" }.read(v)
    }

    async fn xgroup_create(&self, stream: &str, group: &str, start: &str) -> StoreResult<bool> {
        let c = cmd("XGROUP")
            .arg("CREATE")
            .arg(self.k(stream))
            .arg(group)
            .arg(start)
            .arg("MKSTREAM")
            .clone();
        let ctx = Ctx::new("xgroup_create", stream).group(group).ids(start);
        match self.write(ctx, &c).await {
            Ok(_) => Ok(true),
            Err(StoreError::Other { message, .. }) if message.starts_with("BUSYGROUP") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn xreadgroup(&self, read: GroupRead<'_>) -> StoreResult<Vec<StreamEntry>> {
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
        c.arg("STREAMS").arg(self.k(read.stream)).arg(id);
        let ctx = Ctx::new("xreadgroup", read.stream)
            .group(read.group)
            .ids(id);
        // Not retried: a read from a group moves entries into the pending list.
        let v = match block {
            Some(b) => self.link.query_blocking(&ctx, &c, b).await?,
            None => {
                self.link
                    .query(&ctx, &Request::Cmd(&c), Retry::Never)
                    .await?
            }
        };
        // Entries deleted while pending come back with nil fields; XAUTOCLAIM reports them.
        Reply { op: "xreadgroup" }.read(v)
    }

    async fn xack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let c = cmd("XACK").arg(self.k(stream)).arg(group).arg(ids).clone();
        let joined = ids.join(" ");
        let ctx = Ctx::new("xack", stream).group(group).ids(&joined);
        let v = self.write(ctx, &c).await?;
        Reply { op: "xack" }.count(v)
    }

    async fn xpending(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        let c = cmd("XPENDING").arg(self.k(stream)).arg(group).clone();
        let v = self
            .read(Ctx::new("xpending", stream).group(group), &c)
            .await?;
        Reply { op: "xpending" }.pending_summary(v)
    }

    async fn xpending_range(
        &self,
        stream: &str,
        group: &str,
        start: &str,
        end: &str,
        count: usize,
        consumer: Option<&str>,
    ) -> StoreResult<Vec<PendingEntry>> {
        let mut c = cmd("XPENDING");
        c.arg(self.k(stream))
            .arg(group)
            .arg(start)
            .arg(end)
            .arg(count);
        if let Some(consumer) = consumer {
            c.arg(consumer);
        }
        let ids = format!("{start} {end}");
        let ctx = Ctx::new("xpending_range", stream).group(group).ids(&ids);
        let v = self.read(ctx, &c).await?;
        Reply {
            op: "xpending_range",
        }
        .pending_entries(v)
    }

    async fn xautoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> StoreResult<AutoClaim> {
        let op = "xautoclaim";
        if count == 0 {
            return Err(StoreError::InvalidArgument {
                op,
                message: "count must be at least 1".into(),
            });
        }
        let c = cmd("XAUTOCLAIM")
            .arg(self.k(stream))
            .arg(group)
            .arg(consumer)
            .arg(ms(min_idle))
            .arg(start)
            .arg("COUNT")
            .arg(count)
            .clone();
        let ctx = Ctx::new(op, stream).group(group).ids(start);
        let v = self.write(ctx, &c).await?;
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

    async fn xclaim_touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> StoreResult<Vec<EntryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = cmd("XCLAIM");
        c.arg(self.k(stream))
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(ids);
        c.arg("JUSTID");
        let ctx = Ctx::new("xclaim_touch", stream).group(group);
        // Idempotent: claiming again only resets the idle time again.
        let v = self.read(ctx, &c).await?;
        Reply { op: "xclaim_touch" }.ids(v)
    }

    async fn xgroups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        if !self.exists(stream).await? {
            return Ok(Vec::new());
        }
        let c = cmd("XINFO").arg("GROUPS").arg(self.k(stream)).clone();
        let v = self.read(Ctx::new("xgroups", stream), &c).await?;
        Reply { op: "xgroups" }.groups(v)
    }

    async fn xconsumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        let c = cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.k(stream))
            .arg(group)
            .clone();
        let v = self
            .read(Ctx::new("xconsumers", stream).group(group), &c)
            .await?;
        Reply { op: "xconsumers" }.consumers(v)
    }

    async fn xdelconsumer_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> StoreResult<bool> {
        let min_idle = ms(min_idle).to_string();
        self.script(
            Ctx::new("xdelconsumer_idle", stream).group(group),
            &self.scripts.delete_idle_consumer,
            stream,
            &[group.as_bytes(), consumer.as_bytes(), min_idle.as_bytes()],
        )
        .await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> StoreResult<u64> {
        let mut c = cmd("XTRIM");
        c.arg(self.k(stream));
        add_trim(&mut c, &trim);
        let ids = match &trim {
            Trim::MinId(id) => id.as_str(),
            Trim::MaxLen(_) => "",
        };
        let v = self.write(Ctx::new("xtrim", stream).ids(ids), &c).await?;
        Reply { op: "xtrim" }.count(v)
    }

    async fn apply(&self, writes: Vec<Write>) -> StoreResult<()> {
        check_writes(&writes)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let sent: Vec<&Write> = writes
            .iter()
            .filter(|w| self.add_write(&mut pipe, w))
            .collect();
        if sent.is_empty() {
            return Ok(());
        }
        // One command is atomic on its own: MULTI/EXEC would only add two commands.
        if sent.len() > 1 {
            pipe.atomic();
        }
        let v = self
            .link
            .query(&Ctx::new("apply", ""), &Request::Pipe(&pipe), Retry::Never)
            .await?;
        let results = Reply { op: "apply" }.array(v)?;
        // Like the memory store: every write ran; the first failure is reported.
        for (w, result) in sent.into_iter().zip(results) {
            if let Value::ServerError(e) = result {
                return Err(link::server_error(
                    &write_ctx(w),
                    e.code(),
                    e.details().unwrap_or_default(),
                ));
            }
        }
        Ok(())
    }

    async fn rate_limit(
        &self,
        key: &str,
        request: super::RateLimit,
    ) -> StoreResult<super::RateOutcome> {
        use super::micros::{Micros, MicrosAlgorithm};
        let params = Micros::new(&request)?;
        let script = match params.algorithm {
            MicrosAlgorithm::Gcra(_) => &self.scripts.rate_gcra,
            MicrosAlgorithm::Window(_) => &self.scripts.rate_window,
        };
        let mut inv = script.key(self.k(key));
        for arg in params.script_args() {
            inv.arg(arg);
        }
        // Never resent: a take whose reply was lost may have applied.
        let ctx = Ctx::new("rate_limit", key);
        let v = self
            .link
            .query(&ctx, &Request::Script(&inv), Retry::Never)
            .await?;
        let r = Reply { op: "rate_limit" };
        let [allowed, wait, remaining, reset] =
            <[Value; 4]>::try_from(r.array(v)?).map_err(|items| StoreError::Protocol {
                op: "rate_limit",
                message: format!("expected 4 integers, got {} values", items.len()),
            })?;
        let micros = |v| r.count(v).map(Duration::from_micros);
        Ok(super::RateOutcome {
            allowed: r.flag(allowed)?,
            wait: micros(wait)?,
            remaining: r.count(remaining)?,
            reset_after: micros(reset)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(
            glob_escape("troupe:a*b?[c]\\"),
            "troupe:a\\*b\\?\\[c\\]\\\\"
        );
    }

    #[test]
    fn options_have_documented_defaults() {
        let o = RedisOptions::new("redis://127.0.0.1:6379");
        assert_eq!(o.prefix, "troupe:");
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(o.response_timeout, Duration::from_secs(2));
        assert_eq!(o.reconnect_max_delay, Duration::from_secs(5));
    }
}
