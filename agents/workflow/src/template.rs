//! Rendering of step input templates (`{{input}}`, `{{steps.NAME.output}}`,
//! `{{steps.NAME.BRANCH}}`) against a run's input and the outputs of its earlier steps.
//! Parsing is shared with config validation ([`troupe_config::template`]).

use std::collections::BTreeMap;

use troupe_config::template::{self, Part, TemplateError};

/// The output of a finished step: its text, and per branch (parallel agents, loop scorers)
/// the branch's own text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// The step's output.
    pub output: String,
    /// Branch name -> output.
    pub branches: BTreeMap<String, String>,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template does not parse (only possible for definitions not validated by the config).
    #[error("invalid template: {0}")]
    Parse(#[from] TemplateError),
    /// The template names a step that has not run (yet, or on this path).
    #[error("template uses step {step:?}, which has no output on this path")]
    NotRun {
        /// The step.
        step: String,
    },
    /// The step has no such branch.
    #[error("step {step:?} has no branch {branch:?} (branches: {known})")]
    NoBranch {
        /// The step.
        step: String,
        /// The branch asked for.
        branch: String,
        /// The branches it has, comma separated.
        known: String,
    },
}

/// Renders `text` with the run's `input` and the `outputs` of earlier steps.
pub fn render(
    text: &str,
    input: &str,
    outputs: &BTreeMap<String, StepOutput>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len() + input.len());
    for part in template::parse(text)? {
        match part {
            Part::Text(text) => out.push_str(&text),
            Part::Input => out.push_str(input),
            Part::Step { step, branch } => {
                let done = outputs
                    .get(&step)
                    .ok_or_else(|| RenderError::NotRun { step: step.clone() })?;
                match branch {
                    None => out.push_str(&done.output),
                    Some(branch) => match done.branches.get(&branch) {
                        Some(text) => out.push_str(text),
                        None => {
                            let known = done.branches.keys().cloned().collect::<Vec<_>>();
                            return Err(RenderError::NoBranch {
                                step,
                                branch,
                                known: known.join(", "),
                            });
                        }
                    },
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, RenderError>) {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "research".to_owned(),
            StepOutput {
                output: "all notes".to_owned(),
                branches: [("web".to_owned(), "web notes".to_owned())].into(),
            },
        );
        assert_eq!(
            render(text, "the question", &outputs),
            expected.map(str::to_owned),
            "{text}"
        );
    }

    #[test]
    fn renders_inputs_outputs_and_branches_and_names_what_is_missing() {
        check("Q: {{input}}", Ok("Q: the question"));
        check(
            "{{steps.research.output}} | {{steps.research}} | {{steps.research.web}}",
            Ok("all notes | all notes | web notes"),
        );
        check(
            "{{steps.report.output}}",
            Err(RenderError::NotRun {
                step: "report".to_owned(),
            }),
        );
        check(
            "{{steps.research.news}}",
            Err(RenderError::NoBranch {
                step: "research".to_owned(),
                branch: "news".to_owned(),
                known: "web".to_owned(),
            }),
        );
        check(
            "{{input",
            Err(RenderError::Parse(TemplateError::Unclosed { at: 0 })),
        );
    }
}
