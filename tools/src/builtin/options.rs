//! Reading `[tools.NAME.options]`: typed getters that name the key and say what was expected,
//! and a final check that every key was known.

use std::collections::BTreeSet;

use crate::error::ToolError;

/// Reads one tool's options table; every getter removes the key it reads, and
/// [`finish`](Self::finish) refuses whatever is left.
pub(crate) struct Options<'a> {
    tool: &'a str,
    table: toml::Table,
    known: BTreeSet<&'static str>,
}

impl<'a> Options<'a> {
    /// The options of `[tools.tool]`.
    pub(crate) fn new(tool: &'a str, table: &toml::Table) -> Self {
        Options {
            tool,
            table: table.clone(),
            known: BTreeSet::new(),
        }
    }

    /// A configuration error about `options.key`.
    pub(crate) fn error(&self, key: &str, message: impl std::fmt::Display) -> ToolError {
        ToolError::Config {
            tool: self.tool.to_owned(),
            message: format!("options.{key}: {message}"),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<toml::Value> {
        self.known.insert(key);
        self.table.remove(key)
    }

    /// A boolean, `default` when absent.
    pub(crate) fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, ToolError> {
        match self.take(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(value)) => Ok(value),
            Some(other) => Err(self.error(key, expected("true or false", &other))),
        }
    }

    /// A non-negative integer, `default` when absent.
    pub(crate) fn u64(&mut self, key: &'static str, default: u64) -> Result<u64, ToolError> {
        match self.take(key) {
            None => Ok(default),
            Some(toml::Value::Integer(value)) => u64::try_from(value)
                .map_err(|_| self.error(key, format!("must not be negative, got {value}"))),
            Some(other) => Err(self.error(key, expected("an integer", &other))),
        }
    }

    /// An array of strings, empty when absent.
    pub(crate) fn strings(&mut self, key: &'static str) -> Result<Vec<String>, ToolError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text),
                    other => Err(self.error(key, expected("an array of strings", &other))),
                })
                .collect(),
            Some(other) => Err(self.error(key, expected("an array of strings", &other))),
        }
    }

    /// Refuses keys no getter asked for, listing the valid ones.
    pub(crate) fn finish(self) -> Result<(), ToolError> {
        let Some(unknown) = self.table.keys().next() else {
            return Ok(());
        };
        let message = if self.known.is_empty() {
            format!("unknown option \"{unknown}\": this kind takes no options")
        } else {
            format!(
                "unknown option \"{unknown}\": valid options are {}",
                self.known
                    .iter()
                    .map(|key| format!("\"{key}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Err(ToolError::Config {
            tool: self.tool.to_owned(),
            message,
        })
    }
}

/// `expected an integer, got string "x"`.
fn expected(what: &str, got: &toml::Value) -> String {
    let kind = got.type_str();
    match got {
        toml::Value::String(text) => format!("expected {what}, got {kind} {text:?}"),
        toml::Value::Integer(number) => format!("expected {what}, got {kind} {number}"),
        toml::Value::Float(number) => format!("expected {what}, got {kind} {number}"),
        toml::Value::Boolean(value) => format!("expected {what}, got {kind} {value}"),
        _ => format!("expected {what}, got {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn error(result: Result<impl std::fmt::Debug, ToolError>) -> String {
        match result {
            Err(err) => err.to_string(),
            Ok(value) => panic!("expected an error, got {value:?}"),
        }
    }

    #[test]
    fn typed_getters_name_the_key() {
        let mut options = Options::new("fetch", &table("a = 1\nb = \"x\"\nc = [1]\nd = -1"));
        assert_eq!(
            error(options.bool("a", false)),
            "tools.fetch: options.a: expected true or false, got integer 1"
        );
        assert_eq!(
            error(options.u64("b", 0)),
            "tools.fetch: options.b: expected an integer, got string \"x\""
        );
        assert_eq!(
            error(options.strings("c")),
            "tools.fetch: options.c: expected an array of strings, got integer 1"
        );
        assert_eq!(
            error(options.u64("d", 0)),
            "tools.fetch: options.d: must not be negative, got -1"
        );
        assert_eq!(options.u64("absent", 7), Ok(7));
        assert_eq!(options.finish(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_valid_ones() {
        let mut options = Options::new("fetch", &table("allow = []\nmax_byte = 1"));
        assert_eq!(options.strings("allow"), Ok(vec![]));
        assert_eq!(options.u64("max_bytes", 1), Ok(1));
        assert_eq!(
            error(options.finish()),
            "tools.fetch: unknown option \"max_byte\": valid options are \"allow\", \"max_bytes\""
        );
        let options = Options::new("clock", &table("x = 1"));
        assert_eq!(
            error(options.finish()),
            "tools.clock: unknown option \"x\": this kind takes no options"
        );
    }
}
