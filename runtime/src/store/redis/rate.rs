//! [`Store::rate_limit`](crate::store::Store::rate_limit) on Redis: one script per algorithm
//! (`scripts.rs`), run on the server's clock and never resent.

use std::time::Duration;

use redis::Value;

use super::link::{Ctx, Request, Retry};
use super::reply::Reply;
use super::RedisStore;
use crate::store::micros::{Micros, MicrosAlgorithm};
use crate::store::{RateLimit, RateOutcome, StoreError, StoreResult};

pub(super) async fn rate_limit(
    store: &RedisStore,
    key: &str,
    request: RateLimit,
) -> StoreResult<RateOutcome> {
    let params = Micros::new(&request)?;
    let script = match params.algorithm {
        MicrosAlgorithm::Gcra(_) => &store.scripts.rate_gcra,
        MicrosAlgorithm::Window(_) => &store.scripts.rate_window,
    };
    let mut inv = script.key(store.k(key));
    for arg in params.script_args() {
        inv.arg(arg);
    }
    // Never resent: a take whose reply was lost may have applied.
    let ctx = Ctx::new("rate_limit", key);
    let v = store
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
    Ok(RateOutcome {
        allowed: r.flag(allowed)?,
        wait: micros(wait)?,
        remaining: r.count(remaining)?,
        reset_after: micros(reset)?,
    })
}
