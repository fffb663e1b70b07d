//! Validation of `[daemon]`, `[store]` and `[ingress]`.

use std::net::SocketAddr;

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use std::collections::BTreeMap;

use super::models::is_env_var_name;
use crate::raw::{RawDaemon, RawIngress, RawIngressAuth, RawStore};
use crate::settings::{
    default_name, DaemonSettings, IngressAuth, IngressSettings, RedisSettings, StoreSettings,
    SYSTEM_GROUP as RESERVED_GROUP,
};

pub(super) fn daemon(
    ctx: &mut Ctx<'_>,
    raw: &RawDaemon,
    env: &[(String, String)],
) -> DaemonSettings {
    let at = KeyPath::top("daemon");
    let name = match raw.name.as_deref() {
        Some(name) => ctx.non_empty(&at.key("name"), Some(name), ""),
        None => default_name(env),
    };
    let metrics_addr = match raw.metrics_addr.as_deref() {
        Some(addr) => match addr.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                ctx.error(
                    &at.key("metrics_addr"),
                    format!("invalid socket address \"{addr}\": expected IP:port, e.g. \"127.0.0.1:9464\""),
                );
                None
            }
        },
        None => None,
    };
    let max_runs = ctx.positive(&at.key("max_runs"), raw.max_runs, defaults::MAX_RUNS);
    DaemonSettings {
        name,
        shutdown_grace: ctx.duration(
            &at.key("shutdown_grace"),
            raw.shutdown_grace.as_deref(),
            defaults::SHUTDOWN_GRACE,
        ),
        passivate_after: ctx.positive_duration(
            &at.key("passivate_after"),
            raw.passivate_after.as_deref(),
            defaults::PASSIVATE_AFTER,
        ),
        thread_retention: ctx.positive_duration(
            &at.key("thread_retention"),
            raw.thread_retention.as_deref(),
            defaults::THREAD_RETENTION,
        ),
        run_retention: ctx.positive_duration(
            &at.key("run_retention"),
            raw.run_retention.as_deref(),
            defaults::RUN_RETENTION,
        ),
        mailbox_capacity: ctx.positive(
            &at.key("mailbox_capacity"),
            raw.mailbox_capacity,
            defaults::MAILBOX_CAPACITY,
        ),
        max_restarts: raw.max_restarts.unwrap_or(defaults::MAX_RESTARTS),
        restart_window: ctx.positive_duration(
            &at.key("restart_window"),
            raw.restart_window.as_deref(),
            defaults::RESTART_WINDOW,
        ),
        workers: ctx.at_most(
            &at.key("workers"),
            raw.workers,
            defaults::WORKERS,
            defaults::MAX_WORKERS,
        ),
        max_runs,
        // No bound of its own unless set: a group may take every slot.
        max_runs_per_group: ctx.positive(
            &at.key("max_runs_per_group"),
            raw.max_runs_per_group,
            max_runs,
        ),
        metrics_addr,
    }
}

pub(super) fn store(ctx: &mut Ctx<'_>, raw: &RawStore) -> StoreSettings {
    let at = KeyPath::top("store");
    let backend = ctx.choice(
        &at.key("backend"),
        raw.backend.as_deref(),
        &["memory", "redis"],
        Some("memory"),
    );
    let redis_only = [
        ("url", raw.url.is_some()),
        ("prefix", raw.prefix.is_some()),
        ("connect_timeout", raw.connect_timeout.is_some()),
        ("response_timeout", raw.response_timeout.is_some()),
        ("reconnect_max_delay", raw.reconnect_max_delay.is_some()),
    ];
    match backend {
        Some("redis") => {
            let url = ctx
                .required(&at.key("url"), raw.url.clone())
                .unwrap_or_default();
            if raw.url.is_some() && !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                ctx.error(
                    &at.key("url"),
                    format!(
                        "\"{}\" is not a Redis URL: it must start with redis:// or rediss://",
                        crate::settings::redact_url(&url)
                    ),
                );
            }
            StoreSettings::Redis(RedisSettings {
                url,
                prefix: raw
                    .prefix
                    .clone()
                    .unwrap_or_else(|| defaults::STORE_PREFIX.to_owned()),
                connect_timeout: ctx.positive_duration(
                    &at.key("connect_timeout"),
                    raw.connect_timeout.as_deref(),
                    defaults::STORE_CONNECT_TIMEOUT,
                ),
                response_timeout: ctx.positive_duration(
                    &at.key("response_timeout"),
                    raw.response_timeout.as_deref(),
                    defaults::STORE_RESPONSE_TIMEOUT,
                ),
                reconnect_max_delay: ctx.positive_duration(
                    &at.key("reconnect_max_delay"),
                    raw.reconnect_max_delay.as_deref(),
                    defaults::STORE_RECONNECT_MAX_DELAY,
                ),
            })
        }
        Some(_memory) => {
            for (key, present) in redis_only {
                ctx.only_with(&at.key(key), present, "backend = \"redis\"");
            }
            StoreSettings::Memory
        }
        None => StoreSettings::Memory,
    }
}

pub(super) fn ingress(ctx: &mut Ctx<'_>, raw: &RawIngress) -> IngressSettings {
    let at = KeyPath::top("ingress");
    let max_in_flight = ctx.positive(
        &at.key("max_in_flight"),
        raw.max_in_flight,
        defaults::INGRESS_MAX_IN_FLIGHT,
    );
    let claim_idle = ctx.positive_duration(
        &at.key("claim_idle"),
        raw.claim_idle.as_deref(),
        defaults::INGRESS_CLAIM_IDLE,
    );
    let consumer_expiry = ctx.positive_duration(
        &at.key("consumer_expiry"),
        raw.consumer_expiry.as_deref(),
        defaults::INGRESS_CONSUMER_EXPIRY,
    );
    if consumer_expiry <= claim_idle {
        let why = "a dead daemon's entries are claimed after claim_idle, its consumer is \
                   deleted after consumer_expiry";
        let show = |d| humantime::format_duration(d).to_string();
        // At the key written: the expiry, or the claim_idle that outgrew its default.
        if raw.consumer_expiry.is_some() {
            ctx.error(
                &at.key("consumer_expiry"),
                format!(
                    "must be greater than ingress.claim_idle ({}): {why}",
                    show(claim_idle)
                ),
            );
        } else {
            ctx.error(
                &at.key("claim_idle"),
                format!(
                    "must be less than ingress.consumer_expiry ({}, its default): {why}",
                    show(consumer_expiry)
                ),
            );
        }
    }
    IngressSettings {
        stream: ctx.non_empty(
            &at.key("stream"),
            raw.stream.as_deref(),
            defaults::INGRESS_STREAM,
        ),
        results: ctx.non_empty(
            &at.key("results"),
            raw.results.as_deref(),
            defaults::INGRESS_RESULTS,
        ),
        dead: ctx.non_empty(&at.key("dead"), raw.dead.as_deref(), defaults::INGRESS_DEAD),
        group: ctx.non_empty(
            &at.key("group"),
            raw.group.as_deref(),
            defaults::INGRESS_GROUP,
        ),
        batch: ctx.positive(&at.key("batch"), raw.batch, defaults::INGRESS_BATCH),
        block: ctx.positive_duration(
            &at.key("block"),
            raw.block.as_deref(),
            defaults::INGRESS_BLOCK,
        ),
        claim_idle,
        max_deliveries: ctx.positive(
            &at.key("max_deliveries"),
            raw.max_deliveries,
            defaults::INGRESS_MAX_DELIVERIES,
        ),
        max_in_flight,
        // No bound of its own unless set: a group may take every slot.
        max_in_flight_per_group: ctx.positive(
            &at.key("max_in_flight_per_group"),
            raw.max_in_flight_per_group,
            max_in_flight,
        ),
        max_input_bytes: ctx.positive(
            &at.key("max_input_bytes"),
            raw.max_input_bytes,
            defaults::INGRESS_MAX_INPUT_BYTES,
        ),
        max_entry_bytes: ctx.positive(
            &at.key("max_entry_bytes"),
            raw.max_entry_bytes,
            defaults::INGRESS_MAX_ENTRY_BYTES,
        ),
        max_len: ctx.positive(&at.key("max_len"), raw.max_len, defaults::INGRESS_MAX_LEN),
        reply_retention: ctx.positive_duration(
            &at.key("reply_retention"),
            raw.reply_retention.as_deref(),
            defaults::INGRESS_REPLY_RETENTION,
        ),
        consumer_expiry,
        abandoned_group_after: ctx.positive_duration(
            &at.key("abandoned_group_after"),
            raw.abandoned_group_after.as_deref(),
            defaults::INGRESS_ABANDONED_GROUP_AFTER,
        ),
        auth: ingress_auth(ctx, &at.key("auth"), &raw.auth),
    }
}

fn ingress_auth(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawIngressAuth) -> IngressAuth {
    match raw.mode.as_deref().map(str::trim) {
        None | Some("none") => {
            ctx.only_with(
                &at.key("max_expiry"),
                raw.max_expiry.is_some(),
                "mode = \"hmac\"",
            );
            ctx.only_with(&at.key("groups"), !raw.groups.is_empty(), "mode = \"hmac\"");
            IngressAuth::None
        }
        Some("hmac") => {
            let max_expiry = ctx.positive_duration(
                &at.key("max_expiry"),
                raw.max_expiry.as_deref(),
                defaults::INGRESS_AUTH_MAX_EXPIRY,
            );
            if raw.groups.is_empty() {
                ctx.error(
                    &at.key("groups"),
                    "mode = \"hmac\" needs [ingress.auth.groups.GROUP] secret_env = \"VAR\" for each producing group",
                );
            }
            let mut secrets = BTreeMap::new();
            for (group, entry) in &raw.groups {
                let path = at.key("groups").key(group);
                ctx.check_name(&path, group);
                if group == RESERVED_GROUP {
                    ctx.error(&path, format!("the group \"{RESERVED_GROUP}\" is reserved for crons: no producer publishes for it"));
                }
                match ctx.required(&path.key("secret_env"), entry.secret_env.as_deref()) {
                    // Never echo the value: it may be a secret pasted in the wrong place.
                    Some(var) if !is_env_var_name(var) => ctx.error(
                        &path.key("secret_env"),
                        "must be the NAME of the environment variable holding the secret (letters, digits and \"_\"), never the secret itself",
                    ),
                    Some(var) => {
                        secrets.insert(group.clone(), var.to_owned());
                    }
                    None => {}
                }
            }
            IngressAuth::Hmac {
                max_expiry,
                secrets,
            }
        }
        Some(_) => {
            ctx.error(&at.key("mode"), "must be \"none\" or \"hmac\"");
            IngressAuth::None
        }
    }
}
