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
            if let Some(start) = start.as_deref().filter(|s| !s.trim().is_empty()) {
                if humantime::parse_rfc3339_weak(start.trim()).is_err() {
                    ctx.error(
                        &at.key("start"),
                        format!(
                            "invalid time \"{start}\": write a UTC time, e.g. \"2025-01-01T00:00:00Z\""
                        ),
                    );
                }
            }
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
    let capacity = match &kind {
        LimitKind::TokenBucket { capacity } => *capacity,
        LimitKind::FixedWindow { .. } => rate,
    };
    let shards = ctx.positive(&at.key("shards"), raw.shards, defaults::LIMIT_SHARDS);
    let least = rate.min(capacity);
    if least > 0 && u64::from(shards) > least {
        ctx.error(
            &at.key("shards"),
            format!(
                "must not exceed rate and capacity ({least}): each shard holds at least one unit"
            ),
        );
    }
    LimitSettings {
        kind,
        rate,
        period: ctx.required_duration(&at.key("period"), raw.period.as_deref()),
        key,
        unit,
        backend,
        shards,
        on_store_error,
        max_wait: ctx.duration(
            &at.key("max_wait"),
            raw.max_wait.as_deref(),
            defaults::LIMIT_MAX_WAIT,
        ),
        max_reserved: ctx.at_most(
            &at.key("max_reserved"),
            raw.max_reserved,
            capacity.saturating_mul(defaults::LIMIT_MAX_RESERVED_CAPACITIES),
            defaults::MAX_COUNT,
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

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn diagnostics(toml: &str) -> Vec<String> {
        match load_str(toml, "bad.toml", &[]) {
            Ok(_) => Vec::new(),
            Err(err) => err.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn max_reserved_defaults_to_one_capacity() {
        let config = load_str(
            "[limits.tb]\nkind = \"token_bucket\"\nrate = 10\nperiod = \"1s\"\ncapacity = 30\n\
             [limits.fw]\nkind = \"fixed_window\"\nrate = 7\nperiod = \"1s\"\n\
             [limits.set]\nkind = \"token_bucket\"\nrate = 10\nperiod = \"1s\"\nmax_reserved = 0\n",
            "ok.toml",
            &[],
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let reserved = |name: &str| config.limits[name].max_reserved;
        assert_eq!(
            (reserved("tb"), reserved("fw"), reserved("set")),
            (30, 7, 0)
        );
    }

    #[test]
    fn shards_need_a_unit_each_and_start_must_be_a_time() {
        assert_eq!(
            diagnostics(
                "[limits.a]\nkind = \"token_bucket\"\nrate = 10\nperiod = \"1s\"\ncapacity = 2\nshards = 3\n\
                 [limits.b]\nkind = \"fixed_window\"\nrate = 5\nperiod = \"1m\"\nstart = \"monday\"\n\
                 [limits.c]\nkind = \"fixed_window\"\nrate = 5\nperiod = \"1m\"\n\
                 start = \"2025-01-01T00:00:00Z\"\nshards = 5\n",
            ),
            [
                "bad.toml:6:10: limits.a.shards: must not exceed rate and capacity (2): each shard holds at least one unit",
                r#"bad.toml:11:9: limits.b.start: invalid time "monday": write a UTC time, e.g. "2025-01-01T00:00:00Z""#,
            ]
        );
    }
}
