//! "Did you mean ...?": the closest candidate to a misspelt name, when it is close enough.

/// Jaro-Winkler similarity below which a candidate is not worth suggesting.
const MIN_SIMILARITY: f64 = 0.8;

/// The candidate most similar to `wrong` (by Jaro-Winkler), if any is similar enough: a high
/// Jaro-Winkler score, or one edit away for names of two characters or more (Jaro-Winkler is
/// harsh on short names: "lm" for "llm").
pub(crate) fn closest<'c>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(wrong, candidate), candidate))
        .filter(|(score, candidate)| {
            *score >= MIN_SIMILARITY
                || (wrong.chars().count() >= 2 && strsim::osa_distance(wrong, candidate) <= 1)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(closest("fst", ["fast", "slow"]), Some("fast".to_owned()));
        assert_eq!(
            closest("api_key", ["provider", "api_key_env"]),
            Some("api_key_env".to_owned())
        );
        assert_eq!(closest("lm", ["llm", "gpu"]), Some("llm".to_owned()));
        assert_eq!(closest("zzz", ["fast", "slow"]), None);
        assert_eq!(closest("x", ["y"]), None);
        assert_eq!(closest("x", []), None);
    }
}
