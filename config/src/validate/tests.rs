//! Data-driven checks of the whole pipeline: text (+ environment) -> diagnostics or settings.

use std::time::Duration;

use crate::{
    load_str, CronTarget, LimitBackend, LimitKey, LimitKind, LimitUnit, OnStoreError, Provider,
    RouteTarget, Schedule, StepKind, StoreSettings,
};

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Strips the newline after `r#"` so that line 1 is the first line written.
fn text(text: &str) -> &str {
    text.strip_prefix('\n').unwrap_or(text)
}

/// Loads `toml` (origin `bad.toml`) with `vars` and compares the diagnostics, one per line.
fn check_env(toml: &str, vars: &[(&str, &str)], expected: &[&str]) {
    let got: Vec<String> = match load_str(text(toml), "bad.toml", &env(vars)) {
        Ok(_) => Vec::new(),
        Err(err) => err.diagnostics().iter().map(ToString::to_string).collect(),
    };
    assert_eq!(got, expected, "\n--- input:\n{}", text(toml));
}

fn check(toml: &str, expected: &[&str]) {
    check_env(toml, &[], expected);
}

fn ok(toml: &str) -> crate::Config {
    match load_str(text(toml), "ok.toml", &[]) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

const MODEL: &str = r#"
[models.fast]
provider = "scripted"
"#;

#[test]
fn typo_in_model_reference_points_at_the_value() {
    check(
        r#"
[models.fast]
provider = "scripted"

[agents.researcher]
model = "fst"
"#,
        &[r#"bad.toml:5:9: agents.researcher.model: no model named "fst" (did you mean "fast"?)"#],
    );
}

#[test]
fn no_suggestion_when_nothing_is_close() {
    check(
        &format!("{MODEL}[agents.a]\nmodel = \"zzzzzz\"\n"),
        &[r#"bad.toml:4:9: agents.a.model: no model named "zzzzzz""#],
    );
}

#[test]
fn unknown_keys_are_rejected_with_location_and_suggestion() {
    check(
        r#"
[models.fast]
provider = "scripted"

[agents.researcher]
modle = "fast"
"#,
        &[r#"bad.toml:5:1: agents.researcher.modle: unknown key "modle" (did you mean "model"?)"#],
    );
    check(
        "[agent.x]\nmodel = \"m\"\n",
        &[r#"bad.toml:1:2: agent: unknown key "agent" (did you mean "agents"?)"#],
    );
    check(
        "[daemon]\nzzz = 1\n",
        &[concat!(
            r#"bad.toml:2:1: daemon.zzz: unknown key "zzz": expected one of "name", "shutdown_grace", "#,
            r#""passivate_after", "thread_retention", "run_retention", "mailbox_capacity", "max_restarts", "restart_window", "workers", "max_runs", "max_runs_per_group", "metrics_addr""#
        )],
    );
}

#[test]
fn an_api_key_value_is_refused_in_favour_of_its_variable_name() {
    check(
        r#"
[models.gpt]
provider = "openai"
model = "gpt-4o-mini"
api_key = "sk-secret"
"#,
        &[
            r#"bad.toml:4:1: models.gpt.api_key: unknown key "api_key": never write a key in the file, name the environment variable holding it (did you mean "api_key_env"?)"#,
        ],
    );
    // A key pasted into api_key_env is refused without being echoed.
    let toml = "[models.gpt]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"sk-abc123\"\n";
    check(
        toml,
        &[
            r#"bad.toml:4:15: models.gpt.api_key_env: must be the NAME of the environment variable holding the key (letters, digits and "_", e.g. "OPENAI_API_KEY"), never the key itself"#,
        ],
    );
}

#[test]
fn producer_auth_names_a_variable_per_group_and_never_the_system_group() {
    let config = ok(r#"
[ingress.auth]
mode = "hmac"
max_expiry = "5m"

[ingress.auth.groups.acme]
secret_env = "ACME_TASK_SECRET"
"#);
    assert_eq!(
        config.ingress.auth,
        crate::IngressAuth::Hmac {
            max_expiry: Duration::from_secs(300),
            secrets: [("acme".to_owned(), "ACME_TASK_SECRET".to_owned())].into(),
        }
    );
    check(
        r#"
[ingress.auth]
mode = "hmac"

[ingress.auth.groups.system]
secret_env = "SYSTEM_SECRET"

[ingress.auth.groups.beta]
secret_env = "s3cr3t value!"
"#,
        &[
            r#"bad.toml:4:1: ingress.auth.groups.system: the group "system" is reserved for crons: no producer publishes for it"#,
            r#"bad.toml:8:14: ingress.auth.groups.beta.secret_env: must be the NAME of the environment variable holding the secret (letters, digits and "_"), never the secret itself"#,
        ],
    );
    check(
        r#"
[ingress.auth]
mode = "token"
"#,
        &[r#"bad.toml:2:8: ingress.auth.mode: must be "none" or "hmac""#],
    );
}

#[test]
fn wrong_types_and_syntax_errors_have_positions() {
    check(
        "[daemon]\nmailbox_capacity = \"lots\"\n",
        &[r#"bad.toml:2:20: daemon.mailbox_capacity: invalid type: string "lots", expected usize"#],
    );
    check(
        "[daemon]\nworkers = -1\n",
        &["bad.toml:2:11: daemon.workers: invalid value: integer `-1`, expected usize"],
    );
    check("[daemon\n", &["bad.toml:1:8: unclosed table, expected `]`"]);
    check(
        "[daemon]\nname = \"a\"\nname = \"b\"\n",
        &["bad.toml:3:1: duplicate key"],
    );
}

#[test]
fn bad_durations() {
    check(
        r#"
[daemon]
shutdown_grace = "10 parsecs"
restart_window = "0s"
"#,
        &[
            r#"bad.toml:2:18: daemon.shutdown_grace: invalid duration "10 parsecs": write a number and a unit, e.g. "250ms", "30s", "1h30m""#,
            "bad.toml:3:18: daemon.restart_window: must be greater than 0",
        ],
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    check(
        r#"
[models.gpt]
provider = "openai"

[models.nothing]

[agents.a]

[tools.t]

[limits.l]
kind = "token_bucket"
"#,
        &[
            "bad.toml:1:1: models.gpt.model: required key is missing",
            r#"bad.toml:4:1: models.nothing.provider: required key is missing: expected "openai" or "scripted""#,
            "bad.toml:6:1: agents.a.model: required key is missing",
            "bad.toml:8:1: tools.t.kind: required key is missing",
            "bad.toml:10:1: limits.l.rate: required key is missing",
            "bad.toml:10:1: limits.l.period: required key is missing",
        ],
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    check(
        r#"
[daemon]
mailbox_capacity = 0
metrics_addr = "localhost"

[store]
backend = "rediss"

[models.fast]
provider = "scripted"
model = "gpt"

[agents.a]
model = "fast"
temperature = 3.0
tools = ["calc", "calc"]
pool = "lm"

[pools.llm]
"#,
        &[
            "bad.toml:2:20: daemon.mailbox_capacity: must be greater than 0",
            r#"bad.toml:3:16: daemon.metrics_addr: invalid socket address "localhost": expected IP:port, e.g. "127.0.0.1:9464""#,
            r#"bad.toml:6:11: store.backend: unknown value "rediss": expected "memory" or "redis" (did you mean "redis"?)"#,
            r#"bad.toml:10:9: models.fast.model: only used with provider = "openai""#,
            "bad.toml:14:15: agents.a.temperature: must be between 0 and 2",
            r#"bad.toml:15:10: agents.a.tools[0]: no tool named "calc""#,
            r#"bad.toml:15:18: agents.a.tools[1]: "calc" is listed twice"#,
            r#"bad.toml:16:8: agents.a.pool: no pool named "lm" (did you mean "llm"?)"#,
        ],
    );
}

#[test]
fn agent_references_resolve() {
    let config = ok(r#"
[models.fast]
provider = "scripted"

[tools.calculator]
kind = "calculator"

[limits.llm_requests]
kind = "token_bucket"
rate = 60
period = "1m"

[pools.llm]

[agents.researcher]
model = "fast"
tools = ["calculator"]
limits = ["llm_requests"]
pool = "llm"
max_tokens = 1024
"#);
    let agent = &config.agents["researcher"];
    assert_eq!(agent.tools, ["calculator"]);
    assert_eq!(agent.limits, ["llm_requests"]);
    assert_eq!(agent.pool.as_deref(), Some("llm"));
    assert_eq!(agent.max_tokens, Some(1024));
    assert_eq!(agent.max_steps, 8);
    check(
        &format!("{MODEL}[agents.a]\nmodel = \"fast\"\nlimits = [\"llm_requets\"]\n[limits.llm_requests]\nkind = \"fixed_window\"\nrate = 1\nperiod = \"1s\"\n"),
        &[r#"bad.toml:5:11: agents.a.limits[0]: no limit named "llm_requets" (did you mean "llm_requests"?)"#],
    );
}

#[test]
fn store_settings() {
    check(
        "[store]\nurl = \"redis://h\"\nprefix = \"x:\"\n",
        &[
            r#"bad.toml:2:7: store.url: only used with backend = "redis""#,
            r#"bad.toml:3:10: store.prefix: only used with backend = "redis""#,
        ],
    );
    check(
        "[store]\nbackend = \"redis\"\n",
        &["bad.toml:1:1: store.url: required key is missing"],
    );
    check(
        "[store]\nbackend = \"redis\"\nurl = \"http://u:pw@h\"\n",
        &[
            r#"bad.toml:3:7: store.url: "http://u:***@h" is not a Redis URL: it must start with redis:// or rediss://"#,
        ],
    );
    let config = ok(
        "[store]\nbackend = \"redis\"\nurl = \"rediss://h:6380/2\"\nresponse_timeout = \"250ms\"\n",
    );
    let StoreSettings::Redis(redis) = &config.store else {
        panic!("expected redis, got {:?}", config.store);
    };
    assert_eq!(redis.url, "rediss://h:6380/2");
    assert_eq!(redis.prefix, "troupe:");
    assert_eq!(redis.response_timeout, Duration::from_millis(250));
    assert_eq!(redis.connect_timeout, Duration::from_secs(2));
}

#[test]
fn provider_specific_keys() {
    check(
        r#"
[models.s]
provider = "scripted"
api_key_env = "OPENAI_API_KEY"

[models.o]
provider = "openai"
model = "m"
base_url = "127.0.0.1:8080"
latency = "5ms"
input_cost_per_million = -1
"#,
        &[
            r#"bad.toml:3:15: models.s.api_key_env: only used with provider = "openai""#,
            r#"bad.toml:8:12: models.o.base_url: "127.0.0.1:8080" is not an HTTP URL: it must start with http:// or https://"#,
            r#"bad.toml:9:11: models.o.latency: only used with provider = "scripted""#,
            "bad.toml:10:26: models.o.input_cost_per_million: must be a number >= 0",
        ],
    );
    let config = load_str(
        "[models.o]\nprovider = \"openai\"\nmodel = \"gpt\"\napi_key_env = \"TROUPE_TEST_NO_SUCH_VAR\"\n[models.s]\nprovider = \"scripted\"\nscript = \"rules.toml\"\nlatency = \"20ms\"\n",
        "conf/troupe.toml",
        &[],
    )
    .map_err(|err| err.to_string());
    let config = match config {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let openai = &config.models["o"];
    assert_eq!(
        openai.provider,
        Provider::Openai {
            base_url: "https://api.openai.com/v1".to_owned(),
            model: "gpt".to_owned(),
            api_key_env: Some("TROUPE_TEST_NO_SUCH_VAR".to_owned()),
            record: None,
        }
    );
    assert_eq!(openai.api_key(), None);
    assert_eq!(openai.max_retries, 4);
    assert_eq!(
        config.models["s"].provider,
        Provider::Scripted {
            script: Some("conf/rules.toml".into()),
            cassette: None,
            latency: Duration::from_millis(20),
        }
    );
    assert!(!format!("{config:?}").contains("sk-"));
}

#[test]
fn limits_and_pools() {
    let config = ok(r#"
[store]
backend = "redis"
url = "redis://127.0.0.1:6379/0"

[limits.tb]
kind = "token_bucket"
rate = 60
period = "1m"

[limits.fw]
kind = "fixed_window"
rate = 1000
period = "1h"
start = "2024-01-01T00:00:00Z"
key = "user"
unit = "tokens"
backend = "redis"
shards = 4
on_store_error = "fail_open"
max_wait = "5s"

[pools.p]
max_parallelism = 2
initial_backoff = "1s"
max_backoff = "1m"
"#);
    let tb = &config.limits["tb"];
    assert_eq!(tb.kind, LimitKind::TokenBucket { capacity: 60 });
    assert_eq!(tb.period, Duration::from_secs(60));
    assert_eq!(
        (tb.key, tb.unit, tb.backend),
        (LimitKey::Global, LimitUnit::Requests, LimitBackend::Local)
    );
    assert_eq!(tb.on_store_error, OnStoreError::FailClosed);
    assert_eq!(tb.max_wait, Duration::ZERO);
    let fw = &config.limits["fw"];
    assert_eq!(
        fw.kind,
        LimitKind::FixedWindow {
            start: Some("2024-01-01T00:00:00Z".to_owned())
        }
    );
    assert_eq!(
        (fw.key, fw.unit, fw.backend, fw.shards),
        (LimitKey::User, LimitUnit::Tokens, LimitBackend::Redis, 4)
    );
    assert_eq!(fw.on_store_error, OnStoreError::FailOpen);
    assert_eq!(config.pools["p"].max_parallelism, 2);
    assert_eq!(config.pools["p"].max_attempts, 3);
    assert_eq!(config.pools["p"].retention, Duration::from_secs(86_400));

    check(
        r#"
[limits.l]
kind = "fixed_window"
rate = 0
period = "1m"
capacity = 5
backend = "redis"
key = "users"

[pools.p]
max_attempts = 0
backoff_base = 0.5
initial_backoff = "10s"
max_backoff = "1s"
"#,
        &[
            "bad.toml:3:8: limits.l.rate: must be greater than 0",
            r#"bad.toml:5:12: limits.l.capacity: only used with kind = "token_bucket""#,
            r#"bad.toml:6:11: limits.l.backend: needs store.backend = "redis""#,
            r#"bad.toml:7:7: limits.l.key: unknown value "users": expected one of "global", "group", "user" (did you mean "user"?)"#,
            "bad.toml:10:16: pools.p.max_attempts: must be greater than 0",
            "bad.toml:11:16: pools.p.backoff_base: must be a number >= 1",
            "bad.toml:13:15: pools.p.max_backoff: must not be shorter than initial_backoff",
        ],
    );
}

const AGENTS: &str = r#"[models.m]
provider = "scripted"
[agents.classifier]
model = "m"
[agents.writer]
model = "m"
[agents.tech_writer]
model = "m"
"#;

#[test]
fn workflow_steps_are_typed() {
    let config = ok(&format!(
        r#"{AGENTS}
[pools.llm]

[workflows.research]
description = "research a question"

[[workflows.research.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
input = "{{{{input}}}}"

[[workflows.research.steps]]
name = "draft"
kind = "parallel"
agents = ["writer", "tech_writer"]
max_concurrency = 2
timeout = "30s"
pool = "llm"
retries = 2

[[workflows.research.steps]]
name = "report"
kind = "route"
on = "classify"
routes = {{ technical = "tech_writer", general = "writer" }}
default = "writer"
"#
    ));
    let steps = &config.workflows["research"].steps;
    assert_eq!(steps.len(), 3);
    assert_eq!(
        steps[0].kind,
        StepKind::Agent {
            agent: "classifier".to_owned()
        }
    );
    assert_eq!(steps[0].input.as_deref(), Some("{{input}}"));
    assert_eq!(
        steps[1].kind,
        StepKind::Parallel {
            agents: vec!["writer".to_owned(), "tech_writer".to_owned()],
            max_concurrency: Some(2)
        }
    );
    assert_eq!(steps[1].timeout, Some(Duration::from_secs(30)));
    assert_eq!(steps[1].retries, Some(2));
    let StepKind::Route {
        on,
        routes,
        default,
    } = &steps[2].kind
    else {
        panic!("expected a route step, got {:?}", steps[2].kind);
    };
    assert_eq!(on, "classify");
    assert_eq!(
        routes["technical"],
        RouteTarget::Agent("tech_writer".to_owned())
    );
    assert_eq!(default, &Some(RouteTarget::Agent("writer".to_owned())));
}

#[test]
fn workflow_cross_references() {
    // AGENTS is 8 lines; the workflow starts on line 9.
    check(
        &format!(
            r#"{AGENTS}[workflows.w]
[[workflows.w.steps]]
name = "a"
kind = "route"
on = "b"
routes = {{ x = "writr" }}
[[workflows.w.steps]]
name = "b"
kind = "agent"
agent = "clasifier"
agents = ["writer"]
pool = "nope"
[[workflows.w.steps]]
name = "b"
kind = "route"
on = "clasify"
routes = {{}}
[[workflows.w.steps]]
name = "d"
kind = "lop"
[[workflows.w.steps]]
kind = "parallel"
agents = []

[workflows.empty]
description = "no steps"
"#
        ),
        &[
            r#"bad.toml:13:6: workflows.w.steps[0].on: step "b" does not come before this step; `on` must name an earlier step"#,
            r#"bad.toml:14:16: workflows.w.steps[0].routes.x: no agent or step named "writr" (did you mean "writer"?)"#,
            r#"bad.toml:18:9: workflows.w.steps[1].agent: no agent named "clasifier" (did you mean "classifier"?)"#,
            r#"bad.toml:19:10: workflows.w.steps[1].agents: only used with kind = "parallel""#,
            r#"bad.toml:20:8: workflows.w.steps[1].pool: no pool named "nope""#,
            r#"bad.toml:22:8: workflows.w.steps[2].name: step name "b" is already used by an earlier step"#,
            r#"bad.toml:24:6: workflows.w.steps[2].on: no earlier step named "clasify""#,
            r#"bad.toml:25:10: workflows.w.steps[2].routes: needs at least one route (label = "agent" or label = "step")"#,
            r#"bad.toml:28:8: workflows.w.steps[3].kind: unknown value "lop": expected one of "agent", "parallel", "route", "loop", "sleep", "wait_event", "workflow", "knowledge" (did you mean "loop"?)"#,
            "bad.toml:29:1: workflows.w.steps[4].name: required key is missing",
            "bad.toml:31:10: workflows.w.steps[4].agents: needs at least one agent",
            "bad.toml:33:1: workflows.empty.steps: a workflow needs at least one step",
        ],
    );
}

#[test]
fn route_on_suggests_an_earlier_step() {
    check(
        &format!(
            r#"{AGENTS}[[workflows.w.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
[[workflows.w.steps]]
name = "report"
kind = "route"
on = "clasify"
routes = {{ general = "writer" }}
default = "witer"
"#
        ),
        &[
            r#"bad.toml:16:6: workflows.w.steps[1].on: no earlier step named "clasify" (did you mean "classify"?)"#,
            r#"bad.toml:18:11: workflows.w.steps[1].default: no agent or step named "witer" (did you mean "writer"?)"#,
        ],
    );
}

#[test]
fn crons() {
    let config = ok(&format!(
        r#"{AGENTS}
[[workflows.w.steps]]
name = "one"
kind = "agent"
agent = "writer"

[crons.nightly]
schedule = "0 0 3 * * *"
timezone = "UTC"
workflow = "w"
input = "daily report"

[crons.poll]
every = "30s"
agent = "writer"
"#
    ));
    let nightly = &config.crons["nightly"];
    assert_eq!(nightly.schedule, Schedule::Cron("0 0 3 * * *".to_owned()));
    assert_eq!(nightly.target, CronTarget::Workflow("w".to_owned()));
    assert_eq!(nightly.timezone.as_deref(), Some("UTC"));
    assert_eq!(
        config.crons["poll"].schedule,
        Schedule::Every(Duration::from_secs(30))
    );
    assert_eq!(config.crons["poll"].input, "");

    check(
        &format!(
            r#"{AGENTS}[crons.a]
schedule = "0 3 * *"
agent = "writer"
[crons.b]
schedule = "* * * * *"
every = "1m"
agent = "writer"
workflow = "w"
[crons.c]
[crons.d]
every = "soon"
workflow = "wf"
"#
        ),
        &[
            r#"bad.toml:10:12: crons.a.schedule: invalid cron expression "0 3 * *": 4 fields, expected 5 or 6"#,
            "bad.toml:14:9: crons.b.every: give either schedule or every, not both",
            "bad.toml:16:12: crons.b.workflow: give either agent or workflow, not both",
            "bad.toml:17:1: crons.c.schedule: required key is missing: give schedule (a cron expression) or every (an interval)",
            "bad.toml:17:1: crons.c.agent: required key is missing: give agent or workflow",
            r#"bad.toml:19:9: crons.d.every: invalid duration "soon": write a number and a unit, e.g. "250ms", "30s", "1h30m""#,
            r#"bad.toml:20:12: crons.d.workflow: no workflow named "wf""#,
        ],
    );
}

#[test]
fn names_must_be_bare_keys() {
    check(
        "[models.\"fast model\"]\nprovider = \"scripted\"\n[tools.\"a.b\"]\nkind = \"calculator\"\n",
        &[
            r#"bad.toml:1:1: models."fast model": invalid name "fast model": use only letters, digits, "_" and "-""#,
            r#"bad.toml:3:1: tools."a.b": invalid name "a.b": use only letters, digits, "_" and "-""#,
        ],
    );
}

#[test]
fn environment_overrides_are_applied() {
    let vars = env(&[
        ("TROUPE_STORE__BACKEND", "redis"),
        ("TROUPE_STORE__URL", "redis://app:pw@db:6379/1"),
        ("TROUPE_MODELS__FAST__BASE_URL", "http://127.0.0.1:9/v1"),
        ("TROUPE_DAEMON__SHUTDOWN_GRACE", "5s"),
        ("TROUPE_DAEMON__MAILBOX_CAPACITY", "8"),
        ("TROUPE_CONFIG", "ignored.toml"),
        ("PATH", "/bin"),
    ]);
    let toml = "[models.fast]\nprovider = \"openai\"\nmodel = \"m\"\n";
    let config = match load_str(toml, "t.toml", &vars) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let StoreSettings::Redis(redis) = &config.store else {
        panic!("expected redis, got {:?}", config.store);
    };
    assert_eq!(redis.url, "redis://app:pw@db:6379/1");
    assert_eq!(config.daemon.shutdown_grace, Duration::from_secs(5));
    assert_eq!(config.daemon.mailbox_capacity, 8);
    let Provider::Openai { base_url, .. } = &config.models["fast"].provider else {
        panic!("expected openai");
    };
    assert_eq!(base_url, "http://127.0.0.1:9/v1");
}

#[test]
fn errors_in_environment_values_name_the_variable() {
    check_env(
        "[store]\nbackend = \"memory\"\n[daemon]\nworkers = 2\n",
        &[
            ("TROUPE_STORE__URL", "redis://h"),
            ("TROUPE_DAEMON__SHUTDOWN_GRACE", "soon"),
        ],
        &[
            r#"env TROUPE_STORE__URL: store.url: only used with backend = "redis""#,
            r#"env TROUPE_DAEMON__SHUTDOWN_GRACE: daemon.shutdown_grace: invalid duration "soon": write a number and a unit, e.g. "250ms", "30s", "1h30m""#,
        ],
    );
    check_env(
        "[daemon]\n",
        &[
            ("TROUPE_STORE__URLL", "redis://h"),
            ("TROUPE_DAEMON__MAILBOX_CAPACITY", "lots"),
            ("TROUPE_DAEMON__WORKERS", "2"),
        ],
        &[
            r#"env TROUPE_STORE__URLL: store.urll: unknown key "urll" (did you mean "url"?)"#,
            r#"env TROUPE_DAEMON__MAILBOX_CAPACITY: daemon.mailbox_capacity: invalid type: string "lots", expected usize"#,
        ],
    );
    check_env(
        "[[workflows.w.steps]]\nname = \"x\"\n",
        &[("TROUPE_WORKFLOWS__W__STEPS__NAME", "y"), ("TROUPE_DAEMON____X", "1")],
        &[
            r#"env TROUPE_DAEMON____X: empty key segment: separate keys with a single "__""#,
            "env TROUPE_WORKFLOWS__W__STEPS__NAME: workflows.w.steps.name: cannot set: workflows.w.steps is not a table",
        ],
    );
    // A file error under an overridden key still points into the file when the key is not
    // itself overridden.
    check_env(
        &format!("{MODEL}[agents.a]\nmodel = \"fst\"\n"),
        &[("TROUPE_AGENTS__A__MAX_STEPS", "0")],
        &[
            "env TROUPE_AGENTS__A__MAX_STEPS: agents.a.max_steps: must be greater than 0",
            r#"bad.toml:4:9: agents.a.model: no model named "fst" (did you mean "fast"?)"#,
        ],
    );
}

#[test]
fn defaults_fill_an_empty_file() {
    let config = ok("");
    assert_eq!(config.store, StoreSettings::Memory);
    assert_eq!(config.daemon.shutdown_grace, Duration::from_secs(10));
    assert_eq!(config.daemon.passivate_after, Duration::from_secs(300));
    assert_eq!(config.daemon.mailbox_capacity, 256);
    assert_eq!(config.daemon.workers, 0);
    assert!(config
        .daemon
        .name
        .ends_with(&format!("-{}", std::process::id())));
    assert_eq!(config.ingress, crate::IngressSettings::default());
    assert_eq!(config.ingress.max_input_bytes, 65_536);
    assert_eq!(config.origin, "ok.toml");
    let named = match load_str("", "t.toml", &env(&[("HOSTNAME", "box")])) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(named.daemon.name, format!("box-{}", std::process::id()));
}

#[test]
fn embedded_config_validates() {
    let config = crate::embedded();
    assert_eq!(config.store, StoreSettings::Memory);
    assert_eq!(config.agents["assistant"].model, "scripted");
    assert!(matches!(
        config.models["scripted"].provider,
        Provider::Scripted { .. }
    ));
    assert_eq!(config.origin, "<embedded>");
}

#[test]
fn new_step_kinds_are_typed() {
    let config = ok(&format!(
        r#"{AGENTS}
[[workflows.w.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
[[workflows.w.steps]]
name = "go"
kind = "route"
on = "classify"
routes = {{ technical = "tech", general = "writer" }}
[[workflows.w.steps]]
name = "pause"
kind = "sleep"
duration = "10ms"
[[workflows.w.steps]]
name = "tech"
kind = "loop"
agent = "tech_writer"
scorers = ["writer", "classifier"]
until_score = 0.8
max_iterations = 2
input = "Draft: {{{{steps.classify.output}}}} for {{{{input}}}}"
[[workflows.w.steps]]
name = "approval"
kind = "wait_event"
event = "approved"
timeout = "1h"
[[workflows.w.steps]]
name = "child"
kind = "workflow"
workflow = "leaf"
[[workflows.leaf.steps]]
name = "only"
kind = "agent"
agent = "writer"
"#
    ));
    let steps = &config.workflows["w"].steps;
    let StepKind::Route { routes, .. } = &steps[1].kind else {
        panic!("expected a route, got {:?}", steps[1].kind);
    };
    assert_eq!(routes["technical"], RouteTarget::Step("tech".to_owned()));
    assert_eq!(routes["general"], RouteTarget::Agent("writer".to_owned()));
    assert_eq!(
        steps[2].kind,
        StepKind::Sleep {
            duration: Duration::from_millis(10)
        }
    );
    assert_eq!(
        steps[3].kind,
        StepKind::Loop {
            agent: "tech_writer".to_owned(),
            scorers: vec!["writer".to_owned(), "classifier".to_owned()],
            until_score: 0.8,
            max_iterations: 2
        }
    );
    assert_eq!(
        steps[4].kind,
        StepKind::WaitEvent {
            event: "approved".to_owned()
        }
    );
    assert_eq!(steps[4].timeout, Some(Duration::from_secs(3600)));
    assert_eq!(
        steps[5].kind,
        StepKind::Workflow {
            workflow: "leaf".to_owned()
        }
    );
}

#[test]
fn loops_need_a_bound_and_workflows_no_cycles() {
    // AGENTS is 8 lines; the workflows start on line 9.
    check(
        &format!(
            r#"{AGENTS}[[workflows.a.steps]]
name = "refine"
kind = "loop"
agent = "writer"
scorers = ["classifier"]
until_score = 1.5
[[workflows.a.steps]]
name = "call_b"
kind = "workflow"
workflow = "b"
[[workflows.b.steps]]
name = "call_a"
kind = "workflow"
workflow = "a"
[[workflows.b.steps]]
name = "missing"
kind = "workflow"
workflow = "aa"
[[workflows.b.steps]]
name = "wait"
kind = "wait_event"
[[workflows.b.steps]]
name = "nap"
kind = "sleep"
agent = "writer"
"#
        ),
        &[
            "bad.toml:9:1: workflows.a.steps[0].max_iterations: required key is missing: a loop needs max_iterations, its bound",
            r#"bad.toml:14:15: workflows.a.steps[0].until_score: must be between 0 and 1"#,
            r#"bad.toml:18:12: workflows.a.steps[1].workflow: workflows call each other in a cycle: a -> b -> a"#,
            r#"bad.toml:22:12: workflows.b.steps[0].workflow: workflows call each other in a cycle: b -> a -> b"#,
            r#"bad.toml:26:12: workflows.b.steps[1].workflow: no workflow named "aa" (did you mean "a"?)"#,
            "bad.toml:27:1: workflows.b.steps[2].event: required key is missing",
            "bad.toml:30:1: workflows.b.steps[3].duration: required key is missing",
            r#"bad.toml:33:9: workflows.b.steps[3].agent: only used with kind = "agent" or kind = "loop""#,
        ],
    );
}

#[test]
fn routes_jump_forward_templates_name_earlier_steps_and_unreachable_steps_are_errors() {
    check(
        &format!(
            r#"{AGENTS}[[workflows.w.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
input = "{{{{steps.report.output}}}} {{{{stesp.x}}}}"
[[workflows.w.steps]]
name = "go"
kind = "route"
on = "classify"
routes = {{ a = "classify" }}
input = "{{{{steps.clasify}}}}"
[[workflows.v.steps]]
name = "classify"
kind = "agent"
agent = "classifier"
[[workflows.v.steps]]
name = "go"
kind = "route"
on = "classify"
routes = {{ a = "last" }}
default = "last"
[[workflows.v.steps]]
name = "skipped"
kind = "agent"
agent = "writer"
[[workflows.v.steps]]
name = "last"
kind = "agent"
agent = "writer"
"#
        ),
        &[
            r#"bad.toml:13:9: workflows.w.steps[0].input: invalid template: unknown variable `{{stesp.x}}`: use {{input}} or {{steps.NAME.output}}"#,
            r#"bad.toml:18:16: workflows.w.steps[1].routes.a: step "classify" does not come after this step; a route only jumps forward (use kind = "loop" to repeat)"#,
            r#"bad.toml:19:9: workflows.w.steps[1].input: template uses no earlier step named "clasify" (did you mean "classify"?)"#,
            r#"bad.toml:31:8: workflows.v.steps[2].name: step "skipped" is unreachable: no step falls through or routes to it"#,
        ],
    );
}

/// `[section]\nkey = value\n` is refused with `message` at the value (line 2).
fn refused(section: &str, key: &str, value: &str, message: &str) {
    let column = key.len() + 4;
    let path = section.trim_matches(['[', ']']);
    check(
        &format!("{section}\n{key} = {value}\n"),
        &[&format!("bad.toml:2:{column}: {path}.{key}: {message}")],
    );
}

#[test]
fn ingress_key_bounds_have_defaults_and_consumer_expiry_exceeds_claim_idle() {
    let config = ok("");
    let day = Duration::from_secs(24 * 60 * 60);
    assert_eq!(config.ingress.reply_retention, day);
    assert_eq!(config.ingress.consumer_expiry, Duration::from_secs(60 * 60));
    assert_eq!(config.ingress.abandoned_group_after, day);
    let config = ok(r#"
[ingress]
claim_idle = "1s"
reply_retention = "10m"
consumer_expiry = "2s"
abandoned_group_after = "1h"
"#);
    assert_eq!(config.ingress.reply_retention, Duration::from_secs(600));
    assert_eq!(config.ingress.consumer_expiry, Duration::from_secs(2));
    assert_eq!(
        config.ingress.abandoned_group_after,
        Duration::from_secs(3600)
    );
    let message = "ingress.consumer_expiry: must be greater than ingress.claim_idle";
    for (claim_idle, expiry, shown) in [("30s", "30s", "30s"), ("2h", "1h", "2h")] {
        check(
            &format!("[ingress]\nclaim_idle = \"{claim_idle}\"\nconsumer_expiry = \"{expiry}\"\n"),
            &[&format!(
                "bad.toml:3:19: {message} ({shown}): a dead daemon's entries are claimed after \
                 claim_idle, its consumer is deleted after consumer_expiry"
            )],
        );
    }
    // A claim_idle longer than the default expiry needs a consumer_expiry of its own.
    check(
        "[ingress]\nclaim_idle = \"90m\"\n",
        &[
            "bad.toml:2:14: ingress.claim_idle: must be less than ingress.consumer_expiry \
           (1h, its default): a dead daemon's entries are claimed after claim_idle, its \
           consumer is deleted after consumer_expiry",
        ],
    );
}

#[test]
fn absurd_durations_are_refused_at_their_position() {
    let model = "[models.m]\nprovider = \"scripted\"\n";
    for (section, key, value, message) in [
        // Past the global maximum, however it is written.
        (
            "[daemon]",
            "shutdown_grace",
            "\"100000000000years\"",
            "duration \"100000000000years\" is too long: at most 10years",
        ),
        (
            "[daemon]",
            "passivate_after",
            "\"3653days\"",
            "duration \"3653days\" is too long: at most 10years",
        ),
        (
            "[ingress]",
            "claim_idle",
            "\"87700h\"",
            "duration \"87700h\" is too long: at most 10years",
        ),
        // Past what a duration can hold at all.
        (
            "[daemon]",
            "restart_window",
            "\"1000000000000years\"",
            "invalid duration \"1000000000000years\": write a number and a unit, e.g. \"250ms\", \"30s\", \"1h30m\"",
        ),
        (
            "[daemon]",
            "restart_window",
            "\"-5s\"",
            "invalid duration \"-5s\": write a number and a unit, e.g. \"250ms\", \"30s\", \"1h30m\"",
        ),
        // Zero where it must be positive.
        ("[ingress]", "block", "\"0s\"", "must be greater than 0"),
        ("[ingress]", "claim_idle", "\"0ns\"", "must be greater than 0"),
        ("[ingress]", "reply_retention", "\"0s\"", "must be greater than 0"),
        (
            "[ingress]",
            "abandoned_group_after",
            "\"0s\"",
            "must be greater than 0",
        ),
    ] {
        refused(section, key, value, message);
    }
    for (key, value, message) in [
        ("idle_timeout", "\"0s\"", "must be greater than 0"),
        (
            "max_retry_time",
            "\"20years\"",
            "duration \"20years\" is too long: at most 10years",
        ),
        (
            "initial_backoff",
            "\"99999999999999s\"",
            "duration \"99999999999999s\" is too long: at most 10years",
        ),
    ] {
        check(
            &format!("{model}{key} = {value}\n"),
            &[&format!(
                "bad.toml:3:{}: models.m.{key}: {message}",
                key.len() + 4
            )],
        );
    }
    // Exactly the maximum is accepted.
    let config = ok("[daemon]\nshutdown_grace = \"10years\"\n");
    assert_eq!(
        config.daemon.shutdown_grace,
        Duration::from_secs(315_576_000)
    );
}

#[test]
fn absurd_sizes_are_refused_at_their_position() {
    for (section, key, value, message) in [
        // Zero, negative, fractional, too large for the type, past a maximum.
        (
            "[daemon]",
            "mailbox_capacity",
            "0",
            "must be greater than 0",
        ),
        (
            "[daemon]",
            "mailbox_capacity",
            "-1",
            "invalid value: integer `-1`, expected usize",
        ),
        (
            "[ingress]",
            "max_input_bytes",
            "8.5",
            "invalid type: floating point `8.5`, expected usize",
        ),
        (
            "[ingress]",
            "max_in_flight",
            "1000000000001",
            "must be at most 1000000000000",
        ),
        ("[daemon]", "workers", "100000", "must be at most 1024"),
        ("[rag]", "dimensions", "1000000", "must be at most 65536"),
        ("[rag]", "top_k", "1000000000", "must be at most 1000"),
        (
            "[rag]",
            "max_chunk",
            "9000000000000",
            "must be at most 1000000000000",
        ),
    ] {
        refused(section, key, value, message);
    }
    refused(
        "[ingress]",
        "max_len",
        "99999999999999999999",
        "invalid type: integer `99999999999999999999` as i128, expected u64",
    );
}

#[test]
fn model_response_and_tool_call_bounds() {
    let base = "[models.m]\nprovider = \"scripted\"\n\n[agents.a]\nmodel = \"m\"\n";
    let config = ok(base);
    assert_eq!(config.models["m"].max_response_bytes, 8 * 1024 * 1024);
    assert_eq!(config.agents["a"].max_tool_calls, 16);
    assert_eq!(config.agents["a"].tool_concurrency, 8);
    let config = ok(&format!(
        "{base}max_tool_calls = 1000\ntool_concurrency = 1\n"
    ));
    assert_eq!(config.agents["a"].max_tool_calls, 1000);
    assert_eq!(config.agents["a"].tool_concurrency, 1);

    let model = |line: &str| format!("[models.m]\nprovider = \"scripted\"\n{line}\n");
    let agent = |line: &str| format!("{base}{line}\n");
    for (text, expected) in [
        (
            model("max_response_bytes = 0"),
            "bad.toml:3:22: models.m.max_response_bytes: must be greater than 0",
        ),
        (
            model("max_response_bytes = 1073741825"),
            "bad.toml:3:22: models.m.max_response_bytes: must be at most 1073741824",
        ),
        (
            model("max_response_bytes = -8"),
            "bad.toml:3:22: models.m.max_response_bytes: invalid value: integer `-8`, expected usize",
        ),
        (
            agent("max_tool_calls = 0"),
            "bad.toml:6:18: agents.a.max_tool_calls: must be greater than 0",
        ),
        (
            agent("max_tool_calls = 5000"),
            "bad.toml:6:18: agents.a.max_tool_calls: must be at most 1000",
        ),
        (
            agent("tool_concurrency = 0"),
            "bad.toml:6:20: agents.a.tool_concurrency: must be greater than 0",
        ),
        (
            agent("tool_concurrency = 257"),
            "bad.toml:6:20: agents.a.tool_concurrency: must be at most 256",
        ),
    ] {
        check(&text, &[expected]);
    }
}

#[test]
fn steps_whose_call_ids_would_be_too_long_are_refused() {
    assert_eq!(crate::MAX_CALL_KEY, 92);
    // `step/agent`: 52 + 1 + 40 = 93 characters, one more than fits; under the child step
    // `child/` of another workflow, 99.
    let step = "s".repeat(52);
    let config = |agent: &str, parent: bool| {
        let mut text = format!(
            r#"
[models.m]
provider = "scripted"

[agents.{agent}]
model = "m"

[workflows.w]
[[workflows.w.steps]]
name = "{step}"
kind = "parallel"
agents = ["{agent}"]
"#
        );
        if parent {
            text.push_str(
                r#"
[workflows.parent]
[[workflows.parent.steps]]
name = "child"
kind = "workflow"
workflow = "w"
"#,
            );
        }
        text
    };
    let refusal = |at: &str, step: &str, len: usize| {
        format!(
            "bad.toml:{at}: step \"{step}\" makes call keys of {len} characters, more than 92 \
             (a call's key is part of its thread id); shorten the names of the step, its agents \
             or its child workflow's steps"
        )
    };
    check(
        &config(&"a".repeat(40), false),
        &[&refusal("9:8: workflows.w.steps[0].name", &step, 93)],
    );
    ok(&config(&"a".repeat(39), false));
    check(
        &config(&"a".repeat(39), true),
        &[&refusal(
            "15:8: workflows.parent.steps[0].name",
            "child",
            98,
        )],
    );
}
