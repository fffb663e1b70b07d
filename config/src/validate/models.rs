//! Validation of `[models.X]`, `[agents.X]` and `[tools.X]`.

use std::path::Path;

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawAgent, RawBudget, RawConfig, RawModel, RawTool};
use crate::settings::{AgentSettings, BudgetSettings, ModelSettings, Provider, ToolSettings};

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
            for (key, present) in [
                ("script", raw.script.is_some()),
                ("cassette", raw.cassette.is_some()),
                ("latency", raw.latency.is_some()),
            ] {
                ctx.only_with(&at.key(key), present, "provider = \"scripted\"");
            }
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
                record: path(ctx, &at.key("record"), raw.record.as_deref(), base_dir),
            }
        }
        Some(_scripted) => {
            for (key, present) in [
                ("base_url", raw.base_url.is_some()),
                ("model", raw.model.is_some()),
                ("api_key_env", raw.api_key_env.is_some()),
                ("record", raw.record.is_some()),
            ] {
                ctx.only_with(&at.key(key), present, "provider = \"openai\"");
            }
            if raw.script.is_some() && raw.cassette.is_some() {
                ctx.error(
                    &at.key("cassette"),
                    "a scripted model replays either a cassette or a script, not both",
                );
            }
            Provider::Scripted {
                script: path(ctx, &at.key("script"), raw.script.as_deref(), base_dir),
                cassette: path(ctx, &at.key("cassette"), raw.cassette.as_deref(), base_dir),
                latency: ctx.duration(
                    &at.key("latency"),
                    raw.latency.as_deref(),
                    defaults::SCRIPTED_LATENCY,
                ),
            }
        }
        None => Provider::Scripted {
            script: None,
            cassette: None,
            latency: defaults::SCRIPTED_LATENCY,
        },
    };
    let initial_backoff = ctx.positive_duration(
        &at.key("initial_backoff"),
        raw.initial_backoff.as_deref(),
        defaults::MODEL_INITIAL_BACKOFF,
    );
    let max_backoff = ctx.positive_duration(
        &at.key("max_backoff"),
        raw.max_backoff.as_deref(),
        defaults::MODEL_MAX_BACKOFF,
    );
    if initial_backoff > max_backoff {
        ctx.error(
            &at.key("initial_backoff"),
            format!("must not exceed max_backoff ({max_backoff:?})"),
        );
    }
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
        initial_backoff,
        max_backoff,
        input_cost_per_million: ctx.non_negative(
            &at.key("input_cost_per_million"),
            raw.input_cost_per_million,
            defaults::MODEL_COST_PER_MILLION,
        ),
        output_cost_per_million: ctx.non_negative(
            &at.key("output_cost_per_million"),
            raw.output_cost_per_million,
            defaults::MODEL_COST_PER_MILLION,
        ),
        max_response_bytes: ctx.positive_at_most(
            &at.key("max_response_bytes"),
            raw.max_response_bytes,
            defaults::MODEL_MAX_RESPONSE_BYTES,
            defaults::MODEL_MAX_RESPONSE_BYTES_LIMIT,
        ),
    }
}

/// A file path, relative ones resolved against the config file's directory.
fn path(
    ctx: &mut Ctx<'_>,
    at: &KeyPath,
    value: Option<&str>,
    base_dir: &Path,
) -> Option<std::path::PathBuf> {
    let value = value?;
    if value.trim().is_empty() {
        ctx.error(at, "must be a file path");
        return None;
    }
    Some(base_dir.join(value))
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(super) fn is_env_var_name(name: &str) -> bool {
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
        max_tool_calls: ctx.positive_at_most(
            &at.key("max_tool_calls"),
            raw.max_tool_calls,
            defaults::AGENT_MAX_TOOL_CALLS,
            defaults::AGENT_MAX_TOOL_CALLS_LIMIT,
        ),
        tool_concurrency: ctx.positive_at_most(
            &at.key("tool_concurrency"),
            raw.tool_concurrency,
            defaults::AGENT_TOOL_CONCURRENCY,
            defaults::AGENT_TOOL_CONCURRENCY_LIMIT,
        ),
        memory: raw
            .memory
            .as_ref()
            .map(|memory| super::rag::memory(ctx, &at.key("memory"), memory)),
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
        requires_approval: raw
            .requires_approval
            .unwrap_or(defaults::TOOL_REQUIRES_APPROVAL),
        options: raw.options.clone().unwrap_or_default(),
    }
}

/// `[budgets.GROUP]`: at least one limit; a cost is a number >= 0.
pub(super) fn budget(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawBudget) -> BudgetSettings {
    if raw.tokens_per_day.is_none() && raw.cost_per_day.is_none() {
        ctx.error(at, "a budget needs tokens_per_day, cost_per_day or both");
    }
    BudgetSettings {
        tokens_per_day: raw.tokens_per_day,
        cost_per_day: raw
            .cost_per_day
            .map(|cost| ctx.non_negative(&at.key("cost_per_day"), Some(cost), 0.0)),
    }
}

#[cfg(test)]
mod model_tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::{load_str, Provider};

    /// The diagnostics of `toml` (origin `conf/m.toml`), one per line.
    fn diagnostics(toml: &str) -> Vec<String> {
        match load_str(toml, "conf/m.toml", &[]) {
            Ok(_) => Vec::new(),
            Err(err) => err.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn record_cassette_and_backoff_keys() {
        assert_eq!(
            diagnostics(
                "[models.o]\nprovider = \"openai\"\nmodel = \"m\"\ncassette = \"c.jsonl\"\ninitial_backoff = \"2s\"\nmax_backoff = \"1s\"\n[models.s]\nprovider = \"scripted\"\nrecord = \"r.jsonl\"\nscript = \"rules.toml\"\ncassette = \"c.jsonl\"\n"
            ),
            [
                "conf/m.toml:4:12: models.o.cassette: only used with provider = \"scripted\"",
                "conf/m.toml:5:19: models.o.initial_backoff: must not exceed max_backoff (1s)",
                "conf/m.toml:9:10: models.s.record: only used with provider = \"openai\"",
                "conf/m.toml:11:12: models.s.cassette: a scripted model replays either a cassette or a script, not both",
            ]
        );
        let config = load_str(
            "[models.o]\nprovider = \"openai\"\nmodel = \"m\"\nrecord = \"run.jsonl\"\ninput_cost_per_million = 0.15\nmax_backoff = \"2s\"\n[models.s]\nprovider = \"scripted\"\ncassette = \"run.jsonl\"\n",
            "conf/m.toml",
            &[],
        );
        let config = match config {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let openai = &config.models["o"];
        assert!(matches!(
            &openai.provider,
            Provider::Openai { record: Some(path), .. } if path.as_path() == Path::new("conf/run.jsonl")
        ));
        assert_eq!(openai.input_cost_per_million, 0.15);
        assert_eq!(openai.output_cost_per_million, 0.0);
        assert_eq!(openai.initial_backoff, Duration::from_millis(500));
        assert_eq!(openai.max_backoff, Duration::from_secs(2));
        assert!(matches!(
            &config.models["s"].provider,
            Provider::Scripted { cassette: Some(path), script: None, .. } if path.as_path() == Path::new("conf/run.jsonl")
        ));
    }
}
