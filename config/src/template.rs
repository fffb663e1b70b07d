//! Step input templates: text with `{{input}}` (the workflow's input) and
//! `{{steps.NAME.output}}` (an earlier step's output; `{{steps.NAME}}` is the same) or
//! `{{steps.NAME.BRANCH}}` (one branch of a parallel step, one scorer's answer of a loop).
//!
//! Parsing lives here so that the config can reject a bad template at load time; the workflow
//! engine renders the parsed parts.

use std::fmt;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// `{{input}}`.
    Input,
    /// `{{steps.NAME.output}}` (`branch: None`) or `{{steps.NAME.BRANCH}}`.
    Step {
        /// The step's name.
        step: String,
        /// A branch of a parallel step (the agent's name), if given.
        branch: Option<String>,
    },
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("unclosed `{{{{` at byte {at}")]
    Unclosed {
        /// Byte offset of the `{{`.
        at: usize,
    },
    /// A variable that is neither `input` nor `steps.NAME[.output|.BRANCH]`.
    #[error("unknown variable `{{{{{name}}}}}`: use {{{{input}}}} or {{{{steps.NAME.output}}}}")]
    Unknown {
        /// The text between the braces.
        name: String,
    },
}

/// Parses `text` into parts.
pub fn parse(text: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError::Unclosed { at: offset + open });
        };
        parts.push(variable(after[..close].trim())?);
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn variable(name: &str) -> Result<Part, TemplateError> {
    if name == "input" {
        return Ok(Part::Input);
    }
    let unknown = || TemplateError::Unknown {
        name: name.to_owned(),
    };
    let path = name.strip_prefix("steps.").ok_or_else(unknown)?;
    let mut segs = path.split('.');
    let step = segs.next().filter(|s| !s.is_empty()).ok_or_else(unknown)?;
    let branch = match (segs.next(), segs.next()) {
        (None, _) | (Some("output"), None) => None,
        (Some(branch), None) if !branch.is_empty() => Some(branch.to_owned()),
        _ => return Err(unknown()),
    };
    Ok(Part::Step {
        step: step.to_owned(),
        branch,
    })
}

/// The steps a template refers to, in order of appearance.
pub fn steps(parts: &[Part]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|p| match p {
        Part::Step { step, .. } => Some(step.as_str()),
        _ => None,
    })
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Text(text) => f.write_str(text),
            Part::Input => f.write_str("{{input}}"),
            Part::Step { step, branch: None } => write!(f, "{{{{steps.{step}.output}}}}"),
            Part::Step {
                step,
                branch: Some(b),
            } => write!(f, "{{{{steps.{step}.{b}}}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Vec<Part>, TemplateError>) {
        assert_eq!(parse(text), expected, "{text}");
    }

    #[test]
    fn parses_variables_and_rejects_mistakes() {
        let step = |s: &str, b: Option<&str>| Part::Step {
            step: s.to_owned(),
            branch: b.map(str::to_owned),
        };
        check("plain", Ok(vec![Part::Text("plain".into())]));
        check(
            "Q: {{input}} / {{ steps.a.output }}{{steps.b}}{{steps.c.web}}",
            Ok(vec![
                Part::Text("Q: ".into()),
                Part::Input,
                Part::Text(" / ".into()),
                step("a", None),
                step("b", None),
                step("c", Some("web")),
            ]),
        );
        check("x {{input", Err(TemplateError::Unclosed { at: 2 }));
        check(
            "{{inputs}}",
            Err(TemplateError::Unknown {
                name: "inputs".into(),
            }),
        );
        check(
            "{{steps.}}",
            Err(TemplateError::Unknown {
                name: "steps.".into(),
            }),
        );
        check(
            "{{steps.a.b.c}}",
            Err(TemplateError::Unknown {
                name: "steps.a.b.c".into(),
            }),
        );
    }
}
