//! Logging: tracing to stderr, human-readable or JSON; `log` records (actix) bridged in.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level`.
pub fn init(format: Format, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // `try_init` also installs the `log` -> `tracing` bridge (tracing-log feature).
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().try_init(),
    };
    if let Err(err) = installed {
        eprintln!("troupe: logging not initialised: {err}");
    }
}
