//! Validation of `[limits.X]` and `[pools.X]`.

use std::time::Duration;

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawLimit, RawPool};
use crate::settings::{
    LimitBackend, LimitKey, LimitKind, LimitSettings, LimitUnit, OnStoreError, PoolSettings,
};

pub(super) fn limit(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawLimit,
    store_is_redis: bool,
) -> LimitSettings {
    let rate = ctx.required_positive(&at.key("rate"), raw.rate);
    let kind = match ctx.choice(
        &at.key("kind"),
        raw.kind.as_deref(),
        &["token_bucket", "fixed_window"],
        None,
    ) {
        Some("fixed_window") => {
            ctx.only_with(
                &at.key("capacity"),
                raw.capacity.is_some(),
                "kind = \"token_bucket\"",
            );
            let start = raw
                .start
                .as_deref()
                .map(|start| ctx.non_empty(&at.key("start"), Some(start), ""));
            LimitKind::FixedWindow { start }
        }
        Some(_token_bucket) => {
            ctx.only_with(
                &at.key("start"),
                raw.start.is_some(),
                "kind = \"fixed_window\"",
            );
            LimitKind::TokenBucket {
                capacity: ctx.positive(&at.key("capacity"), raw.capacity, rate),
            }
        }
        None => LimitKind::TokenBucket { capacity: rate },
    };
    let key = match ctx.choice(
        &at.key("key"),
        raw.key.as_deref(),
        &["global", "group", "user"],
        Some("global"),
    ) {
        Some("group") => LimitKey::Group,
        Some("user") => LimitKey::User,
        _ => LimitKey::Global,
    };
    let unit = match ctx.choice(
        &at.key("unit"),
        raw.unit.as_deref(),
        &["requests", "tokens"],
        Some("requests"),
    ) {
        Some("tokens") => LimitUnit::Tokens,
        _ => LimitUnit::Requests,
    };
    let backend = match ctx.choice(
        &at.key("backend"),
        raw.backend.as_deref(),
        &["local", "redis"],
        Some("local"),
    ) {
        Some("redis") => {
            if !store_is_redis {
                ctx.error(&at.key("backend"), "needs store.backend = \"redis\"");
            }
            LimitBackend::Redis
        }
        _ => LimitBackend::Local,
    };
    let on_store_error = match ctx.choice(
        &at.key("on_store_error"),
        raw.on_store_error.as_deref(),
        &["fail_closed", "fail_open"],
        Some("fail_closed"),
    ) {
        Some("fail_open") => OnStoreError::FailOpen,
        _ => OnStoreError::FailClosed,
    };
    LimitSettings {
        kind,
        rate,
        period: ctx.required_duration(&at.key("period"), raw.period.as_deref()),
        key,
        unit,
        backend,
        shards: ctx.positive(&at.key("shards"), raw.shards, defaults::LIMIT_SHARDS),
        on_store_error,
        max_wait: ctx.duration(
            &at.key("max_wait"),
            raw.max_wait.as_deref(),
            defaults::LIMIT_MAX_WAIT,
        ),
    }
}

pub(super) fn pool(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawPool) -> PoolSettings {
    let initial_backoff = ctx.duration(
        &at.key("initial_backoff"),
        raw.initial_backoff.as_deref(),
        defaults::POOL_INITIAL_BACKOFF,
    );
    let max_backoff: Duration = ctx.duration(
        &at.key("max_backoff"),
        raw.max_backoff.as_deref(),
        defaults::POOL_MAX_BACKOFF,
    );
    if max_backoff < initial_backoff {
        ctx.error(
            &at.key("max_backoff"),
            "must not be shorter than initial_backoff",
        );
    }
    let backoff_base = raw.backoff_base.unwrap_or(defaults::POOL_BACKOFF_BASE);
    if !backoff_base.is_finite() || backoff_base < 1.0 {
        ctx.error(&at.key("backoff_base"), "must be a number >= 1");
    }
    PoolSettings {
        max_parallelism: ctx.positive(
            &at.key("max_parallelism"),
            raw.max_parallelism,
            defaults::POOL_MAX_PARALLELISM,
        ),
        max_attempts: ctx.positive(
            &at.key("max_attempts"),
            raw.max_attempts,
            defaults::POOL_MAX_ATTEMPTS,
        ),
        initial_backoff,
        backoff_base,
        max_backoff,
        jitter: raw.jitter.unwrap_or(defaults::POOL_JITTER),
        retention: ctx.positive_duration(
            &at.key("retention"),
            raw.retention.as_deref(),
            defaults::POOL_RETENTION,
        ),
    }
}
