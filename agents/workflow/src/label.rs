//! Robust parsing of what classifiers and scorers answer. Small models say "Tech.",
//! "**General**", `{"label": "technical"}` or "Score: 8/10"; these functions find the label or
//! the score in that, and say `None` when there is nothing to find (the caller then takes the
//! default branch, or counts the score as failing, and journals that it did).

/// Jaro-Winkler similarity from which a misspelt word counts as a label.
const MIN_SIMILARITY: f64 = 0.88;
/// Shortest word taken as an abbreviation of a label ("tech" for "technical").
const MIN_PREFIX: usize = 3;

/// The label of `labels` that `answer` names: the whole answer, then a label written in it
/// (the earliest), then a word that abbreviates exactly one label or extends one, then the
/// closest label to a word. Case, punctuation and `_`/`-` do not matter; a JSON object's
/// `label` field is read when the answer is one.
pub fn parse_label<'l>(answer: &str, labels: &[&'l str]) -> Option<&'l str> {
    let answer = json_field(answer, "label")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| answer.to_owned());
    let text = normalize(&answer);
    if text.is_empty() {
        return None;
    }
    let normalized: Vec<(String, &'l str)> = labels.iter().map(|l| (normalize(l), *l)).collect();
    if let Some((_, label)) = normalized.iter().find(|(n, _)| *n == text) {
        return Some(label);
    }
    let padded = format!(" {text} ");
    let earliest = normalized
        .iter()
        .filter(|(n, _)| !n.is_empty())
        .filter_map(|(n, label)| padded.find(&format!(" {n} ")).map(|at| (at, *label)))
        .min_by_key(|(at, _)| *at);
    if let Some((_, label)) = earliest {
        return Some(label);
    }
    let words: Vec<&str> = text.split(' ').collect();
    for word in &words {
        if word.len() < MIN_PREFIX {
            continue;
        }
        let matching: Vec<&'l str> = normalized
            .iter()
            .filter(|(n, _)| {
                n.starts_with(word) || (word.starts_with(n.as_str()) && n.len() >= MIN_PREFIX)
            })
            .map(|(_, label)| *label)
            .collect();
        if let [only] = matching.as_slice() {
            return Some(only);
        }
    }
    words
        .iter()
        .flat_map(|word| {
            normalized
                .iter()
                .map(move |(n, label)| (strsim::jaro_winkler(word, n), *label))
        })
        .filter(|(score, _)| *score >= MIN_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, label)| label)
}

/// The score in 0..=1 that `answer` gives: a JSON object's `score`, else the first number,
/// read as a fraction (`0.85`), a percentage (`85%`, or a bare number above 10), a mark out
/// of ten (`8/10`, or a bare number from 1 to 10) or out of a hundred (`85/100`).
/// Clamped to 0..=1; `None` without a number.
pub fn parse_score(answer: &str) -> Option<f64> {
    if let Some(score) = json_field(answer, "score").and_then(|v| v.as_f64()) {
        return Some(score.clamp(0.0, 1.0));
    }
    let (value, rest) = first_number(answer)?;
    let rest = rest.trim_start();
    let scaled = if rest.starts_with('%') {
        value / 100.0
    } else if let Some(denominator) = denominator(rest) {
        value / denominator
    } else if value <= 1.0 {
        value
    } else if value <= 10.0 {
        value / 10.0
    } else {
        value / 100.0
    };
    Some(scaled.clamp(0.0, 1.0))
}

/// The positive number after a `/` at the start of `rest` (`/10` in `8/10`).
fn denominator(rest: &str) -> Option<f64> {
    let after = rest.strip_prefix('/')?.trim_start();
    if !after.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    first_number(after).map(|(d, _)| d).filter(|d| *d > 0.0)
}

/// Lowercase words of letters and digits separated by single spaces.
fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A field of `text` when it is a JSON object (possibly inside a ```json fence).
fn json_field(text: &str, field: &str) -> Option<serde_json::Value> {
    let trimmed = text.trim();
    let start = trimmed.find('{')?;
    let end = trimmed.rfind('}')?;
    let value: serde_json::Value = serde_json::from_str(trimmed.get(start..=end)?).ok()?;
    value.get(field).cloned()
}

/// The first decimal number in `text` and what follows it.
fn first_number(text: &str) -> Option<(f64, &str)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let tail = &text[start..];
    let len = tail
        .char_indices()
        .find(|(i, c)| {
            !(c.is_ascii_digit()
                || (*c == '.' && tail[i + 1..].starts_with(|d: char| d.is_ascii_digit())))
        })
        .map_or(tail.len(), |(i, _)| i);
    let value = tail[..len].parse().ok()?;
    Some((value, &tail[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &[&str] = &["technical", "general", "billing_issue"];

    #[test]
    fn labels_are_found_in_what_small_models_answer() {
        let table: &[(&str, Option<&str>)] = &[
            ("technical", Some("technical")),
            ("Tech.", Some("technical")),
            ("TECHNICAL", Some("technical")),
            ("**General**", Some("general")),
            ("Label: general.", Some("general")),
            (
                "I think this is a general question, not technical",
                Some("general"),
            ),
            ("technically speaking", Some("technical")),
            ("Billing issue", Some("billing_issue")),
            ("billing-issue", Some("billing_issue")),
            ("genral", Some("general")),
            ("{\"label\": \"Technical\"}", Some("technical")),
            ("```json\n{\"label\": \"general\"}\n```", Some("general")),
            ("", None),
            ("I cannot tell.", None),
            ("42", None),
        ];
        for (answer, expected) in table {
            assert_eq!(parse_label(answer, LABELS), *expected, "{answer:?}");
        }
    }

    #[test]
    fn scores_are_read_as_fractions() {
        let table: &[(&str, Option<f64>)] = &[
            ("0.85", Some(0.85)),
            ("Score: 0.9.", Some(0.9)),
            ("8/10", Some(0.8)),
            ("7 / 10 overall", Some(0.7)),
            ("85%", Some(0.85)),
            ("85/100", Some(0.85)),
            ("9", Some(0.9)),
            ("75", Some(0.75)),
            ("1", Some(1.0)),
            ("{\"score\": 0.4, \"why\": \"typos\"}", Some(0.4)),
            ("{\"score\": 3}", Some(1.0)),
            ("excellent", None),
            ("", None),
        ];
        for (answer, expected) in table {
            assert_eq!(parse_score(answer), *expected, "{answer:?}");
        }
    }
}
