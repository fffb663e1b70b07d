//! The `troupe` binary: the daemon and its CLI. The only composition root: it reads the
//! config, opens the store, starts the actor tree and maps errors to exit codes.

mod bench;
mod dead_letters_cmd;
mod demo;
mod http;
mod limits_cmd;
mod logging;
mod publish_cmd;
mod rag_cmd;
mod serve;
mod status_cmd;
mod tail;
mod workflow_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The daemon allocates many small, short-lived buffers per task; see `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// troupe: an actor-based multi-agent runtime.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print a summary (exit code 1 if invalid).
    Check {
        /// The TOML config file.
        config: PathBuf,
    },
    /// Run the main job on embedded defaults: memory store, no network, no API key.
    Demo,
    /// Print a thread's messages and follow its live deltas (reads the store directly).
    Tail {
        /// The thread id.
        thread: String,
        /// The thread's group.
        #[arg(long)]
        group: String,
        /// The TOML config file (for the store).
        #[arg(long, short)]
        config: PathBuf,
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
        /// Stop following after this long (e.g. `30s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_time: Option<std::time::Duration>,
    },
    /// Run the OpenAI-compatible mock model server (scripted replies, latency, faults).
    MockLlm {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// A mock config file (rules, latency, faults); built-in defaults without.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Exercise, inspect and reset rate limits (`[limits.NAME]`).
    Limits {
        #[command(subcommand)]
        command: limits_cmd::LimitsCommand,
    },
    /// Publish a task to the ingress stream, wait for its result and print it (needs a
    /// running daemon on the same Redis).
    Publish(publish_cmd::PublishArgs),
    /// Start workflow runs, show their status, send events, cancel and restart them.
    Workflow {
        #[command(subcommand)]
        command: workflow_cmd::WorkflowCommand,
    },
    /// Knowledge bases: add files, search, list and delete entries and namespaces.
    Rag {
        #[command(subcommand)]
        command: rag_cmd::RagCommand,
    },
    /// Show the ingress (length, lag, pending), results, dead letters, pools, unfinished
    /// workflow runs and the daemons seen, as the shared store tells.
    Status {
        /// The TOML config file (for the store, `[ingress]` and `[pools]`).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Load generators that print figures (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// List dead-lettered tasks with their reasons, or publish them again.
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters_cmd::DeadLettersCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guard lives until `main` returns: dropping it flushes exported spans.
    let _logging = log_level(&cli.command).map(|level| logging::init(cli.log_format, level));
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => with_config(&config, serve::run),
        Command::Demo => report(demo::run()),
        Command::Tail {
            thread,
            group,
            config,
            no_follow,
            max_time,
        } => {
            let args = tail::TailArgs {
                thread,
                group,
                follow: !no_follow,
                max_time,
            };
            with_config(&config, |config| tail::run(config, args))
        }
        Command::MockLlm { port, config } => report(mock_llm(port, config)),
        Command::Limits { command } => report(limits_cmd::run(command)),
        Command::Publish(args) => {
            let config = args.config.clone();
            with_config(&config, |config| publish_cmd::run(config, args))
        }
        Command::Workflow { command } => report(workflow_cmd::run(command)),
        Command::Rag { command } => report(rag_cmd::run(command)),
        Command::Status { config } => with_config(&config, status_cmd::run),
        Command::Bench { command } => report(bench::run(command)),
        Command::DeadLetters { command } => report(dead_letters_cmd::run(command)),
    }
}

/// The default log level of a command; `check` logs nothing.
fn log_level(command: &Command) -> Option<&'static str> {
    match command {
        Command::Check { .. } => None,
        Command::Serve { .. } | Command::MockLlm { .. } => Some("info"),
        _ => Some("warn"),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match troupe_config::load(path) {
        Ok(config) => {
            // Tool kinds and options are checked by the tools crate, which knows them.
            if let Err(err) = troupe_tools::ToolRegistry::from_config(&config.tools) {
                eprintln!("{}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            if let Err(err) = troupe_agents::rag::check_options(&config.tools) {
                eprintln!("{}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            println!("config ok: {}", path.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn mock_llm(port: u16, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => troupe_mock_llm::MockConfig::from_file(&path)?,
        None => troupe_mock_llm::MockConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eprintln!("troupe mock-llm: serving http://{addr}/v1");
    runtime.block_on(troupe_mock_llm::serve(addr, config))?;
    Ok(())
}

/// Loads the config file (printing its errors, exit code 1) and runs `f` with it.
fn with_config(
    path: &std::path::Path,
    f: impl FnOnce(troupe_config::Config) -> anyhow::Result<()>,
) -> ExitCode {
    match troupe_config::load(path) {
        Ok(config) => report(f(config)),
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("troupe: {err:#}");
            ExitCode::FAILURE
        }
    }
}
