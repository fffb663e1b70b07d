//! Validation of `[models.X]`, `[agents.X]` and `[tools.X]`.

use std::path::Path;

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawAgent, RawConfig, RawModel, RawTool};
use crate::settings::{AgentSettings, ModelSettings, Provider, ToolSettings};

pub(super) fn model(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawModel,
    base_dir: &Path,
) -> ModelSettings {
    let provider = match ctx.choice(
        &at.key("provider"),
        raw.provider.as_deref(),
        &["openai", "scripted"],
        None,
    ) {
        Some("openai") => {
            ctx.only_with(
                &at.key("script"),
                raw.script.is_some(),
                "provider = \"scripted\"",
            );
            ctx.only_with(
                &at.key("latency"),
                raw.latency.is_some(),
                "provider = \"scripted\"",
            );
            let base_url = match raw.base_url.as_deref() {
                Some(url) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        ctx.error(
                            &at.key("base_url"),
                            format!("\"{url}\" is not an HTTP URL: it must start with http:// or https://"),
                        );
                    }
                    url.to_owned()
                }
                None => defaults::OPENAI_BASE_URL.to_owned(),
            };
            let model = match ctx.required(&at.key("model"), raw.model.as_deref()) {
                Some(model) => ctx.non_empty(&at.key("model"), Some(model), ""),
                None => String::new(),
            };
            if let Some(var) = raw.api_key_env.as_deref() {
                // Never echo the value: it may be a key pasted in the wrong place.
                if !is_env_var_name(var) {
                    ctx.error(
                        &at.key("api_key_env"),
                        "must be the NAME of the environment variable holding the key (letters, digits and \"_\", e.g. \"OPENAI_API_KEY\"), never the key itself",
                    );
                }
            }
            Provider::Openai {
                base_url,
                model,
                api_key_env: raw.api_key_env.clone(),
            }
        }
        Some(_scripted) => {
            for (key, present) in [
                ("base_url", raw.base_url.is_some()),
                ("model", raw.model.is_some()),
                ("api_key_env", raw.api_key_env.is_some()),
            ] {
                ctx.only_with(&at.key(key), present, "provider = \"openai\"");
            }
            Provider::Scripted {
                script: raw.script.as_deref().map(|script| base_dir.join(script)),
                latency: ctx.duration(
                    &at.key("latency"),
                    raw.latency.as_deref(),
                    defaults::SCRIPTED_LATENCY,
                ),
            }
        }
        None => Provider::Scripted {
            script: None,
            latency: defaults::SCRIPTED_LATENCY,
        },
    };
    ModelSettings {
        provider,
        connect_timeout: ctx.positive_duration(
            &at.key("connect_timeout"),
            raw.connect_timeout.as_deref(),
            defaults::MODEL_CONNECT_TIMEOUT,
        ),
        idle_timeout: ctx.positive_duration(
            &at.key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            defaults::MODEL_IDLE_TIMEOUT,
        ),
        max_retries: raw.max_retries.unwrap_or(defaults::MODEL_MAX_RETRIES),
        max_retry_time: ctx.duration(
            &at.key("max_retry_time"),
            raw.max_retry_time.as_deref(),
            defaults::MODEL_MAX_RETRY_TIME,
        ),
        input_cost_per_1k: ctx.non_negative(
            &at.key("input_cost_per_1k"),
            raw.input_cost_per_1k,
            defaults::MODEL_COST_PER_1K,
        ),
        output_cost_per_1k: ctx.non_negative(
            &at.key("output_cost_per_1k"),
            raw.output_cost_per_1k,
            defaults::MODEL_COST_PER_1K,
        ),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn agent(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    raw: &RawAgent,
    config: &RawConfig,
) -> AgentSettings {
    let model = ctx
        .required(&at.key("model"), raw.model.clone())
        .unwrap_or_default();
    if raw.model.is_some() {
        ctx.reference(&at.key("model"), "model", &model, &config.models);
    }
    let tools = raw.tools.clone().unwrap_or_default();
    ctx.references(&at.key("tools"), "tool", &tools, &config.tools);
    let limits = raw.limits.clone().unwrap_or_default();
    ctx.references(&at.key("limits"), "limit", &limits, &config.limits);
    if let Some(pool) = &raw.pool {
        ctx.reference(&at.key("pool"), "pool", pool, &config.pools);
    }
    let temperature = raw.temperature.unwrap_or(defaults::AGENT_TEMPERATURE);
    if !(0.0..=2.0).contains(&temperature) {
        ctx.error(&at.key("temperature"), "must be between 0 and 2");
    }
    if raw.max_tokens == Some(0) {
        ctx.error(&at.key("max_tokens"), "must be greater than 0");
    }
    AgentSettings {
        model,
        instructions: raw
            .instructions
            .clone()
            .unwrap_or_else(|| defaults::AGENT_INSTRUCTIONS.to_owned()),
        tools,
        limits,
        pool: raw.pool.clone(),
        max_steps: ctx.positive(
            &at.key("max_steps"),
            raw.max_steps,
            defaults::AGENT_MAX_STEPS,
        ),
        temperature,
        max_tokens: raw.max_tokens,
        context_messages: ctx.positive(
            &at.key("context_messages"),
            raw.context_messages,
            defaults::AGENT_CONTEXT_MESSAGES,
        ),
    }
}

pub(super) fn tool(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawTool) -> ToolSettings {
    let kind = match ctx.required(&at.key("kind"), raw.kind.as_deref()) {
        Some(kind) => ctx.non_empty(&at.key("kind"), Some(kind), ""),
        None => String::new(),
    };
    ToolSettings {
        kind,
        timeout: ctx.positive_duration(
            &at.key("timeout"),
            raw.timeout.as_deref(),
            defaults::TOOL_TIMEOUT,
        ),
        options: raw.options.clone().unwrap_or_default(),
    }
}
