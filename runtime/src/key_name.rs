//! Names that become parts of store keys (groups, users, thread ids, namespaces…).

/// Whether `value` can be part of a store key: 1-128 characters, no `:` (the key separator)
/// and no white space.
pub fn is_key_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && !value.contains(':')
        && !value.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_short_and_free_of_separators() {
        assert!(is_key_name("acme-1.x"));
        assert!(!is_key_name(""));
        assert!(!is_key_name("a:b"));
        assert!(!is_key_name("a b"));
        assert!(is_key_name(&"k".repeat(128)));
        assert!(!is_key_name(&"k".repeat(129)));
    }
}
