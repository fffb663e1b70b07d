//! `ConfigError` and `Diagnostic`: what is wrong with a configuration, and where.

use std::fmt;
use std::path::PathBuf;

/// A 1-based position in a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Line, counted from 1.
    pub line: usize,
    /// Column in characters, counted from 1.
    pub column: usize,
}

/// Where the offending value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file (or string), with the position when it is known.
    File {
        /// The file name as given to `load` / `load_str`.
        file: String,
        /// Line and column of the value (or of its enclosing table when the key is missing).
        location: Option<Location>,
    },
    /// An environment override such as `TROUPE_STORE__URL`.
    Env {
        /// The variable's name.
        var: String,
    },
}

/// One problem in a configuration, displayed as
/// `file:line:column: key.path: message (did you mean "x"?)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File position or environment variable the problem comes from.
    pub origin: Origin,
    /// Dotted key path such as `agents.researcher.model`; empty when unknown (syntax errors).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The closest valid name or key, when one is close enough.
    pub suggestion: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                file,
                location: Some(at),
            } => write!(f, "{file}:{}:{}: ", at.line, at.column)?,
            Origin::File {
                file,
                location: None,
            } => write!(f, "{file}: ")?,
            Origin::Env { var } => write!(f, "env {var}: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (did you mean \"{suggestion}\"?)")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not have the expected shape (unknown key, wrong type).
    /// Deserialization stops at the first such problem.
    #[error("{diagnostic}")]
    Parse {
        /// The problem, with its position.
        diagnostic: Diagnostic,
    },
    /// The file parsed but some values are invalid; every problem found is listed, in file order
    /// (environment overrides first).
    #[error("{}", Lines(diagnostics))]
    Invalid {
        /// All problems, at least one.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The diagnostics to show, one per line (empty for [`ConfigError::Io`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Parse { diagnostic } => std::slice::from_ref(diagnostic),
            ConfigError::Invalid { diagnostics } => diagnostics,
        }
    }
}

/// Displays diagnostics one per line.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}
