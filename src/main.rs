//! The `troupe` binary: the daemon and its CLI. The only composition root: it reads the
//! config, opens the store, starts the actor tree and maps errors to exit codes.

mod demo;
mod logging;
mod serve;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => {
            logging::init(cli.log_format, "info");
            let config = match troupe_config::load(&config) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::FAILURE;
                }
            };
            report(serve::run(config))
        }
        Command::Demo => {
            logging::init(cli.log_format, "warn");
            report(demo::run())
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match troupe_config::load(path) {
        Ok(config) => {
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

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("troupe: {err:#}");
            ExitCode::FAILURE
        }
    }
}
