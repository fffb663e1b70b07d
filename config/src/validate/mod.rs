//! Raw image -> typed settings. Every problem is collected as a `Diagnostic` (validation goes on
//! after the first); a `Config` is only returned when there is none.

mod crons;
mod limits;
mod models;
mod rag;
mod runtime;
mod workflows;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::defaults;
use crate::env::Override;
use crate::error::{Diagnostic, Origin};
use crate::locate::{is_bare_key, KeyPath, Locator};
use crate::raw::RawConfig;
use crate::settings::Config;
use crate::suggest::closest;

/// Validates `raw`; `Err` holds every problem found, in file order.
pub(crate) fn validate(
    raw: &RawConfig,
    ctx: &mut Ctx<'_>,
    env: &[(String, String)],
) -> Result<Config, Vec<Diagnostic>> {
    check_names(ctx, raw);
    let base_dir = Path::new(ctx.origin).parent().unwrap_or(Path::new(""));
    let store = runtime::store(ctx, &raw.store);
    let store_is_redis = matches!(store, crate::StoreSettings::Redis(_));
    let config = Config {
        origin: ctx.origin.to_owned(),
        daemon: runtime::daemon(ctx, &raw.daemon, env),
        store,
        ingress: runtime::ingress(ctx, &raw.ingress),
        models: each(ctx, "models", &raw.models, |ctx, at, model| {
            models::model(ctx, at, model, base_dir)
        }),
        agents: each(ctx, "agents", &raw.agents, |ctx, at, agent| {
            models::agent(ctx, at, agent, raw)
        }),
        tools: each(ctx, "tools", &raw.tools, models::tool),
        limits: each(ctx, "limits", &raw.limits, |ctx, at, limit| {
            limits::limit(ctx, at, limit, store_is_redis)
        }),
        pools: each(ctx, "pools", &raw.pools, limits::pool),
        workflows: raw
            .workflows
            .iter()
            .map(|(name, workflow)| {
                let at = KeyPath::top("workflows").key(name);
                let settings = workflows::workflow(ctx, &at, name, workflow, raw);
                (name.clone(), settings)
            })
            .collect(),
        crons: each(ctx, "crons", &raw.crons, |ctx, at, cron| {
            crons::cron(ctx, at, cron, raw)
        }),
        budgets: each(ctx, "budgets", &raw.budgets, models::budget),
        rag: rag::rag(ctx, &raw.rag, raw),
    };
    workflows::call_keys(ctx, &config.workflows);
    let diagnostics = ctx.take_diagnostics();
    if diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(diagnostics)
    }
}

/// Validates every entry of the section `section`.
fn each<R, T>(
    ctx: &mut Ctx<'_>,
    section: &str,
    entries: &BTreeMap<String, R>,
    mut one: impl FnMut(&mut Ctx<'_>, &KeyPath, &R) -> T,
) -> BTreeMap<String, T> {
    let at = KeyPath::top(section);
    entries
        .iter()
        .map(|(name, raw)| (name.clone(), one(ctx, &at.key(name), raw)))
        .collect()
}

/// Names of models, agents, tools, limits, pools, workflows and crons are bare keys.
fn check_names(ctx: &mut Ctx<'_>, raw: &RawConfig) {
    let sections: [(&str, Vec<&String>); 8] = [
        ("models", raw.models.keys().collect()),
        ("agents", raw.agents.keys().collect()),
        ("tools", raw.tools.keys().collect()),
        ("limits", raw.limits.keys().collect()),
        ("pools", raw.pools.keys().collect()),
        ("workflows", raw.workflows.keys().collect()),
        ("crons", raw.crons.keys().collect()),
        ("budgets", raw.budgets.keys().collect()),
    ];
    for (section, names) in sections {
        for name in names {
            ctx.check_name(&KeyPath::top(section).key(name), name);
        }
    }
}

/// `"a" or "b"` / `one of "a", "b", "c"`.
pub(crate) fn one_of(valid: &[&str]) -> String {
    let quoted: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// Collects diagnostics and knows where each key path comes from (file position or
/// environment variable).
pub(crate) struct Ctx<'a> {
    origin: &'a str,
    locator: &'a Locator<'a>,
    overrides: &'a [Override],
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        origin: &'a str,
        locator: &'a Locator<'a>,
        overrides: &'a [Override],
    ) -> Self {
        Self {
            origin,
            locator,
            overrides,
            diagnostics: Vec::new(),
        }
    }

    /// The diagnostics so far, environment first, then in file order.
    pub(crate) fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        let mut diagnostics = std::mem::take(&mut self.diagnostics);
        diagnostics.sort_by_key(|d| match &d.origin {
            Origin::Env { .. } => (0, None),
            Origin::File {
                location: Some(at), ..
            } => (1, Some(*at)),
            Origin::File { location: None, .. } => (2, None),
        });
        diagnostics
    }

    /// The environment variable that set `path` (or a table above it), else its file position.
    fn origin_of(&self, path: &KeyPath) -> Origin {
        match self
            .overrides
            .iter()
            .rev()
            .find(|o| path.starts_with(&o.path))
        {
            Some(over) => Origin::Env {
                var: over.var.clone(),
            },
            None => Origin::File {
                file: self.origin.to_owned(),
                location: self.locator.locate_nearest(path.segs()),
            },
        }
    }

    pub(crate) fn report(
        &mut self,
        path: &KeyPath,
        message: impl Into<String>,
        suggestion: Option<String>,
    ) {
        let diagnostic = Diagnostic {
            origin: self.origin_of(path),
            key: path.to_string(),
            message: message.into(),
            suggestion,
        };
        self.diagnostics.push(diagnostic);
    }

    pub(crate) fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.report(path, message, None);
    }

    pub(crate) fn missing(&mut self, path: &KeyPath) {
        self.error(path, "required key is missing");
    }

    /// `value`, reporting it missing when `None`.
    pub(crate) fn required<T>(&mut self, path: &KeyPath, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.missing(path);
        }
        value
    }

    /// Reports a key given where it has no effect.
    pub(crate) fn only_with(&mut self, path: &KeyPath, present: bool, condition: &str) {
        if present {
            self.error(path, format!("only used with {condition}"));
        }
    }

    pub(crate) fn check_name(&mut self, path: &KeyPath, name: &str) {
        if !is_bare_key(name) {
            self.error(
                path,
                format!("invalid name \"{name}\": use only letters, digits, \"_\" and \"-\""),
            );
        }
    }

    pub(crate) fn non_empty(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        default: &str,
    ) -> String {
        match value {
            Some(value) if value.trim().is_empty() => {
                self.error(path, "must not be empty");
                value.to_owned()
            }
            Some(value) => value.to_owned(),
            None => default.to_owned(),
        }
    }

    /// `value`, reporting zero.
    fn not_zero<T>(&mut self, path: &KeyPath, value: T) -> T
    where
        T: Copy + PartialEq + Default,
    {
        if value == T::default() {
            self.error(path, "must be greater than 0");
        }
        value
    }

    /// `value`, reporting it above `max`.
    fn not_above<T>(&mut self, path: &KeyPath, value: T, max: u64) -> T
    where
        T: Copy + TryInto<u64>,
    {
        if value.try_into().map_or(true, |n| n > max) {
            self.error(path, format!("must be at most {max}"));
        }
        value
    }

    /// An integer (or `default`) from 1 to [`defaults::MAX_COUNT`].
    pub(crate) fn positive<T>(&mut self, path: &KeyPath, value: Option<T>, default: T) -> T
    where
        T: Copy + PartialEq + Default + TryInto<u64>,
    {
        self.positive_at_most(path, value, default, defaults::MAX_COUNT)
    }

    /// An integer (or `default`) from 1 to `max`.
    pub(crate) fn positive_at_most<T>(
        &mut self,
        path: &KeyPath,
        value: Option<T>,
        default: T,
        max: u64,
    ) -> T
    where
        T: Copy + PartialEq + Default + TryInto<u64>,
    {
        match value {
            Some(value) if value == T::default() => self.not_zero(path, value),
            Some(value) => self.not_above(path, value, max),
            None => default,
        }
    }

    /// An integer (or `default`) from 0 to `max`.
    pub(crate) fn at_most<T>(&mut self, path: &KeyPath, value: Option<T>, default: T, max: u64) -> T
    where
        T: Copy + TryInto<u64>,
    {
        match value {
            Some(value) => self.not_above(path, value, max),
            None => default,
        }
    }

    /// A required integer from 1 to [`defaults::MAX_COUNT`].
    pub(crate) fn required_positive<T>(&mut self, path: &KeyPath, value: Option<T>) -> T
    where
        T: Copy + PartialEq + Default + TryInto<u64>,
    {
        match self.required(path, value) {
            Some(value) => self.positive(path, Some(value), value),
            None => T::default(),
        }
    }

    /// One of `valid`, `default` when absent (`None` default: required). `None` when missing or
    /// unknown (reported).
    pub(crate) fn choice(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        valid: &[&'static str],
        default: Option<&'static str>,
    ) -> Option<&'static str> {
        let Some(value) = value else {
            if default.is_none() {
                self.error(
                    path,
                    format!("required key is missing: expected {}", one_of(valid)),
                );
            }
            return default;
        };
        let found = valid.iter().find(|v| **v == value).copied();
        if found.is_none() {
            self.report(
                path,
                format!("unknown value \"{value}\": expected {}", one_of(valid)),
                closest(value, valid.iter().copied()),
            );
        }
        found
    }

    /// Checks that `name` is a key of `names` (the `[section.X]` entries); `what` is the kind of
    /// entry, e.g. `"model"`.
    pub(crate) fn reference<T>(
        &mut self,
        path: &KeyPath,
        what: &str,
        name: &str,
        names: &BTreeMap<String, T>,
    ) {
        if !names.contains_key(name) {
            self.report(
                path,
                format!("no {what} named \"{name}\""),
                closest(name, names.keys().map(String::as_str)),
            );
        }
    }

    /// Checks a list of references: each resolves, none is repeated.
    pub(crate) fn references<T>(
        &mut self,
        path: &KeyPath,
        what: &str,
        list: &[String],
        names: &BTreeMap<String, T>,
    ) {
        for (index, name) in list.iter().enumerate() {
            let at = path.index(index);
            if list[..index].contains(name) {
                self.error(&at, format!("\"{name}\" is listed twice"));
            } else {
                self.reference(&at, what, name, names);
            }
        }
    }

    /// Parses a duration of at most [`defaults::MAX_DURATION`]; `None` when absent or invalid
    /// (reported).
    pub(crate) fn parse_duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
    ) -> Option<Duration> {
        let value = value?;
        match humantime::parse_duration(value.trim()) {
            Ok(duration) if duration > defaults::MAX_DURATION => {
                self.error(
                    path,
                    format!(
                        "duration \"{value}\" is too long: at most {}",
                        humantime::format_duration(defaults::MAX_DURATION)
                    ),
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "invalid duration \"{value}\": write a number and a unit, e.g. \"250ms\", \"30s\", \"1h30m\""
                    ),
                );
                None
            }
        }
    }

    /// A duration, `default` when absent (or invalid: reported).
    pub(crate) fn duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        self.parse_duration(path, value).unwrap_or(default)
    }

    /// A duration greater than zero, `default` when absent.
    pub(crate) fn positive_duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match self.parse_duration(path, value) {
            Some(duration) => self.not_zero(path, duration),
            None => default,
        }
    }

    /// An optional duration greater than zero.
    pub(crate) fn optional_positive_duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
    ) -> Option<Duration> {
        let duration = self.parse_duration(path, value)?;
        Some(self.not_zero(path, duration))
    }

    /// A required duration greater than zero.
    pub(crate) fn required_duration(&mut self, path: &KeyPath, value: Option<&str>) -> Duration {
        match self.required(path, value) {
            Some(value) => self.positive_duration(path, Some(value), Duration::ZERO),
            None => Duration::ZERO,
        }
    }

    /// A finite number >= 0.
    pub(crate) fn non_negative(&mut self, path: &KeyPath, value: Option<f64>, default: f64) -> f64 {
        match value {
            Some(value) if !value.is_finite() || value < 0.0 => {
                self.error(path, "must be a number >= 0");
                value
            }
            Some(value) => value,
            None => default,
        }
    }
}

#[cfg(test)]
mod tests;
