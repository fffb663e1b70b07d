//! Fuzz target `config`: arbitrary UTF-8 as a configuration file, through the whole loading
//! pipeline (`troupe_config::load_str`) and as a workflow step template
//! (`troupe_config::template::parse`). Lines after a line `#%env` are `KEY=VALUE` environment
//! overrides. Property: a `Config` or a `ConfigError` that can be displayed, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_config::template::{self, Part, TemplateError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once("\n#%env\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    if let Err(err) = troupe_config::load_str(file, "fuzz/troupe.toml", &env) {
        // Rendering a diagnostic slices the text at its location.
        let _ = err.to_string();
    }

    match template::parse(text) {
        Ok(parts) => {
            for part in &parts {
                if let Part::Text(literal) = part {
                    assert!(
                        !literal.contains("{{"),
                        "{{{{ left in a literal: {literal:?}"
                    );
                }
            }
            let _ = template::steps(&parts).count();
        }
        Err(TemplateError::Unclosed { at }) => {
            assert!(
                text.get(at..).is_some_and(|rest| rest.starts_with("{{")),
                "{at}"
            );
        }
        Err(TemplateError::Unknown { .. }) => {}
    }
});
