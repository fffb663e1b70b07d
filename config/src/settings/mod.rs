//! `Config`: the validated, typed settings, one type per component, and its human summary.

mod agent;
mod budget;
mod cron;
mod daemon;
mod ingress;
mod limit;
mod model;
mod pool;
mod rag;
mod store;
mod tool;
mod workflow;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub use agent::AgentSettings;
pub use budget::BudgetSettings;
pub use cron::{CronSettings, CronTarget, Schedule, SYSTEM_GROUP};
pub(crate) use daemon::default_name;
pub use daemon::DaemonSettings;
pub use ingress::{IngressAuth, IngressSettings};
pub use limit::{LimitBackend, LimitKey, LimitKind, LimitSettings, LimitUnit, OnStoreError};
pub use model::{ModelSettings, Provider};
pub use pool::PoolSettings;
pub use rag::{IndexKind, MemorySettings, RagSettings, SearchType};
pub(crate) use store::redact_url;
pub use store::{RedisSettings, StoreSettings};
pub use tool::ToolSettings;
pub use workflow::{RouteTarget, StepKind, StepSettings, WorkflowSettings, MAX_CALL_KEY};

/// A validated configuration: every reference between entries resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from (file name, or `<embedded>`).
    pub origin: String,
    /// `[daemon]`
    pub daemon: DaemonSettings,
    /// `[store]`
    pub store: StoreSettings,
    /// `[ingress]`
    pub ingress: IngressSettings,
    /// `[models.X]` by name.
    pub models: BTreeMap<String, ModelSettings>,
    /// `[agents.X]` by name.
    pub agents: BTreeMap<String, AgentSettings>,
    /// `[tools.X]` by name.
    pub tools: BTreeMap<String, ToolSettings>,
    /// `[limits.X]` by name.
    pub limits: BTreeMap<String, LimitSettings>,
    /// `[pools.X]` by name.
    pub pools: BTreeMap<String, PoolSettings>,
    /// `[workflows.X]` by name.
    pub workflows: BTreeMap<String, WorkflowSettings>,
    /// `[crons.X]` by name.
    pub crons: BTreeMap<String, CronSettings>,
    /// `[budgets.GROUP]` by group.
    pub budgets: BTreeMap<String, BudgetSettings>,
    /// `[rag]`
    pub rag: RagSettings,
}

impl Config {
    /// A human summary for `troupe check`: store, counts and names of every section. Never
    /// contains a secret (Redis passwords are redacted; API keys are only named). One line per
    /// section, no trailing newline.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let daemon = &self.daemon;
        let workers = match daemon.workers {
            0 => "one per CPU".to_owned(),
            n => n.to_string(),
        };
        line(
            &mut out,
            format_args!(
                "daemon: {} (workers: {workers}, mailbox: {}, shutdown grace: {})",
                daemon.name,
                daemon.mailbox_capacity,
                human(daemon.shutdown_grace)
            ),
        );
        match &self.store {
            StoreSettings::Memory => line(&mut out, format_args!("store: memory")),
            StoreSettings::Redis(redis) => line(
                &mut out,
                format_args!(
                    "store: redis {} (prefix {:?})",
                    redis.redacted_url(),
                    redis.prefix
                ),
            ),
        }
        // The ingress streams by the Redis keys clients use (the store prefix added).
        let p = match &self.store {
            StoreSettings::Memory => "",
            StoreSettings::Redis(redis) => redis.prefix.as_str(),
        };
        let ingress = &self.ingress;
        line(
            &mut out,
            format_args!(
                "ingress: {p}{} -> {p}{} (group {}, dead letters {p}{})",
                ingress.stream, ingress.results, ingress.group, ingress.dead
            ),
        );
        if let IngressAuth::Hmac { secrets, .. } = &ingress.auth {
            let groups: Vec<&str> = secrets.keys().map(String::as_str).collect();
            line(
                &mut out,
                format_args!("ingress auth: hmac (groups {})", groups.join(", ")),
            );
        }
        section(&mut out, "models", &self.models, |model| {
            match &model.provider {
                Provider::Openai { model, .. } => format!("openai {model}"),
                Provider::Scripted { .. } => "scripted".to_owned(),
            }
        });
        section(&mut out, "agents", &self.agents, |agent| {
            format!("model {}", agent.model)
        });
        section(&mut out, "tools", &self.tools, |tool| tool.kind.clone());
        section(&mut out, "limits", &self.limits, |limit| {
            let kind = match limit.kind {
                LimitKind::TokenBucket { .. } => "token_bucket",
                LimitKind::FixedWindow { .. } => "fixed_window",
            };
            format!("{kind} {}/{}", limit.rate, human(limit.period))
        });
        section(&mut out, "pools", &self.pools, |pool| {
            format!("parallelism {}", pool.max_parallelism)
        });
        section(&mut out, "workflows", &self.workflows, |workflow| {
            let steps = workflow.steps.len();
            format!("{steps} step{}", if steps == 1 { "" } else { "s" })
        });
        section(&mut out, "crons", &self.crons, |cron| {
            let when = match &cron.schedule {
                Schedule::Cron(spec) => format!("{spec:?}"),
                Schedule::Every(every) => format!("every {}", human(*every)),
            };
            let target = match &cron.target {
                CronTarget::Agent(agent) => format!("agent {agent}"),
                CronTarget::Workflow(workflow) => format!("workflow {workflow}"),
            };
            format!("{when} -> {target}")
        });
        out.truncate(out.trim_end().len());
        out
    }
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{args}");
}

/// `name (count): a (detail), b (detail)` or `name (0)`.
fn section<T>(
    out: &mut String,
    name: &str,
    entries: &BTreeMap<String, T>,
    detail: impl Fn(&T) -> String,
) {
    let list: Vec<String> = entries
        .iter()
        .map(|(key, entry)| format!("{key} ({})", detail(entry)))
        .collect();
    if list.is_empty() {
        line(out, format_args!("{name} (0)"));
    } else {
        line(
            out,
            format_args!("{name} ({}): {}", list.len(), list.join(", ")),
        );
    }
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    #[test]
    fn summary_names_everything_and_redacts_the_password() {
        let text = r#"
[daemon]
name = "troupe-a"
workers = 2

[store]
backend = "redis"
url = "redis://app:hunter2@db:6379/0"

[models.fast]
provider = "openai"
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"

[models.scripted]
provider = "scripted"

[agents.writer]
model = "fast"

[agents.echo]
model = "scripted"

[tools.calculator]
kind = "calculator"

[limits.llm]
kind = "token_bucket"
rate = 60
period = "1m"

[pools.llm]

[[workflows.w.steps]]
name = "one"
kind = "agent"
agent = "writer"

[crons.poll]
every = "30s"
workflow = "w"
"#;
        let config = match load_str(text, "t.toml", &[]) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let summary = config.summary();
        let expected = "\
daemon: troupe-a (workers: 2, mailbox: 256, shutdown grace: 10s)
store: redis redis://app:***@db:6379/0 (prefix \"troupe:\")
ingress: troupe:tasks -> troupe:results (group troupe, dead letters troupe:dead)
models (2): fast (openai gpt-4o-mini), scripted (scripted)
agents (2): echo (model scripted), writer (model fast)
tools (1): calculator (calculator)
limits (1): llm (token_bucket 60/1m)
pools (1): llm (parallelism 8)
workflows (1): w (1 step)
crons (1): poll (every 30s -> workflow w)";
        assert_eq!(summary, expected);
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
