//! The loading pipeline: text -> raw image (with positions for shape errors) -> environment
//! overrides -> validated `Config`.

use std::path::Path;

use serde::Deserialize;

use crate::env::{self, Override};
use crate::error::{ConfigError, Diagnostic, Origin};
use crate::locate::Locator;
use crate::raw::RawConfig;
use crate::settings::Config;
use crate::suggest::closest;
use crate::validate::{validate, Ctx};

/// Origin of the built-in configuration.
const EMBEDDED_ORIGIN: &str = "<embedded>";
/// The built-in configuration: memory store, one scripted model, one agent.
const EMBEDDED: &str = include_str!("embedded.toml");

/// Loads and validates the file at `path`, applying `TROUPE_*__*` overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    load_str(&text, &path.display().to_string(), &env)
}

/// Parses and validates `text`, naming it `origin` in diagnostics (relative `script` paths are
/// resolved against `origin`'s directory), applying the `TROUPE_<SECTION>__<KEY>` overrides
/// found in `env`.
pub fn load_str(text: &str, origin: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let locator = Locator::new(text);
    let file_raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
        diagnostic: shape_diagnostic(&err, origin, &locator),
    })?;
    let (overrides, env_errors) = env::overrides(env);
    let mut diagnostics: Vec<Diagnostic> = env_errors
        .into_iter()
        .map(|(var, message)| env_diagnostic(var, String::new(), message, None))
        .collect();
    let raw = if overrides.is_empty() {
        file_raw
    } else {
        match with_overrides(text, &overrides) {
            Ok(raw) => raw,
            Err(more) => {
                diagnostics.extend(more);
                return Err(ConfigError::Invalid { diagnostics });
            }
        }
    };
    let mut ctx = Ctx::new(origin, &locator, &overrides);
    match validate(&raw, &mut ctx, env) {
        Ok(config) if diagnostics.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Invalid { diagnostics }),
        Err(more) => {
            diagnostics.extend(more);
            Err(ConfigError::Invalid { diagnostics })
        }
    }
}

/// The demo's built-in configuration: a memory store, the scripted model `scripted` and the
/// agent `assistant` using it.
pub fn embedded() -> Config {
    match load_str(EMBEDDED, EMBEDDED_ORIGIN, &[]) {
        Ok(config) => config,
        // The text is part of the binary and a unit test validates it.
        Err(err) => panic!("the embedded configuration is invalid: {err}"),
    }
}

/// The file's table with `overrides` applied, deserialized; on failure, one diagnostic per
/// override that does not fit.
fn with_overrides(text: &str, overrides: &[Override]) -> Result<RawConfig, Vec<Diagnostic>> {
    let base: toml::Table = toml::from_str(text).map_err(|err| {
        vec![env_diagnostic(
            overrides
                .iter()
                .map(|o| o.var.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
            err.message().trim().to_owned(),
            None,
        )]
    })?;
    let mut merged = base.clone();
    let mut diagnostics = Vec::new();
    for over in overrides {
        if let Err(message) = env::apply(&mut merged, over) {
            diagnostics.push(env_diagnostic(
                over.var.clone(),
                over.path.join("."),
                message,
                None,
            ));
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let err = match RawConfig::deserialize(merged) {
        Ok(raw) => return Ok(raw),
        Err(err) => err,
    };
    // Find which overrides do not fit, each on its own.
    for over in overrides {
        let mut single = base.clone();
        if env::apply(&mut single, over).is_ok() {
            if let Err(err) = RawConfig::deserialize(single) {
                let (message, suggestion) = explain(err.message());
                diagnostics.push(env_diagnostic(
                    over.var.clone(),
                    over.path.join("."),
                    message,
                    suggestion,
                ));
            }
        }
    }
    if diagnostics.is_empty() {
        let (message, suggestion) = explain(err.message());
        let vars: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
        diagnostics.push(env_diagnostic(
            vars.join(", "),
            String::new(),
            message,
            suggestion,
        ));
    }
    Err(diagnostics)
}

fn env_diagnostic(
    var: String,
    key: String,
    message: String,
    suggestion: Option<String>,
) -> Diagnostic {
    Diagnostic {
        origin: Origin::Env { var },
        key,
        message,
        suggestion,
    }
}

/// A syntax or shape error of the file, with its position and key path.
fn shape_diagnostic(err: &toml::de::Error, origin: &str, locator: &Locator<'_>) -> Diagnostic {
    let (location, key) = match err.span() {
        Some(span) => (
            Some(locator.location(span.start)),
            locator.path_at(span.start).to_string(),
        ),
        None => (None, String::new()),
    };
    let (message, suggestion) = explain(err.message());
    Diagnostic {
        origin: Origin::File {
            file: origin.to_owned(),
            location,
        },
        key,
        message,
        suggestion,
    }
}

/// Rewrites serde's `unknown field `x`, expected one of `a`, `b`` into a short message and the
/// closest valid key.
fn explain(message: &str) -> (String, Option<String>) {
    let message = message.trim();
    let Some((field, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    else {
        return (message.to_owned(), None);
    };
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if field == "api_key" && valid.contains(&"api_key_env") {
        return (
            "unknown key \"api_key\": never write a key in the file, name the environment variable holding it".to_owned(),
            Some("api_key_env".to_owned()),
        );
    }
    match closest(field, valid.iter().copied()) {
        Some(suggestion) => (format!("unknown key \"{field}\""), Some(suggestion)),
        None if valid.is_empty() => (format!("unknown key \"{field}\""), None),
        None => (
            format!(
                "unknown key \"{field}\": expected {}",
                crate::validate::one_of(&valid)
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn load_reads_a_file_and_names_it_in_diagnostics() {
        let mut file = match tempfile::NamedTempFile::new() {
            Ok(file) => file,
            Err(err) => panic!("{err}"),
        };
        let written = file
            .write_all(b"[models.fast]\nprovider = \"scripted\"\n[agents.a]\nmodel = \"fst\"\n");
        assert!(written.is_ok());
        let path = file.path().to_owned();
        let err = match load(&path) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err,
        };
        assert_eq!(
            err.to_string(),
            format!(
                "{}:4:9: agents.a.model: no model named \"fst\" (did you mean \"fast\"?)",
                path.display()
            )
        );
    }

    #[test]
    fn the_example_validates() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/troupe.toml");
        let config = match load_str(
            &std::fs::read_to_string(&example)
                .unwrap_or_else(|err| panic!("{}: {err}", example.display())),
            "examples/troupe.toml",
            &[],
        ) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(config.agents.len(), 7);
        assert_eq!(config.workflows["research"].steps.len(), 3);
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let missing = Path::new("/nonexistent/troupe.toml");
        let err = load(missing).err();
        assert!(
            matches!(&err, Some(ConfigError::Io { path, .. }) if path == missing),
            "{err:?}"
        );
        assert!(err.is_some_and(|err| err.diagnostics().is_empty()));
    }

    #[test]
    fn explain_rewrites_unknown_fields() {
        assert_eq!(
            explain("unknown field `urll`, expected one of `backend`, `url`"),
            ("unknown key \"urll\"".to_owned(), Some("url".to_owned()))
        );
        assert_eq!(
            explain("unknown field `x`, expected `backend` or `url`"),
            (
                "unknown key \"x\": expected \"backend\" or \"url\"".to_owned(),
                None
            )
        );
        assert_eq!(
            explain("invalid type: integer `1`, expected a string"),
            (
                "invalid type: integer `1`, expected a string".to_owned(),
                None
            )
        );
    }
}
