//! Commands on keys of any kind on Redis: `DEL`, `EXISTS`, `PEXPIRE`, `PTTL`, and listing keys
//! by prefix with `SCAN MATCH`.

use std::time::Duration;

use super::link::Ctx;
use super::reply::Reply;
use super::{cmd, RedisStore};
use crate::store::args::ttl_millis;
use crate::store::StoreResult;

pub(super) async fn del(store: &RedisStore, keys: &[String]) -> StoreResult<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut c = cmd("DEL");
    for key in keys {
        c.arg(store.k(key));
    }
    let v = store.write(Ctx::new("del", &keys[0]), &c).await?;
    Reply { op: "del" }.count(v)
}

pub(super) async fn exists(store: &RedisStore, key: &str) -> StoreResult<bool> {
    let v = store
        .read(Ctx::new("exists", key), cmd("EXISTS").arg(store.k(key)))
        .await?;
    Reply { op: "exists" }.flag(v)
}

pub(super) async fn expire(store: &RedisStore, key: &str, ttl: Duration) -> StoreResult<bool> {
    let c = cmd("PEXPIRE")
        .arg(store.k(key))
        .arg(ttl_millis(ttl))
        .clone();
    let v = store.write(Ctx::new("expire", key), &c).await?;
    Reply { op: "expire" }.flag(v)
}

pub(super) async fn ttl(store: &RedisStore, key: &str) -> StoreResult<Option<Duration>> {
    let v = store
        .read(Ctx::new("ttl", key), cmd("PTTL").arg(store.k(key)))
        .await?;
    let ms = Reply { op: "ttl" }.int(v)?;
    Ok(u64::try_from(ms).ok().map(Duration::from_millis))
}

pub(super) async fn keys_with_prefix(store: &RedisStore, prefix: &str) -> StoreResult<Vec<String>> {
    let r = Reply {
        op: "keys_with_prefix",
    };
    let pattern = format!("{}*", glob_escape(&store.k(prefix)));
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
        let (next, keys) = r.scan(store.read(Ctx::new(r.op, prefix), &c).await?)?;
        out.extend(
            keys.into_iter()
                .filter_map(|k| k.strip_prefix(&store.prefix).map(str::to_owned)),
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
}
