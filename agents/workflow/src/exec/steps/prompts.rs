//! The prompts the engine writes itself (the `loop` step's), as data: a step's own prompts
//! are its `input` templates, in the config.

/// What a scorer of a `loop` step is asked; `{text}` is the text to score.
pub(super) const SCORE: &str =
    "SCORE the text below from 0 to 1; answer with the number, then why.\n\n{text}";

/// What the agent of a `loop` step is asked when a score is low; `{feedback}` is one line
/// per low score, `{text}` the text to refine.
pub(super) const REFINE: &str =
    "REFINE the text below to answer this feedback:\n{feedback}\n\nText:\n{text}";

/// `prompt` with its `{name}` placeholders replaced by `values` (a value's own braces are
/// left as they are).
pub(super) fn fill(prompt: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(prompt.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = prompt;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let named = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, *v))
        });
        match named {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_fill_their_placeholders_and_leave_the_values_braces_alone() {
        assert_eq!(
            fill(SCORE, &[("text", "a {draft}")]),
            "SCORE the text below from 0 to 1; answer with the number, then why.\n\na {draft}"
        );
        assert_eq!(
            fill(
                REFINE,
                &[("feedback", "judge (0.20): too short"), ("text", "T")]
            ),
            "REFINE the text below to answer this feedback:\njudge (0.20): too short\n\nText:\nT"
        );
        assert_eq!(fill("{unknown} {text}", &[("text", "x")]), "{unknown} x");
    }
}
