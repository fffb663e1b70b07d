//! Environment overrides: `TROUPE_STORE__URL=redis://..` sets `store.url` before validation.
//!
//! Only variables starting with `TROUPE_` and containing `__` are overrides. After the prefix,
//! `__` separates key segments, which are lowercased. A value is read as a TOML value when it is
//! one (numbers, booleans, arrays, inline tables, quoted strings) and as a plain string
//! otherwise; a TOML date is kept as a string.

/// The prefix of every override variable.
const PREFIX: &str = "TROUPE_";
/// Separates key segments in a variable name.
const SEPARATOR: &str = "__";

/// One override taken from the environment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    /// The variable's name, for diagnostics.
    pub var: String,
    /// The key path it sets, e.g. `["models", "fast", "base_url"]`.
    pub path: Vec<String>,
    /// The value it sets.
    pub value: toml::Value,
}

/// The overrides among `env`, in the order given; variables with an empty segment are returned
/// as errors (variable name, message).
pub(crate) fn overrides(env: &[(String, String)]) -> (Vec<Override>, Vec<(String, String)>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains(SEPARATOR) {
            continue;
        }
        let path: Vec<String> = rest.split(SEPARATOR).map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            errors.push((
                var.clone(),
                format!("empty key segment: separate keys with a single \"{SEPARATOR}\""),
            ));
            continue;
        }
        found.push(Override {
            var: var.clone(),
            path,
            value: parse_value(value),
        });
    }
    (found, errors)
}

/// `value` as a TOML value when it is one (other than a date), else as a string.
fn parse_value(value: &str) -> toml::Value {
    if !value.contains(['\n', '\r']) {
        if let Ok(mut table) = toml::from_str::<toml::Table>(&format!("v = {value}")) {
            if let (1, Some(parsed)) = (table.len(), table.remove("v")) {
                if !matches!(parsed, toml::Value::Datetime(_)) {
                    return parsed;
                }
            }
        }
    }
    toml::Value::String(value.to_owned())
}

/// Sets `over.path` to `over.value` in `table`, creating missing tables; fails when a key on
/// the way holds something other than a table.
pub(crate) fn apply(table: &mut toml::Table, over: &Override) -> Result<(), String> {
    let Some((last, parents)) = over.path.split_last() else {
        return Err("empty key".to_owned());
    };
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(format!(
                    "cannot set: {} is not a table",
                    over.path[..=depth].join(".")
                ))
            }
        };
    }
    current.insert(last.clone(), over.value.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selects_and_splits_variables() {
        let (found, errors) = overrides(&vars(&[
            ("PATH", "/bin"),
            ("TROUPE_CONFIG", "x.toml"),
            ("TROUPE_STORE__URL", "redis://h:6379"),
            ("TROUPE_MODELS__FAST__BASE_URL", "http://x/v1"),
            ("TROUPE_DAEMON____NAME", "x"),
        ]));
        let paths: Vec<String> = found.iter().map(|o| o.path.join(".")).collect();
        assert_eq!(paths, ["store.url", "models.fast.base_url"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "TROUPE_DAEMON____NAME");
    }

    #[test]
    fn values_parse_as_toml_when_they_can() {
        for (text, expected) in [
            ("42", toml::Value::Integer(42)),
            ("true", toml::Value::Boolean(true)),
            ("0.5", toml::Value::Float(0.5)),
            ("5s", toml::Value::String("5s".to_owned())),
            ("\"42\"", toml::Value::String("42".to_owned())),
            (
                "redis://h:1/0",
                toml::Value::String("redis://h:1/0".to_owned()),
            ),
            ("2024-01-01", toml::Value::String("2024-01-01".to_owned())),
            ("1\nx = 2", toml::Value::String("1\nx = 2".to_owned())),
        ] {
            assert_eq!(parse_value(text), expected, "{text}");
        }
        assert!(parse_value("[\"a\", \"b\"]").is_array());
    }

    #[test]
    fn apply_creates_tables_and_refuses_non_tables() {
        let mut table: toml::Table =
            toml::from_str("[store]\nbackend = \"redis\"\nx = 1").unwrap_or_default();
        let (found, _) = overrides(&vars(&[
            ("TROUPE_STORE__URL", "redis://h"),
            ("TROUPE_MODELS__FAST__MODEL", "m"),
            ("TROUPE_STORE__X__Y", "1"),
        ]));
        assert_eq!(apply(&mut table, &found[0]), Ok(()));
        assert_eq!(apply(&mut table, &found[1]), Ok(()));
        assert_eq!(
            apply(&mut table, &found[2]),
            Err("cannot set: store.x is not a table".to_owned())
        );
        assert_eq!(table["store"]["url"].as_str(), Some("redis://h"));
        assert_eq!(table["models"]["fast"]["model"].as_str(), Some("m"));
    }
}
